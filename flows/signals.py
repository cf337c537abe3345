"""The flow scripts' entry point: Ctrl-C (SIGINT) and SIGTERM stop a run within seconds and leave
nothing running.

    if __name__ == "__main__":
        run_main(main)      # exit code 0, 1 (an error), 130 (SIGINT) or 143 (SIGTERM)

Without `PREFECT_API_URL`, Prefect starts a temporary API server as a child process in the caller's
process group, so a Ctrl-C in the terminal killed it at once, and the flow then retried its state
updates for minutes. `run_main` starts that server itself, in its own session (the terminal's
signals do not reach it; on Linux it still dies with this process), and stops it on every exit.
On a signal, each flow run unwinds as Prefect handles it (Crashed); after `GRACE_S` at most, every
flow and task run of the run (the tree under the top-level flow run that holds the run lock, see
flows/lock.py) still Running or Pending is set Crashed, the server is stopped and the process exits, abandoning worker threads
whose task would otherwise keep it alive. The store needs no clean-up: every write is atomic and
the next run takes over the dead run's lock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable

GRACE_S = 5.0
SERVER_STARTUP_S = 120  # seconds to wait for the temporary API server to answer /health
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
ROOT_RUNS: list = []  # the top-level flow run ids of the runs this process holds (flows/lock.py adds them)
_signalled: dict[str, int] = {}
_exiting = threading.Lock()
_noting = threading.Lock()


def _own_session_server():
    """Prefect's temporary server, started in its own session; None when an API URL is configured."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    if PREFECT_API_URL.value():
        return None

    class OwnSessionServer(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen:
            import prefect
            from prefect.settings import get_current_settings

            return subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory",
                 "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
                 "--log-level", "error", "--lifespan", "on"],
                env={**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                     "PREFECT__SERVER_FINAL": "1", **get_current_settings().to_environment_variables(exclude_unset=True)},
                start_new_session=True, preexec_fn=_die_with_parent if sys.platform == "linux" else None)

    server = SubprocessASGIServer._instances.get(None)
    if server is None:  # registered where Prefect's clients look for the temporary server
        server = OwnSessionServer()
        # Prefect's 20 s default is too short for a cold start on a loaded 2-core machine (CI timed
        # out once at 20 s while the test suite's own server was busy); a larger setting still wins.
        server.start(timeout=max(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value(), SERVER_STARTUP_S))
    return server


def _send_queued_logs_and_events() -> None:
    """Send what Prefect's background workers still hold while the server is up. Left to their own
    exit hooks, they ran after the server had stopped and retried for a minute before printing
    `--- Error logging to API ---`."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


def _die_with_parent() -> None:  # in the server's child process, before exec (Linux)
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _crash_leftover_runs(reason: str) -> int:
    """Set Crashed every flow and task run of this process's runs (the trees under ROOT_RUNS) that
    is still Running or Pending."""
    if not ROOT_RUNS:
        return 0
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId,
                                                TaskRunFilter,
                                                TaskRunFilterFlowRunId, TaskRunFilterState, TaskRunFilterStateType)
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    live = {StateType.RUNNING, StateType.PENDING}
    count = 0
    with get_client(sync_client=True) as client:
        flow_runs = {run.id: run for run in client.read_flow_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=list(ROOT_RUNS))))}
        level = list(flow_runs)
        while level:  # the subflows, level by level
            children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=level)))
            level = [run.id for run in children if run.id not in flow_runs]
            flow_runs.update({run.id: run for run in children})
        for run in client.read_task_runs(task_run_filter=TaskRunFilter(
                flow_run_id=TaskRunFilterFlowRunId(any_=list(flow_runs)),
                state=TaskRunFilterState(type=TaskRunFilterStateType(any_=list(live))))):
            client.set_task_run_state(run.id, Crashed(message=reason), force=True)
            count += 1
        for run in flow_runs.values():
            if run.state_type in live:
                client.set_flow_run_state(run.id, Crashed(message=reason), force=True)
                count += 1
    return count


def _finish(code: int, server, who: str) -> None:
    """After a signal: crash what is left, stop the server, exit now (once, from whichever thread)."""
    _exiting.acquire()  # a second caller waits here until the first one's os._exit
    reason = f"interrupted by {_signalled.get('name', 'a signal')}"
    try:
        left = _crash_leftover_runs(reason)
        print(f"{reason}: {left} flow/task runs still running were set Crashed ({who})", file=sys.stderr, flush=True)
    except Exception as error:  # noqa: BLE001 - the exit must happen even if the API is gone
        print(f"{reason}: could not mark the runs Crashed ({error})", file=sys.stderr, flush=True)
    from rlaifv_core.run_lock import release_all

    if server is not None:
        server.stop()
    release_all()  # the store is consistent: every write is atomic
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # worker threads (a sampling batch) would hold a normal exit for minutes


def _note(signum: int, server) -> None:
    """The first SIGINT or SIGTERM: remember it and start the watchdog (once)."""
    with _noting:
        if "code" in _signalled:
            return
        _signalled.update(code=EXIT_CODES[signal.Signals(signum)], name=signal.Signals(signum).name)

    def watchdog() -> None:
        time.sleep(GRACE_S)
        _finish(_signalled["code"], server, f"after {GRACE_S:g} s")

    threading.Thread(target=watchdog, name="signal-watchdog", daemon=True).start()


def _watch_signals(server) -> None:
    """See every SIGINT/SIGTERM, even while Prefect's own SIGTERM handler is installed (a flow run
    replaces ours): CPython writes each signal's number to the wakeup fd before any handler runs."""
    read, write = os.pipe()
    os.set_blocking(write, False)
    signal.set_wakeup_fd(write, warn_on_full_buffer=False)

    def reader() -> None:
        while True:
            for number in os.read(read, 64):
                if number in (signal.SIGINT, signal.SIGTERM):
                    _note(number, server)

    threading.Thread(target=reader, name="signal-reader", daemon=True).start()


def run_main(main: Callable[[], object]) -> None:
    """Run a flow script's `main()` with the temporary server and the signal handling above."""
    server = _own_session_server()

    def on_signal(signum, frame) -> None:
        _note(signum, server)
        raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(143)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    _watch_signals(server)
    try:
        main()
    finally:  # an ordinary error propagates after this (traceback, exit code 1)
        if "code" in _signalled:
            _finish(_signalled["code"], server, "unwound")
        if server is not None:
            _send_queued_logs_and_events()
            server.stop()
