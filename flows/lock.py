"""The top-level flows hold their run's lock for the run's life (one writer per run folder).

    @flow(...)
    def iterate(config):
        with holding_run(config):        # RunLocked naming the owner, after scale.run_lock_wait_s
            ...

On entry, the holder removes what a killed or failed writer left in the run folder (staging files,
empty Prefect results) and logs each removal. A top-level flow called as a subflow of another on the
same run (iterate → generate) re-enters the lock its process already holds.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from flows.signals import ROOT_RUNS
from rlaifv_core.run_lock import RunLock
from tasks.common import store_of


def _owner() -> str:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return "a process outside Prefect"
    return f"{context.flow.name} flow run {context.flow_run.name!r} ({context.flow_run.id})"


def _note_root_run() -> None:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is not None and context.flow_run is not None:
        ROOT_RUNS.append(context.flow_run.id)


@contextlib.contextmanager
def holding_run(config) -> Iterator[RunLock]:
    from prefect.logging import get_run_logger

    logger = get_run_logger()
    store = store_of(config.store)
    with RunLock(store, _owner(), wait_s=config.scale.run_lock_wait_s, stale_s=config.scale.run_lock_stale_s,
                 say=logger.warning) as lock:
        if lock.owner == _owner():  # the outermost entry: nothing else writes this run now
            _note_root_run()  # what a signal marks Crashed (flows/signals.py)
            for leftover in store.sweep_leftovers():
                logger.warning(f"removed {leftover}, left by a writer that was killed or failed")
        yield lock
