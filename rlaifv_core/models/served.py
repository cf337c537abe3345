"""A model role behind a managed server: started on a free port, waited for, always stopped.

    from rlaifv_core.models.served import managed_server
    with managed_server("vllm serve {model} --port {port} --served-model-name {name}",
                        model="/run/ckpt/iter1", name="policy", ready_timeout_s=600) as base_url:
        ...  # an openai-backend ModelSpec with base_url=base_url, name_or_path="policy"

The command template is split with shlex and each part formatted with {model}, {port}, {name};
the server runs in its own process group (so vLLM's workers go with it), its output goes to a log
file, readiness is a bounded poll of /health then /v1/models, a server that exits before it is ready
is an error carrying the tail of its log. On leaving the block, on an exception, at interpreter exit
(atexit) and on SIGTERM/SIGINT the group gets SIGTERM, then SIGKILL after `stop_grace_s`. A process
killed with SIGKILL runs none of that, so a watchdog process (`WATCHDOG`) stops the server's group
within seconds of its starter's death, and the next start reaps any group whose starter is gone
(`reap_orphans`, for a watchdog that could not run).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..config_serve import ServerError, render_command  # noqa: F401 - re-exported

_RUNNING: dict[int, subprocess.Popen] = {}
_LOCK = threading.Lock()
_HANDLERS_SET = False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _ready(base: str) -> bool:
    for path in ("/health", "/v1/models"):
        try:
            with urllib.request.urlopen(base + path, timeout=2) as reply:
                if reply.status == 200:
                    return True
        except (urllib.error.URLError, OSError, ValueError):
            continue
    return False


def _registry(log_dir) -> Path:
    folder = Path(log_dir or tempfile.gettempdir()) / "rlaifv-servers"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_orphans(log_dir=None) -> int:
    """Kill the process group of every server whose starting process is gone (a flow killed with
    SIGKILL runs no atexit); called before each start, so a re-run leaves nothing behind."""
    reaped = 0
    for entry in _registry(log_dir).glob("*.pid"):
        try:
            server, owner = (int(x) for x in entry.read_text().split())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(server, signal.SIGKILL)
            reaped += 1
        entry.unlink(missing_ok=True)
    return reaped


#: Runs in a session of its own (a kill of the flow's process group spares it): once its parent (the
#: starter) is gone it is re-parented, and then sends the server's group SIGTERM, SIGKILL once the grace
#: is over, and removes the pid file. A GPU server outliving a flow killed with SIGKILL would otherwise
#: hold its memory until the next run's start reaps it. `stop_server` ends it with the server.
WATCHDOG = """
import contextlib, os, signal, sys, time
starter, server, grace, pidfile = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
def gone(pid):  # a zombie (exited, not yet reaped by its new parent) is gone
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in "ZX"
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
while os.getppid() == starter:
    time.sleep(0.5)
with contextlib.suppress(ProcessLookupError, PermissionError):
    os.killpg(server, signal.SIGTERM)
deadline = time.monotonic() + grace
while not gone(server) and time.monotonic() < deadline:
    time.sleep(0.2)
with contextlib.suppress(ProcessLookupError, PermissionError):
    os.killpg(server, signal.SIGKILL)  # the server's workers too
with contextlib.suppress(OSError):
    os.unlink(pidfile)
"""


def _start_watchdog(proc: subprocess.Popen, pidfile: Path, grace_s: float = 10.0) -> subprocess.Popen | None:
    try:
        return subprocess.Popen([sys.executable, "-c", WATCHDOG, str(os.getpid()), str(proc.pid), str(grace_s),
                                 str(pidfile)], start_new_session=True, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:  # no watchdog: reap_orphans at the next start is the remaining line
        return None


def _stop_watchdog(proc: subprocess.Popen) -> None:
    watchdog = getattr(proc, "rlaifv_watchdog", None)
    if watchdog is not None:
        with contextlib.suppress(ProcessLookupError):
            watchdog.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            watchdog.wait(timeout=5.0)


def stop_server(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to the server's process group, SIGKILL after `grace_s`; idempotent."""
    with _LOCK:
        _RUNNING.pop(proc.pid, None)
    registered = getattr(proc, "rlaifv_pidfile", None)
    if proc.poll() is not None:
        _stop_watchdog(proc)
        if registered:
            Path(registered).unlink(missing_ok=True)
        return
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    _stop_watchdog(proc)
    if registered:
        Path(registered).unlink(missing_ok=True)


def stop_all() -> None:
    """Stop every server this process started (atexit, signal handlers)."""
    with _LOCK:
        procs = list(_RUNNING.values())
    for proc in procs:
        stop_server(proc, grace_s=3.0)


def _on_signal(signum, frame):  # noqa: ARG001
    stop_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_handlers() -> None:
    global _HANDLERS_SET
    if _HANDLERS_SET:
        return
    _HANDLERS_SET = True
    atexit.register(stop_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM,):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _on_signal)


