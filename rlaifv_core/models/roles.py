"""Model roles → backends, with identity fingerprints for cache keys, held per stage.

    from rlaifv_core.models import holding_models, open_model, model_fingerprint
    with holding_models("sample"):                                # a stage's body (tasks.common.holds_models)
        policy = open_model(config.models.policy, checkpoint_dir)  # shared by the stage's concurrent shards
    # the last holder gone: the backend is dropped, garbage-collected and its GPU memory returned

A role is a `ModelSpec`; the policy of iteration k may instead be a checkpoint folder from the run
store. `load_model` resolves a schemed name (`shapes:policy`) to its folder and a non-model backend
(`oracle`) through the plug-in registries, and serves hf/openai specs with `backends.load_backend`.
`model_fingerprint` changes exactly when the weights (or the endpoint/model) change.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path

from .. import plugins
from ..backends import memory
from ..backends.base import Backend
from ..fingerprints import folder_fingerprint, hub_fingerprint
from .schemes import resolve_model_path

_LOADED: dict[str, Backend] = {}
_HOLDERS: dict[str, int] = {}
_LOCK = threading.Lock()
_STAGE = threading.local()
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
    """The backend serving `spec` (or the checkpoint folder), loaded at most once while held: inside
    `holding_models` it is shared with every concurrent holder and dropped when the last one ends;
    outside one (a script, a test) it stays cached until `forget_models`."""
    key = f"{spec.model_dump_json()}|{model_fingerprint(spec, checkpoint_dir)}"
    opened = getattr(_STAGE, "opened", None)
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = load_model(spec, checkpoint_dir)
        if opened is not None and key not in opened:
            opened.append(key)
            _HOLDERS[key] = _HOLDERS.get(key, 0) + 1
        return _LOADED[key]


@contextmanager
def holding_models(stage: str = "stage"):
    """A stage's hold on the models it opens: at the end each one no other stage holds is dropped,
    then `memory.release()` collects it and returns its GPU memory. Marks the stage's start and end
    in the resident-model accounting (backends/memory.py). The caller's references must be gone by
    the end (tasks.common.holds_models wraps a whole task body)."""
    previous = getattr(_STAGE, "opened", None)
    _STAGE.opened = opened = []
    memory.stage_mark(stage, "start")
    try:
        yield
    finally:
        _STAGE.opened = previous
        _let_go(opened)
        del opened
        memory.release()
        memory.stage_mark(stage, "end")


def _let_go(keys: list[str]) -> None:
    """Drop this holder's hold on each model; a model no one holds any more leaves the cache and is
    closed (an endpoint's request pool: its in-flight requests finish first)."""
    dropped = []
    with _LOCK:
        for key in keys:
            _HOLDERS[key] -= 1
            if _HOLDERS[key] <= 0:
                del _HOLDERS[key]
                dropped.append(_LOADED.pop(key, None))
    for backend in dropped:
        getattr(backend, "close", lambda: None)()


def forget_models() -> None:
    """Drop every loaded backend, held or not (tests; scripts between phases)."""
    with _LOCK:
        _LOADED.clear()
        _HOLDERS.clear()
    memory.release()
