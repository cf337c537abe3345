"""Faults: kill -9 of the whole flow inside each stage and a re-run (same results as an uninterrupted
run, no finished stage recomputed, no partial file that looks complete); out-of-memory in sampling and
in DPO (the batch halves, the work completes); the S3 run store unavailable mid-write (retried, no
partial object).

The kill matrix uses the test-only hook `tasks.common.stage_hook`: RLAIFV_TEST_STAGE_LOG lists every
stage body that starts (a cache hit never starts one), RLAIFV_TEST_PAUSE_AT parks the flow at a chosen
point so that the test can kill it there."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from rlaifv_core import training as D
from rlaifv_core import store as store_module
from rlaifv_core.backends.hf import HFBackend
from rlaifv_core.config import DPOConfig, ModelSpec, SamplingConfig
from rlaifv_core.feedback.sampling import sample_candidates
from rlaifv_core.store import MANIFEST, RunStore, StoreUnavailable, sha256_bytes
from tests.helpers import free_port

from .conftest import ROOT, moto_server, png_bytes, shapes_pairs, tiny_overrides

# -- kill -9 during each stage, then re-run ---------------------------------------------------------------------
#: case → (pause point, the stage start that is in progress when killed, artifacts to wait for first)
KILL_POINTS = {
    "sampling": ("sample@iter-1/shards/candidates-0001", ("sample", "iter-1/shards/candidates-0001.parquet"),
                 ["iter-1/shards/candidates-0000.parquet"]),
    "judging": ("judge@iter-1/shards/verdicts-0001", ("judge", "iter-1/shards/verdicts-0001.parquet"),
                ["iter-1/shards/verdicts-0000.parquet"]),
    "pairs": ("pairs@iter-1", ("pairs", "iter-1/pairs.parquet"), []),
    "reference-logps": ("reference@iter-1", ("reference", "iter-1/ref_logps.parquet"), []),
    "dpo": ("dpo-step@step-2", ("dpo", "iter-1"), []),  # mid-training: checkpoint-1 saved, step 2 not
    "evaluation": ("evaluate@iter-1/eval/step-2", ("evaluate", "iter-1/eval/step-2/shapes.json"),
                   ["iter-1/eval/step-1/shapes.json"]),
}
#: files the parent flow rewrites on every run by design (not stage outputs)
FLOW_LEVEL = ("config.json", "iter-1/selection.json")
TABLES = ("prompts", "candidates", "claims", "verdicts", "pairs", "ref_logps")


def _env(prefect_api: str, home: Path, log: Path, pause: str | None = None) -> dict:
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_HOME": str(home), "HF_HUB_OFFLINE": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "RLAIFV_TEST_STAGE_LOG": str(log)}
    env.pop("RLAIFV_TEST_PAUSE_AT", None)
    if pause:
        env["RLAIFV_TEST_PAUSE_AT"] = pause
    return env


def _iterate(store: Path, model_dir: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "flows" / "iterate.py"), *tiny_overrides(store, model_dir)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def _starts(log: Path) -> set[tuple[str, str]]:
    """(stage, where) of every stage body that started (the DPO per-step lines are not stage starts)."""
    lines = log.read_text().splitlines() if log.exists() else []
    starts = set()
    for line in lines:
        stage, _, where = line.removeprefix("PAUSED ").partition(" ")
        if stage != "dpo-step":
            starts.add((stage, where))
    return starts


def _visible_files(root: Path) -> dict[str, tuple[int, int]]:
    """Every non-hidden file of a run (temporaries and work folders are hidden): path → (mtime, size)."""
    files = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            stat = path.stat()
            files[str(rel)] = (stat.st_mtime_ns, stat.st_size)
    return files


def _comparable(summary: dict) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "policy"} for row in summary["iterations"]]


def _assert_complete_and_sound(root: Path) -> None:
    """No visible file that is partial: every table reads, every checkpoint folder has its manifest."""
    for path in root.rglob("*.parquet"):
        if not any(part.startswith(".") for part in path.relative_to(root).parts):
            pd.read_parquet(path)
    for folder in (root / "iter-1" / "checkpoints").iterdir():
        manifest = json.loads((folder / MANIFEST).read_text())
        assert manifest and all((folder / name).exists() for name in manifest)


@pytest.fixture(scope="module")
def uninterrupted(prefect_api, tmp_path_factory, tiny_model_dir):
    """One uninterrupted run (same settings, same process setup), shared by every kill case."""
    base = tmp_path_factory.mktemp("uninterrupted")
    _finish(_iterate(base / "store", tiny_model_dir, _env(prefect_api, base / "home", base / "stages.log")))
    root = base / "store" / "t"
    summary = json.loads((root / "summary.json").read_text())
    assert summary["iterations"][1]["pairs"] > 0 and len(list((root / "iter-1" / "checkpoints").iterdir())) == 2
    return root, _starts(base / "stages.log")


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", list(KILL_POINTS))
def test_kill_9_during_a_stage_then_rerun_equals_an_uninterrupted_run(case, uninterrupted, prefect_api, tmp_path,
                                                                     tiny_model_dir):
    reference_root, reference_starts = uninterrupted
    pause, in_progress, wait_for = KILL_POINTS[case]
    store, root = tmp_path / "store", tmp_path / "store" / "t"
    killed_log, resumed_log = tmp_path / "killed.log", tmp_path / "resumed.log"

    proc = _iterate(store, tiny_model_dir, _env(prefect_api, tmp_path / "home", killed_log, pause))
    deadline = time.monotonic() + 240
    while not (killed_log.exists() and "PAUSED" in killed_log.read_text()
               and all((root / rel).exists() for rel in wait_for)):
        assert proc.poll() is None, f"the flow ended before reaching {pause}:\n" + proc.stdout.read()[-4000:]
        assert time.monotonic() < deadline, f"{pause} not reached"
        time.sleep(0.1)
    time.sleep(1.0)  # let a sibling task that just wrote its artifact record its result
    before = _visible_files(root)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (root / "summary.json").exists()
    if in_progress[0] != "dpo":
        assert not (root / in_progress[1]).exists()  # the interrupted stage left no file under its name
    finished = _starts(killed_log) - {in_progress}

    out = _finish(_iterate(store, tiny_model_dir, _env(prefect_api, tmp_path / "home", resumed_log)))
    _assert_the_rerun_equals_the_uninterrupted_run(case, uninterrupted, root, before, finished, in_progress,
                                                   resumed_log, out)


def _assert_the_rerun_equals_the_uninterrupted_run(case, uninterrupted, root, before, finished, in_progress,
                                                   resumed_log, out):
    reference_root, reference_starts = uninterrupted
    redone = _starts(resumed_log)
    assert in_progress in redone  # the interrupted stage ran again ...
    assert not redone & finished, f"finished stages recomputed: {sorted(redone & finished)}"  # ... nothing finished did
    assert redone | finished == reference_starts  # and together the two runs did exactly the whole run's work
    after = _visible_files(root)
    rewritten = [p for p, stat in before.items() if p not in FLOW_LEVEL and after.get(p) != stat]
    assert rewritten == [], f"artifacts of finished stages were rewritten: {rewritten}"
    if case == "dpo":
        assert "resuming from checkpoint-1" in out

    _assert_complete_and_sound(root)
    for name in TABLES:  # every table byte-identical to the uninterrupted run's
        assert sha256_bytes((root / "iter-1" / f"{name}.parquet").read_bytes()) == \
            sha256_bytes((reference_root / "iter-1" / f"{name}.parquet").read_bytes()), name
    mine = _comparable(json.loads((root / "summary.json").read_text()))
    theirs = _comparable(json.loads((reference_root / "summary.json").read_text()))
    assert [r["selected"] for r in mine] == [r["selected"] for r in theirs]
    assert [r["pairs"] for r in mine] == [r["pairs"] for r in theirs]
    assert [r.get("pair_counts") for r in mine] == [r.get("pair_counts") for r in theirs]
    for a, b in zip(mine, theirs):
        assert a["metrics"] == pytest.approx(b["metrics"], abs=1e-6)
        if case == "dpo":  # Trainer averages logged metrics over `logging_steps`; the window cut by the kill
            assert (a.get("dpo") or {}).keys() == (b.get("dpo") or {}).keys()  # restarts (docs/reliability.md)
        else:
            assert (a.get("dpo") or {}) == pytest.approx(b.get("dpo") or {}, rel=1e-6, abs=1e-9)
    for step in ("step-1", "step-2"):  # the trained weights themselves
        from safetensors.torch import load_file

        ours = load_file(root / "iter-1" / "checkpoints" / step / "model.safetensors")
        reference = load_file(reference_root / "iter-1" / "checkpoints" / step / "model.safetensors")
        assert ours.keys() == reference.keys()
        assert all(torch.allclose(ours[k], reference[k], atol=1e-6) for k in ours), step


# -- SIGINT / SIGTERM, then re-run -------------------------------------------------------------------------------
#: case → (signal, kill point, exit code, whether the flow starts its own temporary Prefect server)
SIGNAL_CASES = {"sigint-sampling-temporary-server": (signal.SIGINT, "sampling", 130, True),
                "sigterm-dpo": (signal.SIGTERM, "dpo", 143, False)}


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _live_runs(home: Path | None, since) -> list[str]:
    """Flow and task runs still Running or Pending: in the flow's own database (its temporary server
    is gone), else on the package's API (runs started since `since`)."""
    if home is not None:
        import sqlite3

        with sqlite3.connect(home / "prefect.db") as db:
            return [f"{kind} {name} {state}" for kind in ("flow_run", "task_run")
                    for name, state in db.execute(f"select name, state_type from {kind}")
                    if state in ("RUNNING", "PENDING")]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterStartTime, TaskRunFilter,
                                                TaskRunFilterStartTime)

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since)))
        runs += client.read_task_runs(task_run_filter=TaskRunFilter(start_time=TaskRunFilterStartTime(after_=since)))
    assert runs, "no runs found"
    return [f"{run.name} {run.state_type.value}" for run in runs if run.state_type.value in ("RUNNING", "PENDING")]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", list(SIGNAL_CASES))
