"""A small OpenAI-compatible server backed by a real (tiny, random-init) LLaVA, for tests.

    backend = tiny_vlm_backend()
    server = OpenAIVLMServer(backend, model_name="tiny-vlm", api_key="sk-test")
    base_url, stop = serve_in_thread(server.app)
    try:
        server.faults.push(Fault.status(500))          # the next request fails once
        ...  # OpenAIBackend.from_spec(ModelSpec(backend="openai", base_url=base_url, ...))
    finally:
        stop()

`/v1/chat/completions` takes the last user message (image_url parts as PNG/JPEG base64 data URLs,
text parts) and answers with `n` samples from `HFBackend.generate` (seeded by `seed`, so replies
are reproducible), or, with `logprobs` + `max_tokens=1` + temperature 0, the greedy first token and its
`top_logprobs` from the model's next-token log-softmax; with `logprobs` on a sampling request each of
the n choices carries its own tokens' raw logprobs (teacher-forced over its decoded, re-tokenized
text). Every image part counts, in order (several: the chat template renders one placeholder each);
images are converted as vLLM converts them (RGBA pasted on white, other modes `convert("RGB")`).
`/v1/models` lists the one model.

Faults are scripted by the test: `server.faults.push(...)` queues one-shot faults consumed by the
next requests in order; `server.faults.always = fault` applies one to every request.
`server.requests` records every request (headers that matter, the JSON body, arrival time).
As vLLM's server does (vllm/entrypoints/openai/serving_chat.py, serving_engine.py, protocol.py):
another model name gets 404 "The model `x` does not exist."; a sampling field the request leaves
out takes the model's generation-config default (`generation_config=` or the model's
`generation_config.to_diff_dict()`, vLLM's `--generation-config auto`); sample j of n is seeded
seed + j (vllm/v1/engine/parallel_sampling.py); logprobs are clamped at -9999.0 and alternatives are
the served tokenizer's decoded texts; `usage` counts real tokens; `/health` is 503 while
`server.ready` is False (and so are completions). `server.sampled` logs each child's effective
parameters. `OpenAIVLMServer(backend, max_model_len=64)` refuses a request whose prompt tokens + `max_tokens`
exceed 64 with vLLM's HTTP 400 ("This model's maximum context length is 64 tokens. However, you
requested …").

`OpenAIVLMServer(backend, in_process_seeds=True)` is a test device, not vLLM's behaviour: a request
seeded R with n samples is answered exactly as the in-process backend answers its prompt seed
(`_in_process_answers`), so a run through the server can be compared with an in-process run
(tests/test_served_iterate.py). The default keeps vLLM's children seeded R + j.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from rlaifv_core.backends.base import GenerationSettings, VisualPrompt
from rlaifv_core.backends.hf import HFBackend

TINY = dict(text_hidden=32, text_layers=1, vision_hidden=32, vision_layers=1, text_heads=2, vision_heads=2)


def tiny_vlm_backend(seed: int = 0, answer_bias: float = 3.0, name: str = "tiny-vlm") -> HFBackend:
    """A random-init tiny shapes-world LLaVA wrapped in HFBackend.

    A random model spreads its next-token mass almost evenly over the ~50-word vocabulary, so
    "yes"/"no" would often fall outside the API's top 20 alternatives. `answer_bias` adds a bias to
    their logits (a trained labeler's prior), so both stay in the top 20 while still varying with
    the image and question."""
    from rlaifv_core.shapes.models import ModelSize, build_model, build_processor

    processor = build_processor()
    model = build_model(processor, ModelSize(**TINY), seed=seed)
    if answer_bias:
        tokenizer = processor.tokenizer
        old = model.lm_head
        head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
        with torch.no_grad():
            head.weight.copy_(old.weight)
            head.bias.zero_()
            for word in ("yes", "no"):
                head.bias[tokenizer.convert_tokens_to_ids(word)] = answer_bias
        model.lm_head = head
    return HFBackend(model.eval(), processor, name=name, fingerprint=f"test:{name}:{seed}", is_vlm=True)


# -- faults --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fault:
    """What the server does to one request instead of (or before) answering it."""

    kind: str  # status | empty | sleep | malformed | model | no_logprobs
    status: int = 500
    message: str = ""
    headers: dict = field(default_factory=dict)
    seconds: float = 0.0
    model: str | None = None

    @classmethod
    def http(cls, status: int = 500, **headers: str) -> "Fault":
        return cls("status", status=status, headers={k.replace("_", "-"): v for k, v in headers.items()})

    @classmethod
    def permanent(cls, status: int, message: str) -> "Fault":
        """An error with a server's own message (llama.cpp's 500 "image input is not supported ...")."""
        return cls("status", status=status, message=message)

    @classmethod
    def empty(cls, status: int = 500) -> "Fault":
        """An error status with an empty body (a proxy or a crashed worker)."""
        return cls("empty", status=status)

    @classmethod
    def rate_limit(cls, retry_after: float = 1) -> "Fault":
        return cls("status", status=429, headers={"retry-after": f"{retry_after:g}"})

    @classmethod
    def sleep(cls, seconds: float) -> "Fault":
        """Answer normally, but only after `seconds` (longer than the client timeout = a timeout)."""
        return cls("sleep", seconds=seconds)

    @classmethod
    def malformed(cls) -> "Fault":
        """HTTP 200, content-type application/json, a truncated JSON body."""
        return cls("malformed")

    @classmethod
    def other_model(cls, name: str) -> "Fault":
        """Answer normally but report a different model name."""
        return cls("model", model=name)

    @classmethod
    def no_logprobs(cls) -> "Fault":
        """Answer normally but leave out logprobs (a server that does not support them)."""
        return cls("no_logprobs")


class FaultScript:
    """One-shot faults consumed in order, plus an optional fault applied to every request."""

    def __init__(self):
        self._queue: deque[Fault] = deque()
        self._lock = threading.Lock()
        self.always: Fault | None = None

    def push(self, *faults: Fault) -> None:
        with self._lock:
            self._queue.extend(faults)

    def pop(self) -> Fault | None:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        return self.always

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
        self.always = None

    def __len__(self) -> int:
        return len(self._queue)


# -- the model side ------------------------------------------------------------------------------
def decode_data_url(url: str) -> Image.Image:
    if not url.startswith("data:") or ";base64," not in url:
        raise ValueError("only base64 data URLs are accepted")
    image = Image.open(io.BytesIO(base64.b64decode(url.split(";base64,", 1)[1])))
    image.load()
    return to_rgb_as_vllm(image)


def to_rgb_as_vllm(image: Image.Image) -> Image.Image:
    """vLLM's convert_image_mode(image, "RGB") (vllm/multimodal/image.py): RGBA is pasted on white through
    its alpha (rgba_to_rgb); every other mode is `convert("RGB")`, so an LA image's alpha is dropped."""
    if image.mode == "RGB":
        return image
    if image.mode == "RGBA":
        converted = Image.new("RGB", image.size, (255, 255, 255))
        converted.paste(image, mask=image.split()[3])
        return converted
    return image.convert("RGB")


