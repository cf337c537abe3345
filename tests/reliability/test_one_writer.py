"""One writer per run (issue 19, item 1): the run lock, per-attempt training folders, and a cached
training result checked against the store. The two-runs whole-flow case is in test_two_runs.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from prefect.logging import disable_run_logger

from rlaifv_core.config import StoreConfig
from rlaifv_core.run_lock import LOCK_NAME, RunLock, RunLocked
from rlaifv_core.store import RunStore
from tasks.train_dpo import PROVENANCE, CheckpointRef, TrainDPOResult, _work_dir, checked_training, training_problems


def test_a_second_run_on_the_same_run_name_is_refused_naming_the_owner(tmp_path):
    store = RunStore(str(tmp_path), "demo")
    with RunLock(store, "iterate flow run 'brave-fox'"):
        record = json.loads((tmp_path / "demo" / LOCK_NAME).read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        started = time.time()
        with pytest.raises(RunLocked) as refused:
            RunLock(RunStore(str(tmp_path), "demo"), "the second run", wait_s=0.5, poll_s=0.1).acquire()
        assert 0.4 < time.time() - started < 5
        message = str(refused.value)
        assert "brave-fox" in message and f"pid {os.getpid()}" in message and "demo" in message
        with RunLock(RunStore(str(tmp_path), "other"), "another run name"):  # other runs are free
            pass
    assert not (tmp_path / "demo" / LOCK_NAME).exists()  # released


def test_a_waiting_run_gets_the_lock_once_the_owner_releases_it(tmp_path):
    store = RunStore(str(tmp_path), "demo")
    first = RunLock(store, "first").acquire()
    threading.Timer(0.5, first.release).start()
    said = []
    started = time.time()
    with RunLock(RunStore(str(tmp_path), "demo"), "second", wait_s=30, poll_s=0.1, say=said.append) as second:
        assert time.time() - started < 10
        assert json.loads((tmp_path / "demo" / LOCK_NAME).read_text())["token"] == second.token
    assert any("waiting up to 30 s" in line and "first" in line for line in said)


def test_a_stale_lock_is_taken_over_with_a_logged_message(tmp_path):
    store = RunStore(str(tmp_path), "demo")
    (tmp_path / "demo").mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    lock_file = tmp_path / "demo" / LOCK_NAME
    now = time.time()
    lock_file.write_text(json.dumps({"owner": "killed run", "host": socket.gethostname(), "pid": pid,
                                     "token": "old", "started": now, "heartbeat": now}))
    said = []
    with RunLock(store, "new run", say=said.append):
        assert json.loads(lock_file.read_text())["owner"] == "new run"
    assert any("taking over" in line and "killed run" in line and f"process {pid}" in line for line in said)
    # a live process on another host whose heartbeat stopped: stale after stale_s
    lock_file.write_text(json.dumps({"owner": "frozen run", "host": "elsewhere", "pid": 1, "token": "x",
                                     "started": now - 100, "heartbeat": now - 100}))
    with pytest.raises(RunLocked):
        RunLock(store, "impatient", stale_s=1000).acquire()
    said.clear()
    with RunLock(store, "patient", stale_s=10, say=said.append):
        pass
    assert any("frozen run" in line and "heartbeat is 100 s old" in line for line in said)


def test_the_heartbeat_keeps_a_long_run_lock_fresh_and_reentry_is_a_no_op(tmp_path):
    store = RunStore(str(tmp_path), "demo")
    with RunLock(store, "long run", stale_s=0.4) as lock:
        first = json.loads((tmp_path / "demo" / LOCK_NAME).read_text())["heartbeat"]
        time.sleep(0.6)
        assert json.loads((tmp_path / "demo" / LOCK_NAME).read_text())["heartbeat"] > first
        with pytest.raises(RunLocked):  # fresh: not stale although older than stale_s since start
            other = RunLock(RunStore(str(tmp_path), "demo"), "other", stale_s=0.4)
            other.say = lambda _: None
            other.acquire()
        with RunLock(RunStore(str(tmp_path), "demo"), "a subflow of the same process") as inner:
            assert inner is lock
        assert (tmp_path / "demo" / LOCK_NAME).exists()  # the inner exit does not release it
    assert not (tmp_path / "demo" / LOCK_NAME).exists()


def test_each_training_attempt_gets_its_own_work_folder_and_claims_a_left_one(tmp_path):
    store_config = StoreConfig(url=str(tmp_path), run_name="demo")
    store = RunStore.from_config(store_config)
    first = _work_dir(store, store_config, "iter-1", "k" * 16)
    first.mkdir(parents=True)
    (first / "trainer" / "checkpoint-1").mkdir(parents=True)
    (first / "trainer" / "checkpoint-1" / "trainer_state.json").write_text("{}")
    second = _work_dir(store, store_config, "iter-1", "k" * 16)
    assert second != first and not first.exists()  # a new name; the left folder was claimed by renaming it
    assert (second / "trainer" / "checkpoint-1" / "trainer_state.json").exists()
    other = _work_dir(store, store_config, "iter-1", "j" * 16)
    assert not other.exists() and second.exists()  # another training's folder is not touched

    from rlaifv_core.training.run import TrainJob, _job_identity

    def job(work):  # what train_dpo gives the trainer: inputs and output inside the attempt's folder
        return TrainJob(model_dir="/models/policy", pairs_path=str(work / "pairs.parquet"),
                        ref_logps_path=str(work / "ref_logps.parquet"), output_dir=str(work / "trainer"))

    assert _job_identity(job(first)) == _job_identity(job(second))  # the claimed folder stays resumable
    assert _job_identity(job(first)) != _job_identity(job(first).model_copy(update={"model_dir": "/models/other"}))


def _checkpoint(store: RunStore, tmp_path, step: int, training: str) -> CheckpointRef:
    folder = tmp_path / f"export-{step}-{training}"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"w" * step)
    (folder / PROVENANCE).write_text(json.dumps({"training": training, "step": step}))
    return CheckpointRef(step=step, epoch=step / 2, ref=store.write_folder(f"iter-1/checkpoints/step-{step}", folder))


def _result(checkpoints, key="t1") -> TrainDPOResult:
    return TrainDPOResult(checkpoints=checkpoints, metrics={}, global_step=2, resumed_from=None, num_pairs=4,
                          log=None, training_key=key)


def test_a_training_result_is_checked_against_the_store(tmp_path):
    store_config = StoreConfig(url=str(tmp_path), run_name="demo")
    store = RunStore.from_config(store_config)
    one, two = _checkpoint(store, tmp_path, 1, "t1"), _checkpoint(store, tmp_path, 2, "t1")
    _checkpoint(store, tmp_path, 3, "another-training")  # left by another configuration: not this result's
    assert training_problems(_result([one, two]), store_config, "iter-1") == []
    # the race of issue 19: the last writer's result lists only its last step
    assert training_problems(_result([two]), store_config, "iter-1") == [
        "step-1 of this training is in the store but not in the result"]
    missing = CheckpointRef(step=4, epoch=2.0, ref=two.ref.model_copy(update={"uri": store.uri("iter-1/checkpoints/step-4")}))
    assert "step-4 is not in the store" in training_problems(_result([one, two, missing]), store_config, "iter-1")[0]

    class FakeTrain:  # train_dpo as a flow configures it: a cached, stale result, then a fresh one
        calls = []

        def __init__(self, refresh=False):
            self.refresh = refresh

        def with_options(self, refresh_cache=False):
            return FakeTrain(refresh_cache)

        def __call__(self, *args):
            self.calls.append(self.refresh)
            return _result([one, two] if self.refresh else [two])

    args = (None, None, None, None, "fp", None, store_config, "iter-1")
    with disable_run_logger():
        result = checked_training(FakeTrain(), *args)
    assert [c.step for c in result.checkpoints] == [1, 2] and FakeTrain.calls == [False, True]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_iterate_runs_started_together_on_one_store_one_runs_the_other_waits_then_hits_the_cache(
        prefect_api, tmp_path, tiny_model_dir):
    """Issue 19's case: the same run started twice at once. One holds the run and trains; the other
    waits for it (scale.run_lock_wait_s), then is all cache hits; selection sees every checkpoint."""
    from .conftest import ROOT, tiny_overrides

    store = tmp_path / "store"
    procs, logs = [], []
    for name in ("a", "b"):
        log = tmp_path / f"stages-{name}.log"
        env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_HOME": str(tmp_path / f"home-{name}"),
               "HF_HUB_OFFLINE": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "RLAIFV_TEST_STAGE_LOG": str(log)}
        env.pop("RLAIFV_TEST_PAUSE_AT", None)
        procs.append(subprocess.Popen(
            [sys.executable, str(ROOT / "flows" / "iterate.py"),
             *tiny_overrides(store, tiny_model_dir, "scale.run_lock_wait_s=500", run="two")],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True))
        logs.append(log)
    outs = [proc.communicate(timeout=500)[0] for proc in procs]
    for proc, out in zip(procs, outs):
        assert proc.returncode == 0, out[-4000:]
    worked = [log.exists() and log.read_text().strip() != "" for log in logs]
    assert sorted(worked) == [False, True], "exactly one run computed; the other was all cache hits"
    waiter = outs[worked.index(False)]
    assert "is in use by iterate flow run" in waiter and "waiting up to 500 s" in waiter
    root = store / "two"
    steps = sorted(p.name for p in (root / "iter-1" / "checkpoints").iterdir())
    assert steps == ["step-1", "step-2"]
    selection = json.loads((root / "iter-1" / "selection.json").read_text())
    assert sorted(selection["scores"]) == ["start", *steps]  # every checkpoint in the store was a candidate
    summary = json.loads((root / "summary.json").read_text())
    assert summary["iterations"][1]["selected"] == selection["chosen"]
    assert not (root / ".run-lock.json").exists() and not (root / "iter-1" / ".train-work").exists()