def test_a_signal_stops_the_run_in_seconds_crashes_its_runs_stops_its_server_and_the_rerun_equals_an_uninterrupted_run(
        case, uninterrupted, prefect_api, tmp_path, tiny_model_dir):
    from datetime import datetime, timezone

    signum, kill_case, code, own_server = SIGNAL_CASES[case]
    pause, in_progress, wait_for = KILL_POINTS[kill_case]
    store, root = tmp_path / "store", tmp_path / "store" / "t"
    killed_log, resumed_log = tmp_path / "killed.log", tmp_path / "resumed.log"
    env = _env(prefect_api, tmp_path / "home", killed_log, pause)
    if own_server:  # the temporary server Prefect would start in the terminal's process group
        env.pop("PREFECT_API_URL")
        env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
    since = datetime.now(timezone.utc)
    proc = _iterate(store, tiny_model_dir, env)
    deadline = time.monotonic() + 400
    while not (killed_log.exists() and "PAUSED" in killed_log.read_text()
               and all((root / rel).exists() for rel in wait_for)):
        assert proc.poll() is None, f"the flow ended before reaching {pause}:\n" + proc.stdout.read()[-4000:]
        assert time.monotonic() < deadline, f"{pause} not reached"
        time.sleep(0.1)
    time.sleep(1.0)
    servers = [pid for pid in _children(proc.pid) if b"uvicorn" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(servers) == (1 if own_server else 0)
    before = _visible_files(root)
    started = time.monotonic()
    os.killpg(proc.pid, signum)  # as the terminal does for Ctrl-C: the whole process group
    out, _ = proc.communicate(timeout=120)
    took = time.monotonic() - started
    assert proc.returncode == code, out[-4000:]
    assert took < 20, f"exited {took:.0f} s after the signal"
    time.sleep(1.0)
    assert [pid for pid in servers if Path(f"/proc/{pid}").exists()] == [], "the temporary server still runs"
    assert _live_runs(tmp_path / "home" if own_server else None, since) == []
    assert not (root / "summary.json").exists() and not (root / ".run-lock.json").exists()
    finished = _starts(killed_log) - {in_progress}

    out = _finish(_iterate(store, tiny_model_dir, _env(prefect_api, tmp_path / "home", resumed_log)))
    _assert_the_rerun_equals_the_uninterrupted_run(kill_case, uninterrupted, root, before, finished, in_progress,
                                                   resumed_log, out)


# -- out of memory -------------------------------------------------------------------------------------------
OOM = "CUDA out of memory. Tried to allocate 2.00 GiB (simulated)"


def test_simulated_oom_in_sampling_halves_the_batch_and_gives_the_same_answers(tiny_model_dir, monkeypatch, caplog):
    backend = HFBackend.from_spec(ModelSpec(name_or_path=str(tiny_model_dir), batch_size=8))
    prompts = pd.DataFrame({"prompt_id": [f"p{i}" for i in range(3)], "image": [png_bytes(i) for i in range(3)],
                            "question": ["describe the image ."] * 3})
    config = SamplingConfig(n=2, temperature=1.0, top_k=None, max_new_tokens=6, seed=5)
    clean = sample_candidates(backend, prompts, config)
    real, rows = backend._sample_chunk, []

    def oom_when_big(chunk, seeds, settings):
        rows.append(len(chunk) * settings.n)
        if len(chunk) * settings.n > 2:
            raise torch.OutOfMemoryError(OOM)
        return real(chunk, seeds, settings)

    monkeypatch.setattr(backend, "_sample_chunk", oom_when_big)
    with caplog.at_level(logging.WARNING, logger="rlaifv_core.backends.oom"):
        again = sample_candidates(backend, prompts, config)
    pd.testing.assert_frame_equal(again, clean)  # per-sample seeds: the batch size does not change an answer
    assert backend.batch_size == 2 and rows[:2] == [6, 4] and set(rows[2:]) == {2}
    assert [r.getMessage() for r in caplog.records] == ["out of memory: batch size halved to 4, retrying",
                                                        "out of memory: batch size halved to 2, retrying"]


def test_simulated_oom_in_dpo_halves_the_batch_keeps_the_recipe_and_completes(tiny_model_dir, tmp_path, monkeypatch):
    pairs = shapes_pairs(4)
    dpo = DPOConfig(learning_rate=1e-3, warmup_ratio=0.0, batch_size=4, max_steps=2, logging_steps=1,
                    checkpoints_per_epoch=1)
    ref = D.compute_reference_logps(tiny_model_dir, pairs, dpo=dpo, batch_size=4)

    def job(out):
        return D.TrainJob(model_dir=str(tiny_model_dir), pairs_path="<frame>", output_dir=str(out), dpo=dpo)

    clean = D.train(job(tmp_path / "clean"), pairs=pairs, ref_logps=ref)
    real_load, seen = D.load_training_model, []

    def load_with_small_memory(*args, **kwargs):
        model, processor = real_load(*args, **kwargs)

        def check(module, args, kwargs):
            rows = kwargs["input_ids"].shape[0]
            seen.append(rows)
            if module.training and rows > 4:  # chosen + rejected of more than 2 pairs do not "fit"
                raise torch.OutOfMemoryError(OOM)

        model.register_forward_pre_hook(check, with_kwargs=True)
        return model, processor

    monkeypatch.setattr(D.run, "load_training_model", load_with_small_memory)
    said: list[str] = []
    result = D.train(job(tmp_path / "oom"), pairs=pairs, ref_logps=ref, log_fn=said.append)
    assert "out of memory: per-device batch halved to 2 (gradient accumulation 2), restarting from the start" in said
    assert seen[0] == 8 and set(seen[1:]) == {4}  # one failed forward, then half-size micro-batches only
    assert result.global_step == clean.global_step == 2  # same global batch: same steps and checkpoints
    assert [c.step for c in result.checkpoints] == [c.step for c in clean.checkpoints]
    losses = [e["loss"] for e in result.log_history if "loss" in e]
    assert losses == pytest.approx([e["loss"] for e in clean.log_history if "loss" in e], rel=1e-4)


# -- the S3 run store unavailable -----------------------------------------------------------------------------------
@pytest.fixture()
def s3(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    port = free_port()
    state = {"server": moto_server(port), "port": port, "endpoint": f"http://127.0.0.1:{port}"}
    import fsspec

    fsspec.filesystem("s3", client_kwargs={"endpoint_url": state["endpoint"]}, skip_instance_cache=True).mkdir("runs")
    yield state
    state["server"].stop()


@pytest.mark.timeout(120)
def test_s3_store_down_for_seconds_mid_write_is_retried_with_no_partial_object(s3):
    import boto3

    store = RunStore("s3://runs/prefix", "r", endpoint_url=s3["endpoint"])
    first = store.write_bytes("iter-1/before.bin", b"before")
    frame = pd.DataFrame({"answer": [f"answer {i}" for i in range(2000)], "score": range(2000)})
    s3["server"].stop()  # S3 goes away ...

    def come_back():
        time.sleep(4)
        s3["server"] = moto_server(s3["port"])  # ... and is back 4 s later, same endpoint, same buckets

    threading.Thread(target=come_back, daemon=True).start()
    started = time.monotonic()
    ref = store.write_table("iter-1/pairs.parquet", frame, schema="pairs")  # issued while S3 is down
    assert time.monotonic() - started >= 3.5
    pd.testing.assert_frame_equal(store.read_table(ref), frame)  # complete: hash verified on read
    assert store.read_bytes(first) == b"before"
    client = boto3.client("s3", endpoint_url=s3["endpoint"])
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="runs")["Contents"])
    assert keys == ["prefix/r/iter-1/before.bin", "prefix/r/iter-1/pairs.parquet"]
    assert not client.list_multipart_uploads(Bucket="runs").get("Uploads")  # no dangling partial upload