@dataclass(frozen=True)
class ServedPrompt:
    """The last user turn: its content parts in order (images as {"type": "image"}), images, texts joined."""

    parts: tuple[dict, ...]
    images: tuple[Image.Image, ...]
    question: str

    @property
    def single(self) -> VisualPrompt:
        """The turn as the in-process backends take it (at most one image, before the text)."""
        return VisualPrompt(self.images[0] if self.images else None, self.question)


def prompt_from_messages(messages: list[dict]) -> ServedPrompt:
    """The last user turn with every image part, in order (vLLM takes them all, up to --limit-mm-per-prompt)."""
    users = [m for m in messages if m.get("role") == "user"]
    if not users:
        raise ValueError("no user message")
    content = users[-1].get("content")
    if isinstance(content, str):
        return ServedPrompt(({"type": "text", "text": content},), (), content)
    parts, images, texts = [], [], []
    for part in content or []:
        if part.get("type") == "text":
            texts.append(part.get("text", ""))
            parts.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            images.append(decode_data_url(part["image_url"]["url"]))
            parts.append({"type": "image"})
    return ServedPrompt(tuple(parts), tuple(images), " ".join(texts))


class TinyVLMEngine:
    """Runs requests on an HFBackend, one at a time (the processor is not thread-safe)."""

    def __init__(self, backend: HFBackend):
        self.backend = backend
        self.lock = threading.Lock()

    def _encoded(self, prompt: ServedPrompt) -> dict:
        """The prompt's model inputs. One image: the in-process rendering (HFBackend.render); several: the
        chat template over the parts in order, one image placeholder each, as vLLM renders a request."""
        b = self.backend
        if len(prompt.images) > 1:
            text = b.processor.apply_chat_template([{"role": "user", "content": list(prompt.parts)}],
                                                   add_generation_prompt=True, tokenize=False)
            return b.encode([text], list(prompt.images))
        single = prompt.single
        text = b.render(single.question, with_image=single.image is not None)
        return b.encode([text], [single.image] if single.image is not None else None)

    @torch.inference_mode()
    def first_token_logprobs(self, prompt: ServedPrompt) -> torch.Tensor:
        with self.lock:
            logits = self.backend.model(**self._encoded(prompt)).logits[0, -1].float()
            return torch.log_softmax(logits, dim=-1)

    @torch.inference_mode()
    def answer_logprobs(self, prompt: ServedPrompt, answer_ids: list[int]) -> torch.Tensor:
        """The model's raw next-token log-softmax at each answer token (teacher-forced): [answer, vocab]."""
        with self.lock:
            batch = self._encoded(prompt)
            start = batch["input_ids"].shape[1]
            ids = torch.cat([batch["input_ids"], torch.tensor([answer_ids], dtype=torch.long)], dim=1)
            logits = self.backend.model(**{**batch, "input_ids": ids, "attention_mask": torch.ones_like(ids)}).logits[0]
            return torch.log_softmax(logits[start - 1:start - 1 + len(answer_ids)].float(), dim=-1)

    def generate(self, prompt: ServedPrompt, settings: GenerationSettings) -> list[str]:
        with self.lock:
            if len(prompt.images) <= 1:  # the backend's own sampler: the in-process answers for these seeds
                return self.backend.generate([prompt.single], settings, seeds=[settings.seed])[0]
            return self._generate_several_images(prompt, settings)

    @torch.inference_mode()
    def _generate_several_images(self, prompt: ServedPrompt, settings: GenerationSettings) -> list[str]:
        b, batch = self.backend, self._encoded(prompt)
        sampling = settings.temperature > 0
        knobs = dict(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k or 0) if sampling else {}
        torch.manual_seed(settings.seed)
        out = b.model.generate(**batch, do_sample=sampling, max_new_tokens=settings.max_new_tokens,
                               pad_token_id=b.tokenizer.pad_token_id, **knobs)
        return [b.tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip()]

    def token_text(self, token_id: int) -> str:
        return self.backend.tokenizer.decode([token_id])

    def prompt_tokens(self, prompt: ServedPrompt) -> int:
        with self.lock:
            return int(self._encoded(prompt)["attention_mask"].sum())


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error" if status < 500
                                   else "server_error", "code": status}}, status_code=status, headers=headers)