def start_server(template: str, *, model: str, name: str, ready_timeout_s: float = 600.0,
                 host: str = "127.0.0.1", log_dir: str | Path | None = None,
                 env: dict | None = None) -> tuple[str, subprocess.Popen, Path]:
    """Start the server and wait until it answers; returns (base_url ending in /v1, process, log)."""
    port = free_port(host)
    argv = render_command(template, model=model, port=port, name=name, host=host)
    log = Path(log_dir or tempfile.gettempdir()) / f"rlaifv-serve-{name}-{port}.log"
    _install_handlers()
    reap_orphans(log_dir)
    with open(log, "wb") as out:
        try:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, **(env or {})})
        except OSError as exc:
            raise ServerError(f"serve command for {name!r} could not start ({argv[0]}): {exc}") from None
    pidfile = _registry(log_dir) / f"{proc.pid}.pid"
    pidfile.write_text(f"{proc.pid} {os.getpid()}\n")
    proc.rlaifv_pidfile = str(pidfile)
    proc.rlaifv_watchdog = _start_watchdog(proc, pidfile)
    with _LOCK:
        _RUNNING[proc.pid] = proc
    base = f"http://{host}:{port}"
    deadline = time.monotonic() + ready_timeout_s
    while True:
        if proc.poll() is not None:
            stop_server(proc)
            raise ServerError(f"server for {name!r} exited with code {proc.returncode} before it was ready "
                              f"({' '.join(argv)}); log {log}:\n{_tail(log)}")
        if _ready(base):
            return base + "/v1", proc, log
        if time.monotonic() > deadline:
            stop_server(proc)
            raise ServerError(f"server for {name!r} not ready after {ready_timeout_s:g} s ({' '.join(argv)}); "
                              f"log {log}:\n{_tail(log)}")
        time.sleep(0.2)


@contextlib.contextmanager
def managed_server(template: str, *, model: str, name: str, ready_timeout_s: float = 600.0,
                   stop_grace_s: float = 10.0, **kwargs):
    """A server for the block's duration; yields its base URL; stopped however the block ends."""
    base_url, proc, _ = start_server(template, model=model, name=name, ready_timeout_s=ready_timeout_s, **kwargs)
    try:
        yield base_url
    finally:
        stop_server(proc, grace_s=stop_grace_s)


@contextlib.contextmanager
def shared_servers():
    """Inside this block, `serving` calls for the same command and model share one server: the first
    starts it, the block's end stops it. A stage wraps its fan-out in it, so its shards (threads of
    this process) meet one vLLM, not one start per shard each claiming the GPU; the next stage's
    servers start after this one's are gone. Shards in other processes (Dask, Ray) still start their
    own."""
    global _SHARED
    with _LOCK:
        outer, _SHARED = _SHARED, {}
    try:
        yield
    finally:
        with _LOCK:
            mine, _SHARED = _SHARED, outer
        for entry in mine.values():
            if entry.get("proc") is not None:
                stop_server(entry["proc"], grace_s=entry["grace_s"])


_SHARED: dict | None = None  # (command, model) → {"lock", "url", "proc", "grace_s"} inside shared_servers()


def _shared_url(serve, model: str, name: str, log_dir) -> str:
    with _LOCK:
        entry = _SHARED.setdefault((serve.command, model), {"lock": threading.Lock(), "proc": None})
    with entry["lock"]:  # concurrent shards: one starts the server, the others wait for it
        if entry["proc"] is None or entry["proc"].poll() is not None:  # first use, or it died: (re)start
            entry["url"], entry["proc"], _ = start_server(serve.command, model=model, name=name,
                                                          ready_timeout_s=serve.ready_timeout_s, log_dir=log_dir)
            entry["grace_s"] = serve.stop_grace_s
        return entry["url"]


@contextlib.contextmanager
def serving(spec, checkpoint_dir=None, log_dir=None):
    """The spec a stage opens: `spec` itself, or, with `spec.serve`, an openai-backend copy pointing at
    a managed server on the checkpoint folder (or the spec's own model), stopped when the block ends
    (inside `shared_servers`, when that block ends)."""
    if spec.serve is None:
        yield spec, checkpoint_dir
        return
    from .schemes import resolve_model_path

    model = str(checkpoint_dir) if checkpoint_dir is not None else str(resolve_model_path(spec.name_or_path))
    name = "rlaifv-served"

    def served(base_url: str):
        return spec.model_copy(update=dict(backend="openai", base_url=base_url, name_or_path=name, serve=None)), None

    if _SHARED is not None:
        yield served(_shared_url(spec.serve, model, name, log_dir))
        return
    with managed_server(spec.serve.command, model=model, name=name, ready_timeout_s=spec.serve.ready_timeout_s,
                        stop_grace_s=spec.serve.stop_grace_s, log_dir=log_dir) as base_url:
        yield served(base_url)
