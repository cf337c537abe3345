"""Serve a local model folder (or shapes:policy / shapes:labeler) with the test server, as a command:

    python -m tests.servers.serve_folder {model} --port {port} --served-model-name {name}

the same shape as `vllm serve`, so `models.<role>.serve.command` can start it (tests/test_served.py)."""

from __future__ import annotations

import argparse
import json

import uvicorn


def log_requests(server, path: str, model: str) -> None:
    """Append one JSON line per chat request to `path` (what the served model was asked: its model
    folder, n, seed, logprobs, whether an image came with it), written as each reply leaves, so a test
    sees which role's requests reached which server even after the server was killed."""
    written = 0

    @server.app.middleware("http")
    async def record(request, call_next):
        nonlocal written
        response = await call_next(request)
        with open(path, "a", encoding="utf-8") as out:
            for entry in server.requests[written:]:
                body = entry["body"]
                parts = [p for m in body.get("messages") or [] if isinstance(m.get("content"), list)
                         for p in m["content"]]
                out.write(json.dumps({"model": model, "status": response.status_code, "n": body.get("n"),
                                      "seed": body.get("seed"), "logprobs": bool(body.get("logprobs")),
                                      "image": any(p.get("type") == "image_url" for p in parts)}) + "\n")
        written = len(server.requests)
        return response


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--request-log", default=None, help="append one JSON line per chat request here")
    parser.add_argument("--in-process-seeds", action="store_true",
                        help="a test device, not vLLM's behaviour: answer a sampling request as the in-process "
                        "backend does for the prompt seed the client sent (OpenAIVLMServer(in_process_seeds=True))")
    args = parser.parse_args(argv)

    from rlaifv_core.backends.hf import HFBackend
    from rlaifv_core.config import ModelSpec
    from rlaifv_core.models.schemes import resolve_model_path
    from tests.servers.openai_vlm import OpenAIVLMServer

    spec = ModelSpec(name_or_path=args.model, device="cpu", dtype="float32")
    backend = HFBackend.from_spec(spec, path=resolve_model_path(args.model))
    server = OpenAIVLMServer(backend, model_name=args.served_model_name or args.model,
                             in_process_seeds=args.in_process_seeds)
    if args.request_log:
        log_requests(server, args.request_log, args.model)
    uvicorn.run(server.app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