class OpenAIVLMServer:
    """The FastAPI app plus the test's handles on it (faults, request log)."""

    #: the generation-config fields vLLM turns into default sampling parameters
    DEFAULTED = ("temperature", "top_p", "top_k", "repetition_penalty", "min_p")

    def __init__(self, backend: HFBackend, *, model_name: str = "tiny-vlm", api_key: str | None = None,
                 max_model_len: int | None = None, generation_config: dict | None = None,
                 in_process_seeds: bool = False):
        self.engine = TinyVLMEngine(backend)
        self.in_process_seeds = in_process_seeds
        if generation_config is None:
            config = getattr(backend.model, "generation_config", None)
            generation_config = config.to_diff_dict() if config is not None else {}
        self.defaults = {k: v for k, v in generation_config.items() if k in self.DEFAULTED}
        self.ready = True
        self.tokens_as_ids = False  # vLLM's --return-tokens-as-token-ids: tokens come back as "token_id:N"
        self.sampled: list[dict] = []
        self.max_model_len = max_model_len
        self.model_name = model_name
        self.api_key = api_key
        self.faults = FaultScript()
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.app = self._build_app()

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="tiny OpenAI-compatible VLM (tests)")

        @app.get("/v1/models")
        async def models(request: Request):
            if not self._authorised(request):
                return _error(401, "Incorrect API key provided.")
            return {"object": "list", "data": [{"id": self.model_name, "object": "model", "created": 0,
                                                "owned_by": "tests"}]}

        @app.get("/health")
        async def health():
            return Response(status_code=200 if self.ready else 503)

        @app.post("/v1/chat/completions")
        async def chat_completions(request: Request):
            arrived = time.monotonic()
            try:
                body = await request.json()
            except ValueError:
                return _error(400, "body is not JSON")
            self.requests.append({"t": arrived, "authorized": self._authorised(request), "body": body})
            if not self._authorised(request):
                return _error(401, "Incorrect API key provided.")
            if not self.ready:
                return _error(503, "Service Unavailable")
            if body.get("model") != self.model_name:  # serving_engine._check_model
                return _error(404, f"The model `{body.get('model')}` does not exist.")
            self.in_flight += 1  # one event loop: no lock needed
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                return await self._answer(body)
            finally:
                self.in_flight -= 1

        return app

    async def _answer(self, body: dict):
        fault = self.faults.pop()
        reported = self.model_name
        drop_logprobs = False
        if fault is not None:
            if fault.kind == "status":
                return _error(fault.status, fault.message or f"scripted fault {fault.status}", headers=fault.headers)
            if fault.kind == "empty":
                return Response(content=b"", status_code=fault.status)
            if fault.kind == "sleep":
                await asyncio.sleep(fault.seconds)
            elif fault.kind == "malformed":
                return Response(content=b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"ind',
                                media_type="application/json")
            elif fault.kind == "model":
                reported = fault.model
            elif fault.kind == "no_logprobs":
                drop_logprobs = True
        try:
            choices, usage = await run_in_threadpool(self._choices, body)
        except ValueError as exc:
            return _error(400, str(exc))
        if drop_logprobs:
            for choice in choices:
                choice["logprobs"] = None
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion",
                "created": int(time.time()), "model": reported, "choices": choices,
                "usage": usage}

    def _authorised(self, request: Request) -> bool:
        return self.api_key is None or request.headers.get("authorization") == f"Bearer {self.api_key}"

    def _choices(self, body: dict) -> list[dict]:
        prompt = prompt_from_messages(body.get("messages") or [])
        n = int(body.get("n") or 1)
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 64)
        extras = {**self.defaults, **{k: body[k] for k in self.DEFAULTED if body.get(k) is not None}}
        temperature = float(extras.get("temperature", 1.0))
        used = self.engine.prompt_tokens(prompt)
        if self.max_model_len is not None:  # vLLM's check and wording (serving_engine._validate_input)
            if used + max_tokens > self.max_model_len:
                raise ValueError(f"This model's maximum context length is {self.max_model_len} tokens. However, you "
                                 f"requested {used + max_tokens} tokens ({used} in the messages, {max_tokens} in the "
                                 "completion). Please reduce the length of the messages or completion.")
        k = int(body.get("top_logprobs") or 0)
        if body.get("logprobs") and not 0 <= k <= 20:
            raise ValueError("top_logprobs must be between 0 and 20")
        if body.get("logprobs") and max_tokens == 1 and n == 1 and temperature == 0:  # the labeler's question
            logprobs = self.engine.first_token_logprobs(prompt)
            first = self._token_logprobs(logprobs, int(torch.argmax(logprobs)), k)
            return [{"index": 0, "message": {"role": "assistant", "content": first["token"]},
                     "finish_reason": "length", "logprobs": {"content": [first]}}], self._usage(used, [1])
        seed = body.get("seed")
        texts = []
        if self.in_process_seeds:  # a test device, not vLLM: the in-process backend's own answers
            texts = self._in_process_answers(body, prompt, n, seed, temperature, extras, max_tokens)
        for j in range(0 if self.in_process_seeds else n):  # vLLM fans n out into children seeded seed + j
            child = None if seed is None else int(seed) + j
            self.sampled.append({**extras, "seed": child, "temperature": temperature})
            settings = self._settings(extras, temperature, max_tokens, n=1, seed=child if child is not None else j)
            texts += self.engine.generate(prompt, settings)
        answer_ids = [self.engine.backend.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        choices = [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                    "logprobs": None} for i, text in enumerate(texts)]
        if body.get("logprobs"):  # each choice its own tokens' logprobs, as vLLM's serving_chat does for n > 1
            for choice, ids in zip(choices, answer_ids):
                rows = self.engine.answer_logprobs(prompt, ids) if ids else []
                choice["logprobs"] = {"content": [self._token_logprobs(row, i, k) for row, i in zip(rows, ids)]}
        return choices, self._usage(used, [len(ids) for ids in answer_ids])

    def _token_logprobs(self, logprobs: torch.Tensor, token_id: int, k: int) -> dict:
        """One token's logprobs entry with its top-k alternatives, as vLLM writes it: raw log-softmax clamped
        at -9999.0, tokens as the served tokenizer decodes them (or "token_id:N")."""
        text = (lambda i: f"token_id:{i}") if self.tokens_as_ids else self.engine.token_text
        entry = lambda i: {"token": text(i), "logprob": max(float(logprobs[i]), -9999.0),  # noqa: E731
                           "bytes": list(self.engine.token_text(i).encode())}
        top = torch.topk(logprobs, min(k, logprobs.shape[-1])).indices.tolist() if k else []
        return {**entry(token_id), "top_logprobs": [entry(i) for i in top]}

    def _in_process_answers(self, body: dict, prompt: ServedPrompt, n: int, seed, temperature: float, extras: dict,
                            max_tokens: int) -> list[str]:
        """`in_process_seeds`: the request's answers as the in-process backend gives them. The client sends
        R = s·n mod 2^63 for prompt seed s (backends/openai_api.request_seed); for odd n that is invertible,
        so s is recovered exactly and the n samples come from ONE `generate([prompt], n, seeds=[s])` (sample j
        seeded mix_seed(s, j), backends/hf.py), not vLLM's children seeded R + j. A text-only request (a
        splitter's or rewriter's chat, n = 1) is answered by the backend's own `chat` on the messages."""
        if len(prompt.images) > 1:
            raise ValueError("in-process seeds answer one image per prompt, as the in-process backends take it")
        if seed is None or n % 2 == 0:
            raise ValueError(f"in-process seeds need a seed and an odd n (got seed {seed}, n {n}): "
                             "R = s·n mod 2^63 loses s's top bits for even n")
        prompt_seed = int(seed) * pow(n, -1, 2 ** 63) % 2 ** 63
        self.sampled.append({**extras, "seed": prompt_seed, "temperature": temperature, "n": n})
        settings = self._settings(extras, temperature, max_tokens, n=n, seed=prompt_seed)
        with self.engine.lock:
            backend = self.engine.backend
            if not prompt.images:
                return [backend.chat(body["messages"], temperature=temperature, top_p=settings.top_p,
                                     max_new_tokens=max_tokens, seed=prompt_seed).text]
            return backend.generate([prompt.single], settings, seeds=[prompt_seed])[0]

    @staticmethod
    def _settings(extras: dict, temperature: float, max_tokens: int, *, n: int, seed: int) -> GenerationSettings:
        top_k = extras.get("top_k")
        return GenerationSettings(n=n, temperature=temperature, top_p=float(extras.get("top_p", 1.0)),
                                  top_k=None if top_k in (None, -1, 0) else int(top_k), max_new_tokens=max_tokens,
                                  seed=seed)

    @staticmethod
    def _usage(prompt_tokens: int, lengths: list[int]) -> dict:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": sum(lengths),
                "total_tokens": prompt_tokens + sum(lengths)}


