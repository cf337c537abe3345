"""Serve a local model folder (or shapes:policy / shapes:labeler) with the test server, as a command:

    python -m tests.servers.serve_folder {model} --port {port} --served-model-name {name}

the same shape as `vllm serve`, so `models.<role>.serve.command` can start it (tests/test_served.py)."""

from __future__ import annotations

import argparse

import uvicorn


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--served-model-name", default=None)
    args = parser.parse_args(argv)

    from rlaifv_core.backends.hf import HFBackend
    from rlaifv_core.config import ModelSpec
    from rlaifv_core.models.schemes import resolve_model_path
    from tests.servers.openai_vlm import OpenAIVLMServer

    spec = ModelSpec(name_or_path=args.model, device="cpu", dtype="float32")
    backend = HFBackend.from_spec(spec, path=resolve_model_path(args.model))
    server = OpenAIVLMServer(backend, model_name=args.served_model_name or args.model)
    uvicorn.run(server.app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