class _Flaky:
    """An fsspec operation that fails `failures` times with `error`, then works."""

    def __init__(self, operation, failures: int, error: Exception):
        self.operation, self.failures, self.error, self.calls = operation, failures, error, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.operation(*args, **kwargs)


@pytest.mark.parametrize("failures, error, outcome", [
    (3, ConnectionResetError("connection reset by peer"), "written"),
    (9, TimeoutError("read timed out"), "unavailable"),
    (1, PermissionError("access denied"), "refused"),
])
def test_remote_store_retries_transient_failures_boundedly_and_never_leaves_a_partial_object(
        monkeypatch, failures, error, outcome):
    monkeypatch.setattr(store_module, "REMOTE_RETRY_DELAYS_S", (0.01, 0.01, 0.01, 0.01))
    store = RunStore(f"memory://reliability-{outcome}", "r")
    flaky = _Flaky(store.fs.pipe_file, failures, error)
    monkeypatch.setattr(store.fs, "pipe_file", flaky)
    data = b"x" * 100_000
    if outcome == "written":
        ref = store.write_bytes("iter-1/a.bin", data)
        assert flaky.calls == 4 and store.read_bytes(ref) == data
        return
    expected = StoreUnavailable if outcome == "unavailable" else PermissionError
    with pytest.raises(expected) as info:
        store.write_bytes("iter-1/a.bin", data)
    assert not store.exists("iter-1/a.bin")
    if outcome == "unavailable":
        assert flaky.calls == 5 and f"writing {store.uri('iter-1/a.bin')}: run store unavailable" in str(info.value)
        assert "after 5 attempts" in str(info.value) and "read timed out" in str(info.value)
    else:
        assert flaky.calls == 1  # a refused permission is not retried
