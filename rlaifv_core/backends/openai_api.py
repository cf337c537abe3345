"""Backend for any OpenAI-compatible server (vLLM, llama.cpp, SGLang, TGI, OpenAI itself).

    from rlaifv_core.backends.openai_api import OpenAIBackend
    spec = ModelSpec(backend="openai", name_or_path="llava-hf/llava-1.5-7b-hf",
                     base_url="http://127.0.0.1:8000/v1", api_key_env="VLLM_API_KEY")
    labeler = OpenAIBackend.from_spec(spec)
    labeler.yes_no(image, ["Is there a dog? Please answer yes or no."])

Requests go through the `openai` client with its own retries switched off; this module retries
itself, boundedly: timeouts / connection errors, 429 (`retry-after` honoured), 408, transient 5xx
and unparseable replies, at most `spec.max_retries` times with exponential backoff, then an
`EndpointError` naming the endpoint and the model. 4xx, 501 and known permanent server messages
are not retried (`openai_http.py`). Before its first request a backend from `from_spec` waits
(bounded, `ready_timeout_s`) on the server's `/health`; a request's timeout is `timeout_s` plus
`seconds_per_token` x n x max_tokens. The API key is read from the environment variable the spec *names*; it never appears in
`identity`, `repr`, `fingerprint` or an exception message.

Batches of requests run on a thread pool of `spec.max_concurrency` workers. Images travel as PNG
base64 data URLs (lossless). yes/no probabilities come from the first answer token's
`top_logprobs` (20, the API maximum), counted by the same rule as the in-process backend
(`backends/yesno.py`): a surface form outside the server's top 20 counts as 0.

User text (questions, chat messages) has the usual special tokens and role headers removed
(`user_text.COMMON_MARKERS`: the server's tokenizer is not known here). A request the server refuses
as longer than its context (HTTP 400 "maximum context length", vLLM's wording) is not retried:
`generate` and `yes_no` raise `PromptTooLong` naming those items, with the others' results.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

from PIL import Image

from .base import Backend, ChatReply, EndpointError, GenerationSettings, VisualPrompt, YesNo
from .lengths import PromptTooLong, is_context_error
from .openai_messages import image_data_url, user_message
from .openai_http import Retryable as _Retryable, is_permanent, retry_after_s as _retry_after_s, wait_ready
from .user_text import COMMON_MARKERS, neutralise
from .yesno import MassAlarm, tally

log = logging.getLogger(__name__)

#: the API's maximum number of alternatives per position
TOP_LOGPROBS = 20
#: vLLM's `--return-tokens-as-token-ids` format of a token text
_TOKEN_ID = re.compile(r"token_id:\d+")


def request_seed(seed: int, n: int) -> int:
    """The seed sent for a prompt seeded `seed` with n samples (servers seed sample j with seed + j)."""
    return (int(seed) * max(1, int(n))) % (2 ** 63)


def sampling_extras(top_k: int | None, repetition_penalty: float = 1.0) -> dict:
    """The sampling fields outside the OpenAI schema, always sent (else the server's defaults apply)."""
    return {"top_k": int(top_k) if top_k else -1, "repetition_penalty": float(repetition_penalty)}


class OpenAIBackend(Backend):
    """A model behind an OpenAI-compatible `/v1/chat/completions` endpoint."""

    #: first backoff delay (doubled per retry, up to max_backoff_s, with up to 25 % jitter)
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    #: the longest server-directed `retry-after` honoured (longer ones are capped, not obeyed)
    max_retry_after_s: float = 120.0
    #: per-request timeout = timeout_s + n x max_tokens x this (a slow decode of a long reply is no failure)
    seconds_per_token: float = 0.05
    #: the bounded wait on `/health` before the first request (from_spec only)
    ready_timeout_s: float = 300.0

    def __init__(self, client, *, model: str, base_url: str, max_retries: int = 4, max_concurrency: int = 8,
                 timeout_s: float | None = None, backoff_s: float | None = None,
                 max_backoff_s: float | None = None, sleep: Callable[[float], None] = time.sleep,
                 secret: str | None = None, ready_timeout_s: float | None = None, check_health: bool = False):
        self.client = client
        self.model = model
        self.base_url = base_url
        self.max_retries = max(0, int(max_retries))
        self.max_concurrency = max(1, int(max_concurrency))
        self.timeout_s = timeout_s
        if backoff_s is not None:
            self.backoff_s = backoff_s
        if max_backoff_s is not None:
            self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._secret = secret or None  # only to scrub it from messages; never stored elsewhere
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        if ready_timeout_s is not None:
            self.ready_timeout_s = ready_timeout_s
        self._check_health = check_health  # wait on /health once, before the first request
        self._not_ready: EndpointError | None = None
        #: counted low P(yes)+P(no) questions (logged past a share; the judge stage raises on nearly all)
        self.yes_no_alarm = MassAlarm(f"{model} at {base_url}")
        #: replies with neither word among their alternatives (the alarm fails a stage where most are)
        self.yes_no_missing = 0
        self.fingerprint = f"openai:{base_url}:{model}"
        self.identity = {
            "backend": "openai",
            "endpoint": base_url,
            "model": model,
            "served_model": None,
            "model_mismatches": [],
            "model_mismatch_count": 0,
            "max_retries": self.max_retries,
            "max_concurrency": self.max_concurrency,
            "timeout_s": timeout_s,
        }

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec, **kwargs) -> "OpenAIBackend":
        """Client for `spec.base_url`, model `spec.name_or_path`, key from `$spec.api_key_env`."""
        from openai import OpenAI

        if not spec.base_url:
            raise ValueError(f"model {spec.name_or_path!r}: backend=openai needs base_url "
                             "(e.g. http://127.0.0.1:8000/v1)")
        key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
        client = OpenAI(base_url=spec.base_url, api_key=key or "EMPTY", timeout=spec.timeout_s, max_retries=0)
        return cls(client, model=spec.name_or_path, base_url=spec.base_url, max_retries=spec.max_retries,
                   max_concurrency=spec.max_concurrency, timeout_s=spec.timeout_s, secret=key,
                   check_health=kwargs.pop("check_health", spec.ready_timeout_s > 0),
                   ready_timeout_s=kwargs.pop("ready_timeout_s", spec.ready_timeout_s), **kwargs)

    def __repr__(self) -> str:
        return f"OpenAIBackend(endpoint={self.base_url!r}, model={self.model!r})"

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        close = getattr(self.client, "close", None)
        if close is not None:
            close()

    # -- the request loop -----------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        if self._secret and self._secret in text:
            text = text.replace(self._secret, "***")
        return text

    def _where(self) -> str:
        return f"endpoint {self.base_url} (model {self.model!r})"

    def _attempt(self, kwargs: dict):
        """One request; returns a ChatCompletion or raises _Retryable / EndpointError."""
        import openai

        timeout = kwargs.get("timeout")
        try:
            response = self.client.chat.completions.create(model=self.model, **kwargs)
        except openai.APITimeoutError:
            raise _Retryable(f"timed out after {timeout or self.timeout_s} s") from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc.__context__
            detail = f": {type(cause).__name__}" if cause is not None else ""
            raise _Retryable(f"connection error{detail}") from None
        except openai.APIStatusError as exc:
            status = exc.status_code
            message = self._scrub(str(getattr(exc, "message", "") or exc))[:300]
            if status == 429:
                raise _Retryable(f"429 rate limited: {message}", _retry_after_s(exc.response.headers), status) from None
            if not is_permanent(status, message):
                if not message.strip():
                    message = "(empty body)"
                raise _Retryable(f"HTTP {status}: {message}", _retry_after_s(exc.response.headers), status) from None
            hint = ""
            if status == 404 and "does not exist" in message:
                hint = f" (the server serves {self._served_hint()})"
            if status in (401, 403):
                hint = " (the API key is read from the environment variable named by api_key_env)"
            error = EndpointError(f"{self._where()}: HTTP {status}: {message}{hint}", endpoint=self.base_url,
                                  model=self.model, attempts=1, status=status)
            error.too_long = status == 400 and is_context_error(message)
            raise error from None
        except (json.JSONDecodeError, UnicodeDecodeError, openai.APIResponseValidationError) as exc:
            raise _Retryable(f"unparseable reply ({type(exc).__name__})") from None
        if not hasattr(response, "choices") or not isinstance(getattr(response, "choices", None), list) \
                or not response.choices:
            kind = "non-JSON body" if isinstance(response, str) else "no choices"
            raise _Retryable(f"malformed reply ({kind})")
        self._note_model(getattr(response, "model", None))
        return response

    def _served_hint(self) -> str:
        try:
            return ", ".join(repr(m) for m in served_models(self)) or "no models"
        except EndpointError:
            return "models it did not list"

    def _ensure_ready(self) -> None:
        """The bounded wait on `/health` (once per backend, i.e. before a stage's first request)."""
        with self._lock:
            if self._not_ready is not None:  # every request of the stage fails the same way
                raise self._not_ready
            if not self._check_health:
                return
            self._check_health = False
            try:
                waited = wait_ready(self.base_url, self.ready_timeout_s)
            except TimeoutError as exc:
                self._not_ready = EndpointError(f"{self._where()}: {exc}", endpoint=self.base_url, model=self.model,
                                                attempts=0, retryable=True)
                raise self._not_ready from None
            if waited > 1:
                log.info("%s: ready after %.1f s", self._where(), waited)

    def _timeout(self, n: int, max_tokens: int) -> float | None:
        """The request timeout: timeout_s plus time for n x max_tokens decoded tokens."""
        if self.timeout_s is None:
            return None
        return float(self.timeout_s) + self.seconds_per_token * max(1, int(n)) * max(1, int(max_tokens))

    def _request(self, what: str, **kwargs):
        """`chat.completions.create` with bounded retries and exponential backoff."""
        self._ensure_ready()
        timeout = self._timeout(kwargs.get("n") or 1, kwargs.get("max_tokens") or 1)
        if timeout is not None:
            kwargs.setdefault("timeout", timeout)
        attempts = self.max_retries + 1
        last: _Retryable | None = None
        for attempt in range(attempts):
            try:
                return self._attempt(kwargs)
            except EndpointError as error:
                if getattr(error, "too_long", False):  # the caller makes it a per-item skip
                    return error
                raise
            except _Retryable as failure:
                last = failure
                if attempt + 1 >= attempts:
                    break
                delay = min(self.max_backoff_s, self.backoff_s * (2 ** attempt)) * (1 - 0.25 * random.random())
                if failure.wait_s is not None:
                    delay = min(max(delay, failure.wait_s), self.max_retry_after_s)
                log.warning("%s: %s failed (%s); retry %d/%d in %.2f s", self._where(), what, failure.reason,
                            attempt + 1, self.max_retries, delay)
                self._sleep(delay)
        assert last is not None
        raise EndpointError(
            f"{self._where()}: {what} failed after {attempts} attempt(s) "
            f"({self.max_retries} retries): {last.reason}",
            endpoint=self.base_url, model=self.model, attempts=attempts, status=last.status, retryable=True,
        ) from None

    def _note_model(self, served: str | None) -> None:
        if not served:
            return
        with self._lock:
            if self.identity["served_model"] is None:
                self.identity["served_model"] = served
            if served != self.model:
                self.identity["model_mismatch_count"] += 1
                if served not in self.identity["model_mismatches"]:
                    self.identity["model_mismatches"].append(served)
                    log.warning("%s: server reports model %r (requested %r)", self._where(), served, self.model)

    def _map(self, fn, items: Sequence) -> list:
        """fn over items on the shared pool (at most max_concurrency requests in flight), in order."""
        items = list(items)
        if len(items) <= 1 or self.max_concurrency == 1:
            return [fn(item) for item in items]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="openai-backend")
            pool = self._pool
        return list(pool.map(fn, items))

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s: %s", self._where(), message)
            self.identity.setdefault("notes", []).append(message)

    # -- Backend --------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[VisualPrompt], settings: GenerationSettings,
                 seeds: Sequence[int] | None = None) -> list[list[str]]:
        """settings.n answers per prompt, prompt i seeded by seeds[i] (default settings.seed + i).

        The request seed is seeds[i] x n: vLLM seeds the j-th of n samples with seed + j
        (vllm/v1/engine/parallel_sampling.py, ParentRequest), so prompt seeds s and s + 1 would share
        n - 1 sample streams; s x n .. s x n + n - 1 never overlap across prompts. Every sampling
        parameter is sent: a field left out is filled from the model's generation_config.json by vLLM
        and SGLang (`--generation-config auto`; Qwen2.5-VL's sets top_k=1, all n answers identical).
        top_k (-1 = off) and repetition_penalty (1.0) travel in `extra_body`. Beam search is not part
        of the chat API (greedy instead)."""
        if seeds is None:
            seeds = [settings.seed + i for i in range(len(prompts))]
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        if any(p.prefix for p in prompts):
            raise NotImplementedError("the chat API cannot continue an answer prefix (pairs.builder=resample needs an hf policy)")
        if settings.num_beams > 1:
            self._warn_once("beams", f"num_beams={settings.num_beams} unsupported by the chat API; greedy decoding used")
        temperature = 0.0 if settings.greedy or settings.num_beams > 1 else settings.temperature

        def one(job) -> list[str]:
            prompt, seed = job
            response = self._request(
                "generate", messages=[user_message(prompt)], n=settings.n, temperature=temperature,
                top_p=settings.top_p, max_tokens=settings.max_new_tokens, seed=request_seed(seed, settings.n),
                extra_body=sampling_extras(settings.top_k),
            )
            if isinstance(response, EndpointError):
                return response
            texts = [(choice.message.content or "").strip() for choice in
                     sorted(response.choices, key=lambda c: getattr(c, "index", 0) or 0)]
            if len(texts) != settings.n:
                raise EndpointError(f"{self._where()}: asked for n={settings.n} answers, got {len(texts)}",
                                    endpoint=self.base_url, model=self.model, attempts=1)
            return texts

        return self._fitting(self._map(one, list(zip(prompts, seeds))))

    def yes_no(self, image: Image.Image | None, questions: Sequence[str]) -> list[YesNo]:
        """One greedy one-token request per question; P(yes) and P(no) from its top 20 (backends/yesno.py)."""
        data_url = image_data_url(image) if image is not None else None

        def one(question: str) -> YesNo:
            content: list[dict] = []
            if data_url is not None:
                content.append({"type": "image_url", "image_url": {"url": data_url}})
            content.append({"type": "text", "text": neutralise(question, COMMON_MARKERS)[0]})
            response = self._request(
                "yes_no", messages=[{"role": "user", "content": content}], max_tokens=1, logprobs=True,
                top_logprobs=TOP_LOGPROBS, temperature=0.0, n=1, extra_body=sampling_extras(None),
            )
            return response if isinstance(response, EndpointError) else self._yes_no_from(response)

        results = self._fitting(self._map(one, list(questions)))
        self.yes_no_alarm.record(results)
        return results

    def _yes_no_from(self, response) -> YesNo:
        logprobs = getattr(response.choices[0], "logprobs", None)
        content = getattr(logprobs, "content", None) if logprobs is not None else None
        if not content or not getattr(content[0], "top_logprobs", None):
            raise EndpointError(
                f"{self._where()}: the reply carries no token logprobs; yes/no scoring needs a server that "
                "returns `logprobs`/`top_logprobs` for chat completions (vLLM, llama.cpp server and OpenAI do)",
                endpoint=self.base_url, model=self.model, attempts=1,
            )
        # the same rule as the in-process backend (backends/yesno.py): a token counts when its text is a
        # whole surface form ("yes", "Yes", " yes", " Yes", a word-start marker read as the space)
        alternatives = [(alt.token, math.exp(alt.logprob)) for alt in content[0].top_logprobs]
        if alternatives and all(_TOKEN_ID.fullmatch(text or "") for text, _ in alternatives):
            raise EndpointError(
                f"{self._where()}: the server returns token ids instead of token texts ('{alternatives[0][0]}'): "
                "restart it without --return-tokens-as-token-ids", endpoint=self.base_url, model=self.model,
                attempts=1)
        result = tally(alternatives)
        if not result.parts:  # neither word among the top alternatives: P(yes) = P(no) = 0, counted
            with self._lock:
                self.yes_no_missing += 1
            self._warn_once("no-mass", "a yes/no reply has neither yes nor no among its top "
                            f"{len(alternatives)} alternatives (e.g. {[t for t, _ in alternatives[:5]]}); counted "
                            "as P(yes) = P(no) = 0 (yes_no_missing); a stage where most replies are so fails")
        return result

    def answer_logprobs(self, prompts: Sequence[VisualPrompt], answers: Sequence[str]) -> list[list[float]]:
        raise NotImplementedError(
            f"{self!r}: an OpenAI-compatible chat endpoint cannot score given answers (no prompt logprobs); "
            "use an hf backend for roles that need answer log-probabilities (DPO reference, evaluation)"
        )

    def neutralises(self, text: str) -> bool:
        return neutralise(text, COMMON_MARKERS)[1]

    def _fitting(self, results: list) -> list:
        """The results, or PromptTooLong naming the items the server refused as too long (with the rest)."""
        skipped = {i: str(r) for i, r in enumerate(results) if isinstance(r, EndpointError)}
        if skipped:
            raise PromptTooLong(f"{self.model} at {self.base_url}", skipped,
                                [None if isinstance(r, EndpointError) else r for r in results])
        return results

    def chat(self, messages: list[dict], *, temperature: float = 0.0, top_p: float = 1.0,
             max_new_tokens: int = 512, seed: int = 0) -> ChatReply:
        messages = [{**m, "content": neutralise(m["content"], COMMON_MARKERS)[0]}
                    if isinstance(m.get("content"), str) else m for m in messages]
        response = self._request("chat", messages=messages, temperature=temperature, top_p=top_p,
                                 max_tokens=max_new_tokens, seed=int(seed), n=1, extra_body=sampling_extras(None))
        if isinstance(response, EndpointError):
            raise PromptTooLong(f"{self.model} at {self.base_url}", {0: str(response)})
        text = (response.choices[0].message.content or "").strip()
        return ChatReply(text=text, model=getattr(response, "model", None) or self.model)


def served_models(backend: OpenAIBackend) -> list[str]:
    """The model ids the endpoint lists under /v1/models (one request, no retries)."""
    import openai

    try:
        return [m.id for m in backend.client.models.list()]
    except openai.OpenAIError as exc:
        raise EndpointError(f"{backend._where()}: listing models failed: {type(exc).__name__}",
                            endpoint=backend.base_url, model=backend.model) from None


__all__ = ["OpenAIBackend", "EndpointError", "image_data_url", "user_message", "served_models"]
