"""Out-of-memory back-off: halve the backend's batch size and try again.

    answers = run_with_oom_backoff(backend, lambda: backend.generate(prompts, settings))

Uses accelerate's notion of an OOM error (`should_reduce_batch_size`: CUDA, XPU, MPS and CPU
allocation failures) and says so in the log each time it halves.
"""

from __future__ import annotations

import logging
from typing import Callable, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


def run_with_oom_backoff(backend, work: Callable[[], T]) -> T:
    while True:
        try:
            return work()
        except Exception as error:  # noqa: BLE001 - re-raised unless it is an OOM
            # imports torch: only on a failure
            from accelerate.utils.memory import clear_device_cache, should_reduce_batch_size

            if not should_reduce_batch_size(error) or getattr(backend, "batch_size", 1) <= 1:
                raise
            clear_device_cache(garbage_collection=True)
            backend.batch_size = max(1, backend.batch_size // 2)
            log.warning("out of memory: batch size halved to %d, retrying", backend.batch_size)
