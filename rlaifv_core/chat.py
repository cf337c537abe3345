"""Chat with a model: the original `RLAIFVChat` API, for any model this project can load.

    from rlaifv_core.chat import RLAIFVChat
    chat = RLAIFVChat("runs/shapes/iter-1/checkpoints/step-40")        # full checkpoint folder
    chat = RLAIFVChat("work/train/checkpoint-40", base_model="shapes:policy")   # LoRA adapter folder
    chat = RLAIFVChat("llava-hf/llava-1.5-7b-hf")                       # any HF VLM (hub id / folder)
    chat = RLAIFVChat("shapes:policy", num_beams=1)                     # the shapes world's policy
    chat = RLAIFVChat("my-vlm", backend="openai", base_url="http://127.0.0.1:8000/v1")
    print(chat.chat({"image": "scene.png", "question": "describe the image ."}))

Command line:

    python -m rlaifv_core.chat --model PATH --image IMG "describe the image ."   # one answer
    python -m rlaifv_core.chat --model PATH --image IMG     # interactive: one question per line,
                                                            # `:image PATH` switches the image,
                                                            # `exit` or end of input quits

Generation defaults are the original 7B chat's (docs/method.md §8): beam search with 3 beams, no
sampling, up to 1024 new tokens; every HF `generate` keyword can be overridden
(`RLAIFVChat(path, num_beams=1, do_sample=True, temperature=0.7, seed=0)`). Lengths are in tokens:
a question that leaves the model no room to answer is refused (`PromptTooLong`, naming the prompt's
tokens, the budget and the context): an explicit `max_new_tokens` must fit whole; the default budget
is cut to what fits (logged) while at least `MIN_ANSWER_TOKENS` remain.

A LoRA adapter folder (it holds `adapter_config.json`) is applied to its base with PEFT and merged
in memory; the base is `base_model` or the adapter config's `base_model_name_or_path` (the
original's LoRA path crashed with a NameError). This module imports no Prefect.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from .backends.base import GenerationSettings, VisualPrompt
from .backends.lengths import PromptTooLong
from .models import open_backend

log = logging.getLogger(__name__)

#: the original 7B chat's generation settings (chat.py:143-180 of the original)
DEFAULT_GENERATION: dict[str, Any] = {"num_beams": 3, "do_sample": False, "max_new_tokens": 1024}
#: the least room the default answer budget may be cut to; less is a refusal, not a 1-token answer
MIN_ANSWER_TOKENS = 16
#: ModelSpec fields RLAIFVChat/open_backend accept as keywords (everything else is generation)
_SPEC_FIELDS = ("revision", "trust_remote_code", "dtype", "device", "api_key_env", "timeout_s", "max_retries",
                "max_concurrency", "batch_size")


def load_image(image) -> Image.Image | None:
    """A path, PNG/JPEG bytes or a PIL image → an RGB PIL image (None stays None: text only)."""
    from .images import load_image_bytes, to_rgb

    if image is None or isinstance(image, Image.Image):
        return to_rgb(image) if image is not None else None
    if isinstance(image, (bytes, bytearray)):
        return load_image_bytes(bytes(image))
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"image {str(image)!r} not found")
    return load_image_bytes(path.read_bytes(), name=str(path))


class RLAIFVChat:
    """`RLAIFVChat(model).chat({"image": path_or_PIL, "question": str}) -> str`, single turn."""

    def __init__(self, model: str | os.PathLike, *, base_model: str | os.PathLike | None = None, backend: str = "hf",
                 base_url: str | None = None, **overrides):
        spec_fields = {k: overrides.pop(k) for k in list(overrides) if k in _SPEC_FIELDS}
        self.explicit_budget = "max_new_tokens" in overrides
        self.generation: dict[str, Any] = {**DEFAULT_GENERATION, **overrides}
        self.backend = open_backend(model, base_model=base_model, backend=backend, base_url=base_url, **spec_fields)
        self.model = str(model)

    def chat(self, inputs: dict) -> str:
        question = inputs.get("question")
        if not isinstance(question, str):
            raise ValueError("inputs['question'] must be a string")
        prompt = VisualPrompt(load_image(inputs.get("image")), question)
        from .backends.hf import HFBackend

        if isinstance(self.backend, HFBackend):
            return self._chat_hf(prompt)
        return self.backend.generate([prompt], self._settings())[0][0]

    # -- in-process: HF generate with the original's keywords ------------------------------------
    def _chat_hf(self, prompt: VisualPrompt) -> str:
        import torch

        backend = self.backend
        kwargs = dict(self.generation)
        seed = kwargs.pop("seed", 0)
        batch = backend.encode([backend.render(prompt.question, with_image=prompt.image is not None)],
                               [prompt.image] if prompt.image is not None else None)
        prompt_len = batch["input_ids"].shape[1]
        kwargs["max_new_tokens"] = self._fit_budget(int(kwargs.get("max_new_tokens", 1024)), prompt_len)
        if not kwargs.get("do_sample"):
            for key in ("temperature", "top_p", "top_k"):  # unused without sampling (silences HF warnings)
                kwargs.pop(key, None)
        kwargs.setdefault("pad_token_id", backend.tokenizer.pad_token_id)
        with torch.inference_mode():
            if kwargs.get("do_sample"):
                torch.manual_seed(int(seed))
            generated = backend.model.generate(**batch, **kwargs)
        return backend._decode_rows(generated[:, prompt_len:], 1, 1)[0][0]

    def _fit_budget(self, wanted: int, prompt_len: int) -> int:
        limit = self.backend.context
        if not limit or prompt_len + wanted <= limit:
            return wanted
        room = limit - prompt_len
        if self.explicit_budget or room < MIN_ANSWER_TOKENS:
            need = f"max_new_tokens {wanted}" if self.explicit_budget else f"at least {MIN_ANSWER_TOKENS} answer tokens"
            raise PromptTooLong(self.model, {0: f"prompt {prompt_len} tokens + {need} > context {limit}; "
                                             "shorten the question" + (" or lower --max-new-tokens" if self.explicit_budget
                                                                       else "")})
        log.warning("max_new_tokens %d cut to %d (context %d, prompt %d tokens)", wanted, room, limit, prompt_len)
        return room

    # -- endpoint: the backend's settings (no beam search in the chat API) -----------------------
    def _settings(self) -> GenerationSettings:
        g = self.generation
        sample = bool(g.get("do_sample"))
        return GenerationSettings(n=1, temperature=float(g.get("temperature", 1.0)) if sample else 0.0,
                                  top_p=float(g.get("top_p", 1.0)), top_k=g.get("top_k"),
                                  max_new_tokens=int(g.get("max_new_tokens", 1024)),
                                  num_beams=int(g.get("num_beams", 1)), seed=int(g.get("seed", 0)))


# -- command line ------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rlaifv_core.chat",
                                     description="Ask a vision-language model about an image.")
    parser.add_argument("--model", required=True, help="checkpoint/LoRA folder, hub id, shapes:policy, or endpoint model")
    parser.add_argument("--image", default=None, help="image file (interactive: change with `:image PATH`)")
    parser.add_argument("--base-model", default=None, help="base of a LoRA adapter (default: its adapter config's)")
    parser.add_argument("--backend", choices=("hf", "openai"), default="hf")
    parser.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint (backend openai)")
    parser.add_argument("--api-key-env", default=None, help="environment variable holding the API key")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, choices=("auto", "float32", "bfloat16", "float16"))
    parser.add_argument("--num-beams", type=int, default=None, help="default 3")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default 1024")
    parser.add_argument("--do-sample", action="store_true", help="sample instead of beam search")
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("question", nargs="*", help="the question (none: interactive loop on stdin)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options: dict[str, Any] = {}
    for key in ("api_key_env", "device", "dtype", "num_beams", "max_new_tokens", "temperature", "top_p", "top_k", "seed"):
        value = getattr(args, key)
        if value is not None:
            options[key] = value
    if args.do_sample:
        options["do_sample"] = True
    chat = RLAIFVChat(args.model, base_model=args.base_model, backend=args.backend, base_url=args.base_url, **options)
    image = args.image
    if args.question:
        try:
            print(chat.chat({"image": image, "question": " ".join(args.question)}), flush=True)
        except PromptTooLong as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            return 2
        return 0
    return interactive(chat, image, sys.stdin, sys.stdout)


def interactive(chat: RLAIFVChat, image, stdin=sys.stdin, stdout=sys.stdout) -> int:
    """One question per line until end of input or `exit`/`quit`; `:image PATH` changes the image."""
    tty = stdin.isatty()
    errors = 0
    while True:
        if tty:
            print(f"[{image or 'no image'}] > ", end="", file=sys.stderr, flush=True)
        line = stdin.readline()
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        if line in ("exit", "quit", ":exit", ":quit", ":q"):
            break
        if line.startswith(":image"):
            path = line[len(":image"):].strip()
            if not path:
                print(f"image: {image or 'none'}", file=sys.stderr, flush=True)
            elif path.lower() in ("none", "-"):
                image = None
            elif not Path(path).is_file():
                print(f"no such image: {path}", file=sys.stderr, flush=True)
            else:
                image = path
                print(f"image: {image}", file=sys.stderr, flush=True)
            continue
        try:
            print(chat.chat({"image": image, "question": line}), file=stdout, flush=True)
        except Exception as error:  # noqa: BLE001 - report and keep the session going
            errors += 1
            print(f"error: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
