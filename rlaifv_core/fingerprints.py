"""Content identities for cache keys: files, local model folders, hub models. Never paths or mtimes.

    from rlaifv_core.fingerprints import file_sha256, files_fingerprint, folder_fingerprint, hub_commit
    file_sha256("data/rlaifv_prompts.jsonl")          # streamed sha256; cached by (path, size, mtime)
    files_fingerprint({"source": local_files("data/rlaifv_prompts.jsonl")})   # what keys the prompts stage
    folder_fingerprint(Path("runs/shapes/iter-1/checkpoints/step-24"))   # '3f9c…' (16 hex digits)
    hub_commit("llava-hf/llava-1.5-7b-hf")            # the commit it resolves to (hub, else the local cache)

A file is identified by its content's sha256, streamed; the hash is cached in
`<cache_root>/file-hashes.sqlite` under (absolute path, size, mtime), so a 20 GB file is read once and a
file touched without a change still hashes the same (the mtime only decides whether to read it again).
A folder written by the run store carries a manifest of content hashes, and that manifest is its identity;
any other model folder is identified by its files' names and contents, where a safetensors weight file
counts as its header (every tensor's name, dtype, shape and offsets) plus a sample of every tensor's
bytes, so two machines agree on it without hashing gigabytes of weights. Hidden files and folders
(`.git`, `.cache`) are not part of a folder's identity.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import struct
import sys
from pathlib import Path

from .store import MANIFEST, cache_root

HASH_DB = "file-hashes.sqlite"
SAMPLE_BYTES = 4096  # bytes read at each sampled place of a tensor
SAMPLES_PER_TENSOR = 4  # places: start, two inner points, end


def _cache_db() -> Path:
    return cache_root() / HASH_DB


def _stream_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's content, streamed, cached by (absolute path, size, mtime_ns)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    db = _cache_db()
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(db, timeout=30) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS hashes (path TEXT, size INTEGER, mtime_ns INTEGER, sha256 TEXT,"
                         " PRIMARY KEY (path, size, mtime_ns))")
            row = conn.execute("SELECT sha256 FROM hashes WHERE path=? AND size=? AND mtime_ns=?", key).fetchone()
        if row:
            return row[0]
    except sqlite3.Error:  # a read-only or broken cache folder: hash without remembering
        return _stream_sha256(path)
    digest = _stream_sha256(path)
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            conn.execute("DELETE FROM hashes WHERE path=?", key[:1])
            conn.execute("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?)", (*key, digest))
    except sqlite3.Error:
        pass
    return digest


def files_fingerprint(paths: dict[str, list[str]]) -> str:
    """Identity of named file lists ({key: [path, …]}): each file's content hash, in order (a missing file
    counts as missing: the stage that reads it fails with the error naming it)."""
    parts = {key: [file_sha256(p) if Path(p).is_file() else "missing" for p in files]
             for key, files in sorted(paths.items())}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def local_files(source: str) -> list[str]:
    """The local files a source string names: a file → [it], a folder → its non-hidden files (sorted),
    anything else (a registered name, a hub id, a URL) → []."""
    path = Path(source)
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        return [str(p) for p in sorted(path.rglob("*"))
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)]
    return []


def safetensors_identity(path: Path) -> str:
    """sha256 of a safetensors file's header and of SAMPLES_PER_TENSOR places of every tensor's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = handle.read(length)
        digest.update(header)
        start = 8 + length
        for name, info in sorted(json.loads(header).items()):
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            size = end - begin
            for i in range(SAMPLES_PER_TENSOR):
                offset = begin + (max(size - SAMPLE_BYTES, 0) * i) // max(SAMPLES_PER_TENSOR - 1, 1)
                handle.seek(start + offset)
                digest.update(handle.read(min(SAMPLE_BYTES, size)))
    digest.update(str(path.stat().st_size).encode())
    return digest.hexdigest()


def folder_fingerprint(path: Path) -> str:
    """Identity of a local model folder: its store manifest if present, else its files' names and contents."""
    manifest = path / MANIFEST
    if manifest.exists():
        return hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = file.relative_to(path)
        if any(part.startswith(".") for part in relative.parts):
            continue
        content = safetensors_identity(file) if file.suffix == ".safetensors" else file_sha256(file)
        digest.update(f"{relative.as_posix()}:{content}\0".encode())
    return digest.hexdigest()[:16]


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def hub_commit(repo_id: str, revision: str | None = None) -> str | None:
    """The commit a hub model id (at `revision`, default main) resolves to: asked of the hub unless
    HF_HUB_OFFLINE is set, else (or when the hub cannot be reached) the local hub cache's snapshot
    that `from_pretrained` would load. None: known to neither."""
    if not _offline():
        try:
            from huggingface_hub import HfApi

            return HfApi().model_info(repo_id, revision=revision, timeout=10).sha
        except Exception:  # noqa: BLE001 - no network, a private repo without a token: the cache decides
            pass
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    return Path(found).parent.name if isinstance(found, str) else None


def hub_fingerprint(repo_id: str, revision: str | None = None) -> str:
    """`hf:<id>@<commit>`; an id that resolves nowhere keeps its revision name (loading it fails anyway)."""
    return f"hf:{repo_id}@{hub_commit(repo_id, revision) or revision or 'main'}"


def _gpu_possible() -> bool:
    """Whether this machine may have a CUDA GPU, without importing torch (NVIDIA's driver files)."""
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()


def precision_key(dtype: str) -> str:
    """The device kind and precision a DPO-section `dtype` computes in here (what training.model_setup's
    `precision` picks): `cpu/float32`, `cuda/float32+bf16-autocast`, `cuda/bfloat16` … For the reference
    log-probs' cache key. torch is imported only where a GPU may be present or it is loaded already, so a
    CPU machine's all-cache-hit run never loads it."""
    weights = "bfloat16" if dtype == "bfloat16" else "float32"
    if "torch" not in sys.modules and not _gpu_possible():
        return f"cpu/{weights}"
    import torch

    if not torch.cuda.is_available():
        return f"cpu/{weights}"
    return f"cuda/{weights}" + ("+bf16-autocast" if torch.cuda.is_bf16_supported() else "")
