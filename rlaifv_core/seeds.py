"""Deterministic seeds from integers, shared by every stage that draws at random.

    from rlaifv_core.seeds import mix_seed
    rng = random.Random(mix_seed(config.seed, prompt_number))
"""

from __future__ import annotations

import hashlib


def mix_seed(*parts: int) -> int:
    """Deterministic 63-bit seed from integers (the same on every machine and Python version)."""
    digest = hashlib.blake2b(",".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)
