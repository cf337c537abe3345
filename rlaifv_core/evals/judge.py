"""The shared LLM-judge client of the benchmarks (Object HalBench, MMHal-Bench, RefoMB).

    from rlaifv_core.evals.judge import JudgeClient, JudgeRequest
    judge = JudgeClient(backend, cache_path="runs/x/judge_cache.jsonl", max_attempts=3)
    answer = judge.ask([{"role": "user", "content": prompt}], temperature=0.0,
                       max_new_tokens=512, parse=parse_rating)
    answer.value, answer.parsed, answer.raw, answer.served_model, answer.attempts

Rules (they fix the original's habits, see docs/method.md §11):
- bounded: at most `max_attempts` backend calls per question; an unparsable reply or an error
  (timeout, HTTP failure) uses up one attempt, the next attempt uses another seed;
- a reply that never parses is returned as `parsed=False, value=None` with its raw text: it is
  recorded and counted, never turned into a score;
- every reply is cached (sha256 of the judge's identity, the messages and the settings, the seed
  included) in an append-only jsonl file, so a re-run pays for nothing it already asked;
- `ask_many` runs requests on a thread pool (`max_concurrency`), results in request order;
- every answer carries the judge's identity: endpoint, requested model, the model the server
  reported, and the settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, Sequence, TypeVar

from ..backends.base import Backend

T = TypeVar("T")

# Errors that no retry can fix: raised at once instead of being recorded as a failed attempt.
_FATAL = (NotImplementedError, TypeError, KeyboardInterrupt)


@dataclass(frozen=True)
class JudgeRequest:
    messages: list[dict]
    parse: Callable[[str], Any] = lambda text: text
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 512
    seed: int = 0
    tag: Any = None  # anything the caller wants back (item id, order, repeat …)


@dataclass
class JudgeAnswer(Generic[T]):
    value: T | None
    raw: str | None  # the last reply text (None when no reply ever came back)
    parsed: bool
    served_model: str | None  # the model the server reported for the last reply
    attempts: int  # backend calls made or replayed from the cache for this question
    errors: list[str] = field(default_factory=list)  # one line per failed call
    cached: int = 0  # attempts answered from the cache
    judge: dict = field(default_factory=dict)  # endpoint, model_requested, settings
    tag: Any = None

    def record(self) -> dict:
        """A JSON-serialisable record of this answer (for result files)."""
        return {"value": self.value, "parsed": self.parsed, "raw": self.raw,
                "served_model": self.served_model, "attempts": self.attempts, "errors": self.errors,
                "cached": self.cached, "judge": self.judge}


def _identity_of(backend: Backend) -> dict:
    ident = dict(getattr(backend, "identity", None) or {})
    endpoint = ident.get("endpoint") or ident.get("base_url") or ident.get("url")
    requested = ident.get("model") or ident.get("model_requested") or ident.get("name_or_path") \
        or getattr(backend, "fingerprint", None) or type(backend).__name__
    return {"endpoint": endpoint, "model_requested": requested, "backend": ident.get("backend", type(backend).__name__)}


class JudgeCache:
    """Append-only jsonl reply cache: key → {"text", "model"}. Thread-safe; tolerant of a torn
    last line (a killed run)."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path is not None else None
        self._data: dict[str, dict] = {}
        self._lock = threading.Lock()
        if self.path is not None and self.path.exists():
            with open(self.path, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(row, dict) and "key" in row and "text" in row:
                        self._data[row["key"]] = row

    def get(self, key: str) -> dict | None:
        with self._lock:
            return self._data.get(key)

    def put(self, key: str, text: str, model: str | None) -> None:
        row = {"key": key, "text": text, "model": model, "time": time.time()}
        with self._lock:
            self._data[key] = row
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                    handle.flush()

    def __len__(self) -> int:
        return len(self._data)


class JudgeClient:
    """Bounded, cached, concurrent questions to a text-chat Backend (the LLM judge)."""

    def __init__(self, backend: Backend, cache_path: str | os.PathLike | None = None, max_attempts: int = 3,
                 max_concurrency: int = 8, retry_delay_s: float = 0.0):
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.backend = backend
        self.max_attempts = max_attempts
        self.max_concurrency = max(1, max_concurrency)
        self.retry_delay_s = retry_delay_s
        self.cache = JudgeCache(cache_path)
        self._base_identity = _identity_of(backend)
        self._model_key = getattr(backend, "fingerprint", None) or json.dumps(
            getattr(backend, "identity", None) or {}, sort_keys=True, default=str)
        self._lock = threading.Lock()
        self.calls = 0  # real backend calls
        self.cache_hits = 0
        self.served_models: set[str] = set()

    # -- identity ----------------------------------------------------------------------------------
    @property
    def identity(self) -> dict:
        """Endpoint, requested model, and every model name the server reported so far."""
        return {**self._base_identity, "served_models": sorted(self.served_models),
                "max_attempts": self.max_attempts}

    def describe(self, **settings) -> dict:
        """The identity plus the settings of one benchmark's questions (for its result record)."""
        return {**self.identity, **settings}

    # -- one question ----------------------------------------------------------------------------
    def cache_key(self, messages: Sequence[dict], temperature: float, top_p: float, max_new_tokens: int,
                  seed: int) -> str:
        blob = json.dumps({"model": self._model_key, "messages": list(messages), "temperature": temperature,
                           "top_p": top_p, "max_new_tokens": max_new_tokens, "seed": seed},
                          sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def ask(self, messages: list[dict], temperature: float = 0.0, max_new_tokens: int = 512,
            parse: Callable[[str], T | None] = lambda text: text, *, top_p: float = 1.0, seed: int = 0,
            tag: Any = None) -> JudgeAnswer[T]:
        """Ask until `parse(reply)` is not None, at most max_attempts calls (seed, seed+1, …)."""
        judge = {**self._base_identity, "temperature": temperature, "top_p": top_p,
                 "max_new_tokens": max_new_tokens}
        raw: str | None = None
        served: str | None = None
        errors: list[str] = []
        cached = 0
        for attempt in range(self.max_attempts):
            attempt_seed = seed + attempt
            key = self.cache_key(messages, temperature, top_p, max_new_tokens, attempt_seed)
            hit = self.cache.get(key)
            if hit is not None:
                text, model = hit["text"], hit.get("model")
                cached += 1
                with self._lock:
                    self.cache_hits += 1
            else:
                if attempt and self.retry_delay_s:
                    time.sleep(self.retry_delay_s)
                with self._lock:
                    self.calls += 1
                try:
                    reply = self.backend.chat(messages, temperature=temperature, top_p=top_p,
                                              max_new_tokens=max_new_tokens, seed=attempt_seed)
                except _FATAL:
                    raise
                except Exception as exc:  # timeouts, HTTP errors: a failed attempt, recorded
                    errors.append(f"attempt {attempt + 1}: {type(exc).__name__}: {exc}")
                    continue
                text, model = reply.text, reply.model
                self.cache.put(key, text, model)
            raw, served = text, model
            if model:
                with self._lock:
                    self.served_models.add(model)
            try:
                value = parse(text)
            except Exception as exc:  # a parser that raises counts as "unparsable"
                errors.append(f"attempt {attempt + 1}: parse error {type(exc).__name__}: {exc}")
                value = None
            if value is not None:
                return JudgeAnswer(value, raw, True, served, attempt + 1, errors, cached,
                                   {**judge, "served_model": served}, tag)
            if not any(e.startswith(f"attempt {attempt + 1}:") for e in errors):
                errors.append(f"attempt {attempt + 1}: unparsable reply")
        return JudgeAnswer(None, raw, False, served, self.max_attempts, errors, cached,
                           {**judge, "served_model": served}, tag)

    def ask_request(self, request: JudgeRequest) -> JudgeAnswer:
        return self.ask(request.messages, request.temperature, request.max_new_tokens, request.parse,
                        top_p=request.top_p, seed=request.seed, tag=request.tag)

    def ask_many(self, requests: Sequence[JudgeRequest], max_workers: int | None = None) -> list[JudgeAnswer]:
        """All requests on a thread pool of `max_workers` (default max_concurrency), in order."""
        requests = list(requests)
        workers = min(max_workers or self.max_concurrency, max(1, len(requests)))
        if workers <= 1:
            return [self.ask_request(r) for r in requests]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="judge") as pool:
            return list(pool.map(self.ask_request, requests))

    def stats(self) -> dict:
        return {"calls": self.calls, "cache_hits": self.cache_hits, "cached_replies": len(self.cache)}


def summarise_answers(answers: Sequence[JudgeAnswer]) -> dict:
    """Counts every benchmark reports: asked, parsed, unparsed, failed (no reply at all), attempts."""
    return {
        "asked": len(answers),
        "parsed": sum(a.parsed for a in answers),
        "unparsed": sum(not a.parsed for a in answers),
        "no_reply": sum(a.raw is None for a in answers),
        "attempts": sum(a.attempts for a in answers),
        "served_models": sorted({a.served_model for a in answers if a.served_model}),
    }
