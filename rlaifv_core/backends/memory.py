"""Resident-model accounting: which models this process holds, and their parameter bytes.

    from rlaifv_core.backends import memory
    memory.track(model, "policy")          # at load; forgotten when the model is garbage-collected
    memory.resident()                       # {"policy#1": bytes, ...}: the live models
    memory.release()                        # gc + torch.cuda.empty_cache(): freed GPU memory goes back
    with memory.recording() as log:         # (stage, phase, models, bytes) at each stage start and end
        ...                                 # log.peak_bytes: the most bytes resident at once

A leaf module (torch is imported only to return CUDA memory): the backends and the training code
register every model they load, the stages mark their start and end (`stage_mark`), and a test
reads the figures (tests/test_memory.py). Liveness is the garbage collector's, not a bookkeeping
flag, so a model some cache still references counts as resident.
"""

from __future__ import annotations

import gc
import itertools
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field

_LOCK = threading.Lock()
_RESIDENT: dict[str, int] = {}
_NUMBER = itertools.count(1)
_RECORDERS: list["MemoryLog"] = []


@dataclass
class MemoryLog:
    """Snapshots taken while recording: (stage, phase, number of models, parameter bytes)."""

    marks: list[tuple[str, str, int, int]] = field(default_factory=list)
    peak_bytes: int = 0
    peak_models: dict[str, int] = field(default_factory=dict)

    def _observe(self) -> None:
        total = sum(_RESIDENT.values())
        if total > self.peak_bytes:
            self.peak_bytes, self.peak_models = total, dict(_RESIDENT)


def parameter_bytes(model) -> int:
    """Bytes of a torch module's distinct parameters and buffers."""
    seen = {}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        seen[id(tensor)] = tensor.numel() * tensor.element_size()
    return sum(seen.values())


def _forget(key: str) -> None:
    with _LOCK:
        _RESIDENT.pop(key, None)


def track(model, label: str):
    """Count `model` as resident until it is garbage-collected; returns the model."""
    key = f"{label}#{next(_NUMBER)}"
    size = parameter_bytes(model)
    with _LOCK:
        _RESIDENT[key] = size
        for recorder in _RECORDERS:
            recorder._observe()
    weakref.finalize(model, _forget, key)
    return model


def resident() -> dict[str, int]:
    with _LOCK:
        return dict(_RESIDENT)


def release() -> None:
    """Collect unreachable models now and return cached CUDA blocks to the device."""
    gc.collect()
    import sys

    torch = sys.modules.get("torch")  # never imports torch itself
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def stage_mark(stage: str, phase: str) -> None:
    """Record the resident models at a stage's `start` or `end` (a no-op unless recording)."""
    with _LOCK:
        if not _RECORDERS:
            return
        mark = (stage, phase, len(_RESIDENT), sum(_RESIDENT.values()))
        for recorder in _RECORDERS:
            recorder.marks.append(mark)
            recorder._observe()


@contextmanager
def recording():
    log = MemoryLog()
    with _LOCK:
        _RECORDERS.append(log)
        log._observe()
    try:
        yield log
    finally:
        with _LOCK:
            _RECORDERS.remove(log)
