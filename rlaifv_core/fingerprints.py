"""Identity of a local model folder, for cache keys and backend identities.

    from rlaifv_core.fingerprints import folder_fingerprint
    folder_fingerprint(Path("runs/shapes/iter-1/checkpoints/step-24"))   # '3f9c…' (16 hex digits)

A folder written by the run store carries a manifest of content hashes, and that manifest is the
identity; any other folder is identified by its files' names, sizes and modification times.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def folder_fingerprint(path: Path) -> str:
    """Identity of a local model folder: its store manifest if present, else names+sizes+mtimes."""
    manifest = path / "_manifest.json"
    if manifest.exists():
        return hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]
