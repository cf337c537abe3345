"""Seeded sampling that does not depend on the batch: each row draws from its own counter-based noise.

    from rlaifv_core.backends.sampler import sample_tokens
    next_ids = sample_tokens(logits, settings, row_seeds, step)   # one token per row

Sample j of a prompt uses Gumbel noise derived from (its row seed, the step, the token id) by a
splitmix-style hash, so the same row seed gives the same answer whatever else shares its batch or
shard. Filtering (temperature, top-k, nucleus) is applied as transformers' warpers apply it.
"""

from __future__ import annotations

import torch

from .base import GenerationSettings

_M1 = torch.tensor(0x9E3779B97F4A7C15 - (1 << 64), dtype=torch.long)
_M2 = torch.tensor(0xBF58476D1CE4E5B9 - (1 << 64), dtype=torch.long)
_M3 = torch.tensor(0x94D049BB133111EB - (1 << 64), dtype=torch.long)


def _uniform_noise(row_seeds: torch.Tensor, step: int, vocab: int, device) -> torch.Tensor:
    """Counter-based uniforms in (0, 1): one per (row seed, step, token), batch-independent."""
    x = row_seeds.to(device)[:, None] * _M1 + (step + 1) * _M2 + torch.arange(vocab, device=device)[None, :] * _M3
    x = x ^ ((x >> 30) & ((1 << 34) - 1))
    x = x * _M2
    x = x ^ ((x >> 27) & ((1 << 37) - 1))
    x = x * _M3
    x = x ^ ((x >> 31) & ((1 << 33) - 1))
    return (((x >> 11) & ((1 << 53) - 1)).double() + 0.5) / float(1 << 53)


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float) -> torch.Tensor:
    """Temperature, top-k and nucleus filtering as transformers' warpers apply them."""
    logits = logits.float() / temperature
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        remove_sorted = cumulative <= (1 - top_p)
        remove_sorted[..., -1:] = False
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def sample_tokens(logits: torch.Tensor, settings: GenerationSettings, row_seeds: torch.Tensor, step: int) -> torch.Tensor:
    """Gumbel-max sampling with per-row deterministic noise; argmax when temperature is 0."""
    if settings.greedy:
        return logits.argmax(-1)
    filtered = filter_logits(logits, settings.temperature, settings.top_k, settings.top_p)
    gumbel = -torch.log(-torch.log(_uniform_noise(row_seeds, step, logits.shape[-1], logits.device)))
    return (filtered.double() + gumbel).argmax(-1)
