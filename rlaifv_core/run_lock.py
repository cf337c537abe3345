"""One writer per run: a lock file in the run's folder of the store, held for the run's life.

    with RunLock(RunStore("runs", "demo"), owner="iterate flow run brave-fox", wait_s=0, stale_s=120):
        ...   # a second RunLock on runs/demo waits up to wait_s, then raises RunLocked naming the owner

The lock is `<run>/.run-lock.json`: owner, host, pid, token, started and heartbeat (unix seconds),
refreshed every stale_s / 4 by a daemon thread. It appears complete or not at all: locally it is
written to a private file and hard-linked to its name (the link fails if the name exists); on S3 it is
a conditional put (`If-None-Match: *`, s3fs `mode="create"`). A lock is stale when its holder is
dead (same host, pid gone) or its heartbeat is older than stale_s; a stale lock is taken over, with
a logged message naming the old owner. The same process may enter the lock of a run it already holds
(a flow calling another top-level flow as a subflow): the inner entry is a no-op. This module
imports no Prefect.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

from .store import RunStore

LOCK_NAME = ".run-lock.json"
_TAKEOVER = ".run-lock.takeover"
_HELD: dict[str, list] = {}  # lock path → [RunLock, depth]: the locks this process holds
_HELD_GUARD = threading.Lock()
log = logging.getLogger(__name__)


class RunLocked(RuntimeError):
    """Another live run holds the run folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def describe(record: dict, now: float | None = None) -> str:
    now = time.time() if now is None else now
    age = now - float(record.get("heartbeat", 0))
    return (f"{record.get('owner', '?')} (host {record.get('host', '?')}, pid {record.get('pid', '?')}, "
            f"started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(float(record.get('started', 0))))}, "
            f"heartbeat {age:.0f} s ago)")


class RunLock:
    """The run lock of `store`'s run folder (see the module docstring)."""

    def __init__(self, store: RunStore, owner: str, wait_s: float = 0.0, stale_s: float = 120.0,
                 poll_s: float = 1.0, say: Callable[[str], None] | None = None):
        self.store, self.owner, self.wait_s, self.stale_s, self.poll_s = store, owner, wait_s, stale_s, poll_s
        self.say = say or log.warning
        self.path = store._fs_path(store.uri(LOCK_NAME))
        self.token = uuid.uuid4().hex
        self.started = time.time()
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the lock file ---------------------------------------------------------------------
    def _record(self) -> dict:
        return {"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                "started": self.started, "heartbeat": time.time()}

    def _create(self, path: str, data: bytes) -> bool:
        """Write `path` only if it does not exist; True if this call created it."""
        if not self.store.is_local:
            try:
                self.store.fs.pipe_file(path, data, mode="create")
            except (FileExistsError, OSError) as error:
                if isinstance(error, FileExistsError) or "precondition" in str(error).lower():
                    return False
                raise
            return True
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        private = f"{path}.{uuid.uuid4().hex[:8]}.part"
        with open(private, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(private, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(private)

    def _read(self, path: str | None = None) -> dict | None:
        try:
            return json.loads(self.store.fs.cat_file(path or self.path))
        except FileNotFoundError:
            return None
        except ValueError:
            return {}

    def _remove(self, path: str) -> None:
        try:
            self.store.fs.rm_file(path)
        except FileNotFoundError:
            pass

    def stale_reason(self, record: dict, now: float | None = None) -> str | None:
        now = time.time() if now is None else now
        if record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int) \
                and not _alive(record["pid"]):
            return f"its process {record['pid']} on {record['host']} is gone"
        age = now - float(record.get("heartbeat", 0))
        if age > self.stale_s:
            return f"its heartbeat is {age:.0f} s old (stale after {self.stale_s:g} s)"
        return None

    def _take_over(self, record: dict, reason: str) -> bool:
        """Replace the stale lock `record`, one taker at a time (a takeover marker, itself stale after 30 s)."""
        marker = self.store._fs_path(self.store.uri(_TAKEOVER))
        if not self._create(marker, self.token.encode()):
            try:
                if time.time() - self.store.fs.modified(marker).timestamp() > 30:
                    self._remove(marker)
            except FileNotFoundError:
                pass
            return False
        try:
            current = self._read()
            if current is not None and current.get("token") != record.get("token"):
                return False  # someone else took it meanwhile
            self.say(f"taking over the stale lock of run {self.store.run_name} held by {describe(record)}: {reason}")
            self._remove(self.path)
            return self._create(self.path, json.dumps(self._record()).encode())
        finally:
            self._remove(marker)

    # -- acquire / release -----------------------------------------------------------------
    def acquire(self) -> "RunLock":
        deadline = time.time() + self.wait_s
        waiting_said = False
        while True:
            if self._create(self.path, json.dumps(self._record()).encode()):
                break
            record = self._read()
            if record is None:
                continue  # released meanwhile
            reason = self.stale_reason(record) if record else None
            if record and reason and self._take_over(record, reason):
                break
            if not record:  # being written, or garbage: stale once its file is old
                try:
                    if time.time() - self.store.fs.modified(self.path).timestamp() > self.stale_s:
                        self._remove(self.path)
                        continue
                except FileNotFoundError:
                    continue
            if time.time() >= deadline:
                raise RunLocked(f"run {self.store.run_name!r} in {self.store.uri('')} is in use by "
                                f"{describe(record) if record else 'an unreadable lock'}; waited {self.wait_s:g} s "
                                f"(scale.run_lock_wait_s). Wait for that run, or stop it; a dead run's lock is taken "
                                f"over after scale.run_lock_stale_s = {self.stale_s:g} s without a heartbeat. "
                                f"Lock file: {self.store.uri(LOCK_NAME)}")
            if not waiting_said:
                self.say(f"run {self.store.run_name!r} is in use by {describe(record) if record else '?'}; "
                         f"waiting up to {self.wait_s:g} s")
                waiting_said = True
            time.sleep(min(self.poll_s, max(deadline - time.time(), 0.01)))
        self._thread = threading.Thread(target=self._beat, name=f"run-lock-{self.store.run_name}", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(max(self.stale_s / 4, 0.05)):
            record = self._read()
            if not record or record.get("token") != self.token:
                self.lost = True
                self.say(f"the lock of run {self.store.run_name!r} was taken over by "
                         f"{describe(record) if record else 'nobody (removed)'}; this run no longer holds it")
                return
            data = json.dumps(self._record()).encode()
            if self.store.is_local:
                part = f"{self.path}.{self.token[:8]}.part"
                Path(part).write_bytes(data)
                os.replace(part, self.path)
            else:
                self.store.fs.pipe_file(self.path, data)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        record = self._read()
        if record and record.get("token") == self.token:
            self._remove(self.path)

    def __enter__(self) -> "RunLock":
        with _HELD_GUARD:
            held = _HELD.get(self.path)
            if held is not None:
                held[1] += 1
                return held[0]
        self.acquire()
        with _HELD_GUARD:
            _HELD[self.path] = [self, 1]
        return self

    def __exit__(self, *exc) -> None:
        with _HELD_GUARD:
            held = _HELD[self.path]
            held[1] -= 1
            if held[1] > 0:
                return
            del _HELD[self.path]
        held[0].release()


def release_all() -> None:
    """Release every run lock this process holds (an exit that skips the `with` blocks' ends)."""
    with _HELD_GUARD:
        held = [lock for lock, _ in _HELD.values()]
        _HELD.clear()
    for lock in held:
        lock.release()
