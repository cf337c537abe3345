"""Candidate sampling: n answers per (image, question) from the current policy.

    from rlaifv_core.feedback.sampling import sample_candidates
    candidates = sample_candidates(policy_backend, prompts_frame, config.sampling)

Each prompt's seed is derived from the run seed and the prompt id, and each of its n samples
from that, so a sample does not depend on batch size, shard boundaries or which worker ran it.
Padding is on the left with a proper attention mask (the original passed none).

`counts` (when given) receives `prompts`, `skipped_prompt_too_long` (a prompt whose tokens + the
answer budget exceed the policy's context: no candidates, its id in `examples`) and
`neutralised_question` (questions the backend stripped of its special tokens / turn markers).
"""

from __future__ import annotations

import hashlib
from typing import Callable

import pandas as pd

from ..backends.base import Backend, GenerationSettings
from ..backends.lengths import generate_fitting
from ..images import decode_image
from ..backends.oom import run_with_oom_backoff
from ..seeds import mix_seed

Progress = Callable[[int, int], None]


def prompt_seed(base_seed: int, prompt_id: str) -> int:
    return mix_seed(base_seed, int.from_bytes(hashlib.sha256(prompt_id.encode()).digest()[:8], "little"))


def sample_candidates(policy: Backend, prompts: pd.DataFrame, config, *, progress: Progress | None = None,
                      chunk: int = 32, counts: dict | None = None) -> pd.DataFrame:
    settings = GenerationSettings(n=config.n, temperature=config.temperature, top_p=config.top_p,
                                  top_k=config.top_k, max_new_tokens=config.max_new_tokens, seed=config.seed)
    records = prompts.to_dict("records")
    counts = {} if counts is None else counts
    for key in ("prompts", "skipped_prompt_too_long", "neutralised_question"):
        counts.setdefault(key, 0)
    counts["prompts"] += len(records)
    neutralises = getattr(policy, "neutralises", lambda _text: False)  # a Backend's; test fakes may lack it
    counts["neutralised_question"] += sum(neutralises(str(r["question"])) for r in records)
    rows = []
    for start in range(0, len(records), chunk):
        part = records[start:start + chunk]
        visual = [decode_image(r) for r in part]
        seeds = [prompt_seed(config.seed, r["prompt_id"]) for r in part]
        answers, skipped = run_with_oom_backoff(policy, lambda: generate_fitting(policy, visual, settings, seeds))
        for i, why in sorted(skipped.items()):
            counts["skipped_prompt_too_long"] += 1
            examples = counts.setdefault("examples", [])
            if len(examples) < 5:
                examples.append(f"prompt {part[i]['prompt_id']}: {why}")
        for record, samples in zip(part, answers):
            if samples is None:
                continue
            for j, answer in enumerate(samples):
                rows.append({"prompt_id": record["prompt_id"], "sample_idx": j, "answer": answer})
        if progress:
            progress(min(start + chunk, len(records)), len(records))
    return pd.DataFrame(rows, columns=["prompt_id", "sample_idx", "answer"])
