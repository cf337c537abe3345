"""Prompt lengths in tokens: a prompt that leaves the model no room to answer is refused, per item.

    from rlaifv_core.backends.lengths import PromptTooLong, context_length, generate_fitting
    limit = context_length(model.config, tokenizer)     # None when neither names a real context
    answers, skipped = generate_fitting(backend, prompts, settings, seeds)   # None where skipped
    # skipped: {index: "prompt 1013 tokens + max_new_tokens 64 > context 256"}

A backend raises `PromptTooLong` (a ValueError) naming every prompt of a call that does not fit
(prompt tokens + the answer budget > the model's context): the in-process backend before any work,
an endpoint once the server has refused it (vLLM's HTTP 400 "maximum context length"), with the
answers of the other prompts in `results`. Stages turn it into counted skips
(`skipped_prompt_too_long`) with `generate_fitting`; a caller that does not is stopped by a clear
error rather than an answer cut to nothing.
"""

from __future__ import annotations

import re
from typing import Sequence

#: larger values are "no limit" sentinels (transformers' VERY_LARGE_INTEGER is 1e30)
MAX_REAL_CONTEXT = 10_000_000
#: what an OpenAI-compatible server says when a request does not fit (vLLM, OpenAI, SGLang, llama.cpp)
CONTEXT_ERROR = re.compile(r"maximum context length|context length|context_length_exceeded|exceeds the context|"
                           r"too many tokens|prompt is too long", re.IGNORECASE)

#: the reason (and count suffix: `skipped_prompt_too_long`) stages record
PROMPT_TOO_LONG = "prompt_too_long"


class PromptTooLong(ValueError):
    """Prompts that leave the model no room to answer: `skipped` maps each one's index in the call to
    why; `results` holds the other prompts' results when they were computed (None otherwise)."""

    def __init__(self, model: str, skipped: dict[int, str], results: list | None = None):
        shown = "; ".join(f"prompt {i}: {why}" for i, why in sorted(skipped.items())[:3])
        more = f" (+{len(skipped) - 3} more)" if len(skipped) > 3 else ""
        super().__init__(f"{model}: {len(skipped)} prompt(s) leave no room to answer: {shown}{more}")
        self.model, self.skipped, self.results = model, dict(skipped), results


def context_length(config, tokenizer=None) -> int | None:
    """The model's context in tokens: the smallest real value of the text config's
    `max_position_embeddings` and the tokenizer's `model_max_length` (sentinels ignored)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    values = [getattr(text, "max_position_embeddings", None), getattr(config, "max_position_embeddings", None),
              getattr(tokenizer, "model_max_length", None)]
    real = [int(v) for v in values if isinstance(v, (int, float)) and 0 < v < MAX_REAL_CONTEXT]
    return min(real) if real else None


def overflowing(lengths: Sequence[int], budget: int, limit: int | None) -> dict[int, str]:
    """{index: why} of the prompts whose length + budget exceeds limit (none when limit is None)."""
    if not limit:
        return {}
    return {i: f"prompt {n} tokens + max_new_tokens {budget} > context {limit}"
            for i, n in enumerate(lengths) if n + budget > limit}


def check_room(name: str, encode, texts: Sequence[str], images, budget: int, limit: int | None,
               batch_size: int = 16) -> None:
    """Raise PromptTooLong naming every rendered text (with its image) whose tokens + budget exceed
    limit; `encode(texts, images)` is the backend's batch encoder (images expanded to their tokens)."""
    if not limit or not texts:
        return
    shared = images is not None and images[0] is not None and all(i is images[0] for i in images)
    lengths: list[int] = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        part = None if images is None or shared else list(images[start:start + len(chunk)])
        has_image = part is not None and any(i is not None for i in part)
        lengths += encode(chunk, part if has_image else None)["attention_mask"].sum(-1).tolist()
    if shared:  # one image for every text (a labeler's questions): its tokens are counted once
        extra = int(encode([texts[0]], [images[0]])["attention_mask"].sum()) - lengths[0]
        lengths = [n + extra for n in lengths]
    skipped = overflowing(lengths, budget, limit)
    if skipped:
        raise PromptTooLong(name, skipped)


def is_context_error(message: str) -> bool:
    return bool(CONTEXT_ERROR.search(message or ""))


def generate_fitting(backend, prompts: Sequence, settings, seeds: Sequence[int] | None = None):
    """(answers per prompt, None for each skipped one; {index: why} of the skipped)."""
    seeds = list(seeds) if seeds is not None else [settings.seed + i for i in range(len(prompts))]
    try:
        return backend.generate(prompts, settings, seeds=seeds), {}
    except PromptTooLong as error:
        if error.results is not None:
            return list(error.results), error.skipped
        keep = [i for i in range(len(prompts)) if i not in error.skipped]
        answers = backend.generate([prompts[i] for i in keep], settings, seeds=[seeds[i] for i in keep]) if keep else []
        out: list = [None] * len(prompts)
        for i, answer in zip(keep, answers):
            out[i] = answer
        return out, error.skipped
