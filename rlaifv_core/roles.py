"""Model roles → backends, with identity fingerprints for cache keys and a per-process cache.

    from rlaifv_core.roles import open_model, model_fingerprint
    policy = open_model(config.models.policy, checkpoint_dir)   # loaded once per process

A role is a `ModelSpec`; the policy of iteration k may instead be a checkpoint folder from the run
store. `model_fingerprint` changes exactly when the weights (or the endpoint/model) change.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from .backends.base import Backend


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


def resolve_model_path(name_or_path: str) -> str:
    """`shapes:policy` / `shapes:labeler` → the bootstrapped shapes model folder (built on first
    use); anything else is returned unchanged (hub id or local path)."""
    if name_or_path.startswith("shapes:"):
        from rlaifv_core.shapes.bootstrap import bootstrapped_model_dir

        return str(bootstrapped_model_dir(name_or_path.split(":", 1)[1]))
    return name_or_path


_LOADED: dict[str, Backend] = {}
_LOCK = threading.Lock()


def model_fingerprint(spec, checkpoint_dir: str | Path | None = None) -> str:
    if checkpoint_dir is not None:
        return folder_fingerprint(Path(checkpoint_dir))
    if spec.backend == "hf":
        path = Path(resolve_model_path(spec.name_or_path))
        if path.is_dir():
            return folder_fingerprint(path)
        return f"hf:{spec.name_or_path}@{spec.revision or 'main'}"
    if spec.backend == "openai":
        return f"openai:{spec.base_url}:{spec.name_or_path}"
    return f"{spec.backend}:{spec.name_or_path}"


def open_model(spec, checkpoint_dir: str | Path | None = None) -> Backend:
    """The backend serving `spec` (or the checkpoint folder), loaded at most once per process."""
    key = f"{spec.model_dump_json()}|{model_fingerprint(spec, checkpoint_dir)}"
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = _load(spec, checkpoint_dir)
        return _LOADED[key]


def _load(spec, checkpoint_dir) -> Backend:
    if spec.backend == "oracle":
        from .shapes.oracle import OracleLabeler

        return OracleLabeler()
    if checkpoint_dir is not None:
        from .backends.hf import HFBackend

        return HFBackend.from_spec(spec, path=checkpoint_dir)
    from .backends import load_backend

    return load_backend(spec)


def forget_models() -> None:
    """Drop every loaded backend (frees memory between stages that use different models)."""
    with _LOCK:
        _LOADED.clear()
