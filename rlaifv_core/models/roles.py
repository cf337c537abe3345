"""Model roles → backends, with identity fingerprints for cache keys and a per-process cache.

    from rlaifv_core.models import open_model, model_fingerprint
    policy = open_model(config.models.policy, checkpoint_dir)   # loaded once per process

A role is a `ModelSpec`; the policy of iteration k may instead be a checkpoint folder from the run
store. `load_model` resolves a schemed name (`shapes:policy`) to its folder and a non-model backend
(`oracle`) through the plug-in registries, and serves hf/openai specs with `backends.load_backend`.
`model_fingerprint` changes exactly when the weights (or the endpoint/model) change.
"""

from __future__ import annotations

import threading
from pathlib import Path

from .. import plugins
from ..backends.base import Backend
from ..fingerprints import folder_fingerprint, hub_fingerprint
from .schemes import resolve_model_path

_LOADED: dict[str, Backend] = {}
_LOCK = threading.Lock()
_MODEL_BACKENDS = ("hf", "openai")


def model_fingerprint(spec, checkpoint_dir: str | Path | None = None) -> str:
    if checkpoint_dir is not None:
        return folder_fingerprint(Path(checkpoint_dir))
    if spec.backend == "hf":
        path = Path(resolve_model_path(spec.name_or_path))
        if path.is_dir():
            return folder_fingerprint(path)
        return hub_fingerprint(spec.name_or_path, spec.revision)  # the resolved commit
    if spec.backend == "openai":
        return f"openai:{spec.base_url}:{spec.name_or_path}"
    return f"{spec.backend}:{spec.name_or_path}"


def load_model(spec, checkpoint_dir: str | Path | None = None) -> Backend:
    """A fresh backend for `spec` (or for a checkpoint folder served with the spec's settings)."""
    from ..backends import load_backend
    from ..backends.hf import HFBackend

    if spec.backend not in _MODEL_BACKENDS:
        return plugins.backends.get(spec.backend)(spec)
    if checkpoint_dir is not None:
        return HFBackend.from_spec(spec, path=checkpoint_dir)
    if spec.backend == "hf":
        return HFBackend.from_spec(spec, path=resolve_model_path(spec.name_or_path))
    return load_backend(spec)


def open_model(spec, checkpoint_dir: str | Path | None = None) -> Backend:
    """The backend serving `spec` (or the checkpoint folder), loaded at most once per process."""
    key = f"{spec.model_dump_json()}|{model_fingerprint(spec, checkpoint_dir)}"
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = load_model(spec, checkpoint_dir)
        return _LOADED[key]


def forget_models() -> None:
    """Drop every loaded backend (frees memory between stages that use different models)."""
    with _LOCK:
        _LOADED.clear()