# -- running it ----------------------------------------------------------------------------------
def serve_in_thread(app, host: str = "127.0.0.1", startup_timeout_s: float = 10.0,
                    port: int = 0) -> tuple[str, Callable[[], None]]:
    """Start uvicorn in a daemon thread on `port` (0: a free one; a fixed port lets a stopped endpoint
    come back at the same URL); returns (base_url ending in /v1, stop)."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="openai-vlm-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=3)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=3)

    return f"http://{host}:{port}/v1", stop


@contextlib.contextmanager
def backend_factory(base_url: str, model: str, key_env: str, **defaults):
    """make(backoff_s=0.05, **spec_overrides) -> an OpenAIBackend on a test server; all closed on exit."""
    from rlaifv_core.backends.openai_api import OpenAIBackend
    from rlaifv_core.config import ModelSpec

    made = []

    def make(backoff_s: float = 0.05, ready_timeout_s: float = 2.0, **overrides) -> OpenAIBackend:
        fields = dict(backend="openai", name_or_path=model, base_url=base_url, api_key_env=key_env, timeout_s=10.0,
                      max_retries=2, **defaults)
        fields.update(overrides)
        backend = OpenAIBackend.from_spec(ModelSpec(**fields), backoff_s=backoff_s, ready_timeout_s=ready_timeout_s)
        made.append(backend)
        return backend

    try:
        yield make
    finally:
        for backend in made:
            backend.close()
