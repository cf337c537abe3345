"""An OpenAI-compatible yes/no server that models a batching inference engine (vLLM-like), for the
labeler's throughput: how many questions per second a client gets out of the same server capacity.

    engine = BatchingEngine(capacity=64, step_s=0.2, image_prefill_s=0.05)
    base_url, stop = serve_in_thread(engine.app)      # tests/servers/openai_vlm.py
    # or in its own process (its CPU time then is not the client's):
    #   python -m tests.servers.batching_engine --port 8011 --capacity 64 --step-s 0.2
    #   GET /engine/stats, POST /engine/reset
    try:
        ...  # OpenAIBackend.from_spec(ModelSpec(backend="openai", base_url=base_url, name_or_path="engine"))
        engine.stats()   # batches, requests, largest batch, prefix-cache hits, busy seconds
    finally:
        stop()

The model (stated in every result, `engine.model()`): requests wait in one FIFO queue. Whenever the
engine is idle and a request waits, it gathers the burst: it waits while requests keep arriving
less than `gather_s` apart (at most half a step, or until `capacity` wait), then serves up to
`capacity` waiting requests together as one batch (continuous batching; a one-token yes/no request is done in one
step). A batch takes `step_s`, plus `image_prefill_s` for each distinct image in it that is not in
the prefix cache (the last `prefix_cache_images` images served, LRU: vLLM's automatic prefix
caching): a question whose image was just served, or is served in the same batch, shares its
prefix and costs nothing extra. Requests that arrive during a batch wait for the next one.

Answers are not a model's: P(yes) and P(no) are a fixed function of (image, question) (sha256), so
any client that sends the same questions gets the same verdicts, and a reply handed to the wrong
question shows. `/v1/chat/completions` takes only yes/no requests (`logprobs`, `max_tokens=1`);
anything else is a 400.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
import uuid
from collections import OrderedDict, deque

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def answer_probabilities(image_key: str, question: str) -> tuple[float, float]:
    """(P(yes), P(no)) for a question about an image: fixed by their sha256, P(yes)+P(no) in [0.8, 0.99]."""
    digest = hashlib.sha256(f"{image_key}\0{question}".encode()).digest()
    share = 0.02 + 0.96 * int.from_bytes(digest[:4], "big") / 2 ** 32
    mass = 0.8 + 0.19 * digest[4] / 255
    return mass * share, mass * (1 - share)


def _request_parts(body: dict) -> tuple[str, str]:
    """(image key, question text) of the last user message: the image by the sha256 of its data URL."""
    users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
    content = users[-1].get("content") if users else None
    if isinstance(content, str):
        return "", content
    urls = [p["image_url"]["url"] for p in content or [] if p.get("type") == "image_url"]
    text = " ".join(p.get("text", "") for p in content or [] if p.get("type") == "text")
    return hashlib.sha256("".join(urls).encode()).hexdigest()[:16] if urls else "", text


class BatchingEngine:
    """The engine model above behind FastAPI; one asyncio loop, so its counters need no lock."""

    def __init__(self, *, capacity: int = 64, step_s: float = 0.2, image_prefill_s: float = 0.05,
                 prefix_cache_images: int = 256, gather_s: float = 0.01, model_name: str = "engine"):
        self.capacity, self.step_s, self.image_prefill_s = capacity, step_s, image_prefill_s
        self.prefix_cache_images, self.gather_s, self.model_name = prefix_cache_images, gather_s, model_name
        self._queue: deque = deque()
        self._cache: OrderedDict[str, None] = OrderedDict()
        self._wake: asyncio.Event | None = None
        self._runner: asyncio.Task | None = None
        self.reset()
        self.app = self._build_app()

    def model(self) -> dict:
        """The modelled engine, as stated in results."""
        return {"capacity_requests_per_batch": self.capacity, "step_latency_s": self.step_s,
                "image_prefill_s_uncached": self.image_prefill_s, "prefix_cache_images": self.prefix_cache_images,
                "gather_s": self.gather_s}

    def reset(self) -> None:
        """Forget the counters and the prefix cache (between measured arms)."""
        self.batches: list[dict] = []
        self._cache.clear()

    def stats(self) -> dict:
        sizes = [b["size"] for b in self.batches]
        return {"batches": len(sizes), "requests": sum(sizes), "max_batch": max(sizes, default=0),
                "mean_batch": sum(sizes) / len(sizes) if sizes else 0.0,
                "uncached_images": sum(b["new_images"] for b in self.batches),
                "busy_s": sum(b["cost_s"] for b in self.batches)}

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="batching-engine model (tests, benchmarks)")

        @app.get("/engine/stats")
        async def stats():  # what a benchmark in another process reads
            return {"model": self.model(), "stats": self.stats(), "sizes": [b["size"] for b in self.batches]}

        @app.post("/engine/reset")
        async def reset():
            self.reset()
            return {"reset": True}

        @app.get("/v1/models")
        async def models():
            return {"object": "list", "data": [{"id": self.model_name, "object": "model", "created": 0,
                                                "owned_by": "tests"}]}

        @app.post("/v1/chat/completions")
        async def chat_completions(request: Request):
            body = await request.json()
            if not body.get("logprobs") or int(body.get("max_tokens") or 0) != 1:
                return JSONResponse({"error": {"message": "this engine model serves yes/no requests only "
                                               "(logprobs, max_tokens=1)", "type": "BadRequestError",
                                               "code": 400}}, status_code=400)
            image_key, question = _request_parts(body)
            done = asyncio.get_running_loop().create_future()
            self._queue.append((image_key, question, int(body.get("top_logprobs") or 0), done))
            self._ensure_running()
            self._wake.set()
            return await done

        return app

    def _ensure_running(self) -> None:
        if self._runner is None or self._runner.done():
            self._wake = asyncio.Event()
            self._runner = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await self._gather()
            batch = [self._queue.popleft() for _ in range(min(self.capacity, len(self._queue)))]
            if not self._queue:
                self._wake.clear()
            if not batch:
                continue
            new_images = {key for key, *_ in batch if key and key not in self._cache}
            for key in dict.fromkeys(key for key, *_ in batch if key):
                self._cache[key] = None
                self._cache.move_to_end(key)
            while len(self._cache) > self.prefix_cache_images:
                self._cache.popitem(last=False)
            cost = self.step_s + self.image_prefill_s * len(new_images)
            self.batches.append({"size": len(batch), "new_images": len(new_images), "cost_s": cost,
                                 "t": time.monotonic()})
            await asyncio.sleep(cost)
            for image_key, question, k, done in batch:
                if not done.done():
                    done.set_result(self._reply(image_key, question, k))

    async def _gather(self) -> None:
        """Wait while requests keep arriving (gaps under gather_s), at most half a step, or until full."""
        deadline = time.monotonic() + self.step_s / 2
        seen = len(self._queue)
        while self.gather_s and seen < self.capacity and time.monotonic() < deadline:
            await asyncio.sleep(self.gather_s)
            if len(self._queue) == seen:
                return
            seen = len(self._queue)

    def _reply(self, image_key: str, question: str, k: int) -> dict:
        p_yes, p_no = answer_probabilities(image_key, question)
        rest = max(1e-6, 1 - p_yes - p_no)
        alternatives = [("Yes", p_yes), ("No", p_no), ("Maybe", rest)]
        alternatives.sort(key=lambda a: -a[1])
        entry = lambda token, p: {"token": token, "logprob": math.log(p), "bytes": list(token.encode())}
        first = {**entry(*alternatives[0]), "top_logprobs": [entry(*a) for a in alternatives[:max(k, 1)]]}
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
                "model": self.model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": first["token"]},
                             "finish_reason": "length", "logprobs": {"content": [first]}}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1}}


def main(argv: list[str] | None = None) -> None:
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--capacity", type=int, default=64)
    parser.add_argument("--step-s", type=float, default=0.2)
    parser.add_argument("--image-prefill-s", type=float, default=0.05)
    parser.add_argument("--prefix-cache-images", type=int, default=256)
    parser.add_argument("--gather-s", type=float, default=0.01)
    args = parser.parse_args(argv)
    engine = BatchingEngine(capacity=args.capacity, step_s=args.step_s, image_prefill_s=args.image_prefill_s,
                            prefix_cache_images=args.prefix_cache_images, gather_s=args.gather_s)
    uvicorn.run(engine.app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
