"""The parent flow end to end on the smallest settings: artifacts, summary, caching, resume, retries."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlaifv_core.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def tiny_overrides(store: Path, model_dir: Path, run: str = "t") -> list[str]:
    return [f"store.url={store}", f"store.run_name={run}", "iteration.iterations=2", "prompts.per_iteration=8",
            "sampling.n=4", "sampling.max_new_tokens=10", "sampling.shard_size=8", "dpo.batch_size=4",
            "dpo.checkpoints_per_epoch=2", f"models.policy.name_or_path={model_dir}",
            f"models.labeler.name_or_path={model_dir}", "judge.low_mass_error=false", "pairs.builder=best_of_n", "pairs.length_balance=false",
            "eval.shapes_scenes=10", "eval.max_new_tokens=10", "iteration.retry_delay_s=0"]


@pytest.mark.slow
def test_two_iterations_write_summary_and_rerun_is_cached(prefect_server, tmp_path, tiny_model_dir, monkeypatch):
    from prefect.client.orchestration import get_client
    from flows.iterate import iterate
    import rlaifv_core.training
    import rlaifv_core.evals.registry
    import rlaifv_core.feedback.sampling

    config = load_config("configs/shapes.yaml", tiny_overrides(tmp_path / "runs", tiny_model_dir))
    summary = iterate(config)
    root = tmp_path / "runs" / "t"
    assert [row["iteration"] for row in summary["iterations"]] == [0, 1, 2]
    assert (root / "summary.png").read_bytes()[:4] == b"\x89PNG"
    stored = json.loads((root / "summary.json").read_text())
    assert stored["iterations"][1]["pairs"] > 0 and "shapes.chair_i" in stored["iterations"][2]["metrics"]
    assert list((root / "iter-1" / "checkpoints").iterdir())  # DPO ran and wrote checkpoints
    for k in (1, 2):
        assert (root / f"iter-{k}" / "pairs.parquet").exists() and (root / f"iter-{k}" / "selection.json").exists()
        # selection never sees the report split ...
        scores = json.loads((root / f"iter-{k}" / "selection.json").read_text())["scores"]
        assert scores and not any(key.startswith("shapes_report.") for s in scores.values() for key in s)
    # ... which is measured on the start and on every selected policy (a kept start keeps its scores)
    rows = stored["iterations"]
    assert all({"shapes_report.chair_i", "shapes_report.f1", "shapes_report.words_per_answer"} <= set(r["report"])
               for r in rows)
    assert "shapes.f1" in rows[0]["metrics"] and rows[0]["report"] != rows[0]["metrics"]
    for before, row in zip(rows, rows[1:]):
        if row["selected"] == "start":
            assert row["report"] == before["report"]
        else:
            assert (root / f"iter-{row['iteration']}" / "eval" / row["selected"] / "shapes_report.json").exists()

    async def read_back():
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        async with get_client() as client:
            artifacts = {a.key: a for a in await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["t-iterations", "t-summary"])))}
            return artifacts, await client.read_flow_runs(), await client.read_task_runs(limit=200)

    import asyncio

    artifacts, flow_runs, task_runs = asyncio.run(read_back())
    assert {"t-iterations", "t-summary"} <= set(artifacts)
    table = artifacts["t-iterations"].data
    table = json.loads(table) if isinstance(table, str) else table
    assert [row["iteration"] for row in table] == [0, 1, 2]
    columns = list(table[0])  # the UI's columns: those of the first row
    assert all(list(row) == columns for row in table)
    assert any(c.startswith("dpo.") for c in columns) and any(c.startswith("skipped.") for c in columns)
    assert {"shapes.chair_i", "shapes_report.chair_i", "shapes_report.f1"} <= set(columns)
    assert {"audit.chosen_fewer_hallucinations", "audit.labeler_claim_precision"} <= set(columns)  # shapes' pair audit
    assert table[0]["audit.chosen_fewer_hallucinations"] == "" and 0 <= table[1]["audit.chosen_fewer_hallucinations"] <= 1
    assert table[0]["dpo.loss"] == "" and table[1]["dpo.loss"] != ""
    summary_md = artifacts["t-summary"].data
    assert "](data:image/png;base64," in summary_md and str(root / "summary.json") in summary_md
    assert str(root / "config.json") in summary_md and "After 2 iterations" in summary_md
    assert "on the report split (never used for selection): shapes_report.chair_s" in summary_md
    assert (summary["final_policy"] or "the starting policy") in summary_md

    names = {r.name for r in flow_runs}
    assert {"t", "iteration-1", "iteration-2", "generate-iter-1", "train-iter-2", "evaluate-iter-0",
            "evaluate-iter-2"} <= names, names
    assert all("run:t" in r.tags for r in flow_runs), [(r.name, r.tags) for r in flow_runs]
    # this tiny labeler accepts nearly every claim: the run says so in its state, the evaluations stay plain
    assert runs_named(flow_runs, "t").state.name == ("Completed with warnings" if summary["warnings"] else "Completed")
    assert all(r.state.name == "Completed" for r in flow_runs if r.name.startswith("evaluate-"))
    assert all("iteration:2" in r.tags for r in flow_runs if r.name.endswith("-2"))
    task_names = {r.name for r in task_runs}
    assert {"prompts-iter-1", "sample-iter-1-shard-0", "judge-iter-2-shard-0", "claims-iter-1-shard-0", "pairs-iter-2",
            "reference-logps-iter-1", "train-dpo-iter-2", "evaluate-iter-0-start-shapes",
            "report-iter-0-start-shapes_report"} <= task_names, task_names
    assert any(re.fullmatch(r"evaluate-iter-1-step-\d+-shapes", n) for n in task_names)
    assert all("run:t" in r.tags and any(t.startswith("iteration:") for t in r.tags) for r in task_runs)

    def boom(*args, **kwargs):
        raise AssertionError("recomputed a stage of an unchanged run")

    monkeypatch.setattr(rlaifv_core.feedback.sampling, "sample_candidates", boom)
    monkeypatch.setattr(rlaifv_core.training.run, "train", boom)
    monkeypatch.setattr(rlaifv_core.evals.registry, "run_benchmark", boom)
    again = iterate(config)
    assert again["iterations"] == summary["iterations"]


@pytest.mark.slow
def test_a_model_task_failing_once_with_a_cuda_error_is_retried(prefect_server, tmp_path, tiny_model_dir, monkeypatch):
    from flows.generate import generate
    import rlaifv_core.feedback.sampling

    real = rlaifv_core.feedback.sampling.sample_candidates
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(rlaifv_core.feedback.sampling, "sample_candidates", flaky)
    config = load_config("configs/shapes.yaml", tiny_overrides(tmp_path / "runs", tiny_model_dir))
    result = generate(config, iteration=1)
    assert len(calls) == 2 and result.candidates.rows == 8 * 4


def runs_named(flow_runs, name: str):
    return next(r for r in flow_runs if r.name == name)


# One iteration is enough to be killed in, and resumed from, its DPO stage: about half the work of two.
ONE_ITERATION = ["iteration.iterations=1", "eval.shapes_scenes=4"]


def _run_iterate(store: Path, model_dir: Path, env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "flows" / "iterate.py"), *tiny_overrides(store, model_dir),
                             *ONE_ITERATION, *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


@pytest.mark.slow
def test_killed_during_dpo_then_resumed_equals_uninterrupted(tmp_path, tiny_model_dir):
    """kill -9 inside DPO of iteration 1 (parked there by the test-only stage hook after its first
    step), start again: the resumed run's selections and metrics equal an uninterrupted run's."""
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    stage_log = tmp_path / "stages.log"
    killed_store = tmp_path / "killed"
    proc = _run_iterate(killed_store, tiny_model_dir, {**env, "RLAIFV_TEST_STAGE_LOG": str(stage_log),
                                                        "RLAIFV_TEST_PAUSE_AT": "dpo-step@step-1"})
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if stage_log.exists() and "PAUSED dpo-step" in stage_log.read_text():
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the flow ended before DPO was reached:\n" + proc.stdout.read()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed_store / "t" / "summary.json").exists()
    assert (killed_store / "t" / "iter-1" / "pairs.parquet").exists()  # finished stages stay finished

    stage_log.write_text("")
    resumed = _run_iterate(killed_store, tiny_model_dir, {**env, "RLAIFV_TEST_STAGE_LOG": str(stage_log)})
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-3000:]
    recomputed = stage_log.read_text()
    assert "sample iter-1" not in recomputed and "judge iter-1" not in recomputed  # no finished stage ran again
    clean = _run_iterate(tmp_path / "clean", tiny_model_dir, env)
    clean_out, _ = clean.communicate(timeout=600)
    assert clean.returncode == 0, clean_out[-3000:]

    a = json.loads((killed_store / "t" / "summary.json").read_text())["iterations"]
    b = json.loads((tmp_path / "clean" / "t" / "summary.json").read_text())["iterations"]
    assert [r["selected"] for r in a] == [r["selected"] for r in b]
    for row_a, row_b in zip(a, b):
        for key, value in row_b["metrics"].items():
            assert row_a["metrics"][key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.slow
def test_the_main_job_prints_no_error_lines_and_no_loading_bars_offline(tmp_path, tiny_model_dir):
    """`python flows/iterate.py` on a machine without network, with none of the settings set: its temporary
    Prefect server sends no telemetry (which would log `ERROR … Failed to send telemetry`) and model loads
    draw no `Loading weights` progress bars (flows/quiet.py), and the run's last logs reach the server
before it stops."""
    from flows.quiet import QUIET_DEFAULTS

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k not in QUIET_DEFAULTS}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect-home"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}  # a fresh database on a busy machine
    overrides = [*tiny_overrides(tmp_path / "runs", tiny_model_dir), "iteration.iterations=1", "prompts.per_iteration=4",
                 "sampling.n=2", "eval.shapes_scenes=4", "dpo.checkpoints_per_epoch=1"]
    done = subprocess.run([sys.executable, str(ROOT / "flows" / "iterate.py"), *overrides], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "Starting temporary server" in output and "summary:" in output  # the run this is about
    assert [line for line in output.splitlines() if "ERROR" in line or "Loading weights" in line] == []
    # logs still queued when the flow returned are sent before the server stops (flows/signals.py): not
    # retried for a minute against a stopped server
    assert "Error logging to API" not in output, output[-2000:]
