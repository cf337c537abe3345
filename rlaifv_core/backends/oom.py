"""Out-of-memory back-off: halve the backend's batch size and try again.

    answers = run_with_oom_backoff(backend, lambda: backend.generate(prompts, settings))

Uses accelerate's notion of an OOM error (`should_reduce_batch_size`: CUDA, XPU, MPS and CPU
allocation failures) and says so in the log each time it halves. Generation shards are independent
processes, so each may halve its own batch; ranks of one training may not (`refuse_under_multiprocess`):
one rank halving alone leaves the others waiting forever in the next collective.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class MultiProcessOOM(RuntimeError):
    """Out of memory in one rank of a multi-process launch, where no rank may back off alone."""


def world_size() -> int:
    """Processes of this launch (`WORLD_SIZE`, set by accelerate/torchrun); 1 when not launched."""
    return int(os.environ.get("WORLD_SIZE") or 1)


def refuse_under_multiprocess(error: BaseException, what: str, instead: str) -> None:
    """Raise `MultiProcessOOM` (from the OOM `error`) when this process is one of several ranks."""
    ranks = world_size()
    if ranks > 1:
        raise MultiProcessOOM(
            f"out of memory in {what} under a multi-process launch (WORLD_SIZE={ranks}, rank "
            f"{os.environ.get('RANK', '?')}): a rank cannot halve its batch alone (the others would wait for "
            f"it forever), so there is no automatic back-off here; {instead}, and run again") from error


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
