"""Deterministic seeds from integers and strings: the one seed function every stage draws with.

    from rlaifv_core.seeds import mix_seed
    rng = random.Random(mix_seed(config.seed, prompt_number))
    request_seed = mix_seed(seed, "split", question, answer, attempt, bits=31)   # for a server's API

The value depends only on the parts (blake2b of their text), never on the process, the machine or
the Python version, so a sample or a request is the same wherever and in whatever batch it runs.
"""

from __future__ import annotations

import hashlib
import json


def mix_seed(*parts: int | str, bits: int = 63) -> int:
    """A `bits`-bit seed from integers and strings (the same on every machine and Python version)."""
    text = ",".join(json.dumps(p) if isinstance(p, str) else str(int(p)) for p in parts)
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << bits) - 1)
