"""The generate flow under a Prefect test server: stages run, artifacts land, re-runs are cached."""

from __future__ import annotations

import pandas as pd

from rlaifv_core.config import load_config


def _tiny_config(tmp_path, model_dir, **more):
    overrides = [f"store.url={tmp_path / 'runs'}", "store.run_name=t", "prompts.per_iteration=6", "sampling.n=3",
                 "sampling.max_new_tokens=8", "sampling.shard_size=4", f"models.policy.name_or_path={model_dir}",
                 f"models.labeler.name_or_path={model_dir}", "judge.low_mass_error=false", "pairs.builder=paper", "eval.shapes_scenes=8",
                 "eval.max_new_tokens=8", "iteration.retry_delay_s=0"] + [f"{k}={v}" for k, v in more.items()]
    return load_config("configs/shapes.yaml", overrides)


def _forbid(monkeypatch, *targets):
    def boom(*args, **kwargs):
        raise AssertionError("a stage ran although its inputs were unchanged")

    for module, name in targets:
        monkeypatch.setattr(module, name, boom)


def test_generate_flow_runs_and_second_run_is_all_cache_hits(prefect_server, tmp_path, tiny_model_dir, monkeypatch):
    from flows.generate import generate
    import rlaifv_core.feedback.claims
    import rlaifv_core.feedback.judge
    import rlaifv_core.feedback.pairs
    import rlaifv_core.feedback.prompts
    import rlaifv_core.feedback.sampling

    config = _tiny_config(tmp_path, tiny_model_dir)
    first = generate(config, iteration=1)
    assert first.prompts.rows == 6 and first.candidates.rows == 18
    prompts = pd.read_parquet(first.prompts.uri)
    verdicts = pd.read_parquet(first.verdicts.uri)
    assert len(verdicts) == 18 and (verdicts["score"] == -verdicts["n_rejected"]).all()
    assert set(first.counts) == {"prompts", "sample", "claims", "pairs"}
    assert prompts["prompt_id"].is_unique

    _forbid(monkeypatch, (rlaifv_core.feedback.sampling, "sample_candidates"), (rlaifv_core.feedback.judge, "judge_candidates"),
            (rlaifv_core.feedback.pairs, "build_pairs"), (rlaifv_core.feedback.claims, "split_claims"),
            (rlaifv_core.feedback.prompts, "load_prompts"))
    second = generate(config, iteration=1)
    assert second == first


def test_changing_pair_settings_recomputes_only_pair_assembly(prefect_server, tmp_path, tiny_model_dir, monkeypatch):
    from flows.generate import generate
    import rlaifv_core.feedback.claims
    import rlaifv_core.feedback.judge
    import rlaifv_core.feedback.pairs
    import rlaifv_core.feedback.sampling

    config = _tiny_config(tmp_path, tiny_model_dir)
    first = generate(config, iteration=1)
    _forbid(monkeypatch, (rlaifv_core.feedback.sampling, "sample_candidates"), (rlaifv_core.feedback.judge, "judge_candidates"),
            (rlaifv_core.feedback.claims, "split_claims"))
    calls = []
    real_build = rlaifv_core.feedback.pairs.build_pairs
    monkeypatch.setattr(rlaifv_core.feedback.pairs, "build_pairs", lambda *a, **k: calls.append(1) or real_build(*a, **k))
    changed = config.model_copy(update={"pairs": config.pairs.model_copy(update={"min_gap": 2})})
    second = generate(changed, iteration=1)
    assert second.candidates == first.candidates and second.verdicts == first.verdicts
    assert calls == [1]  # pair assembly, and only it, ran again


def test_cached_rerun_of_the_script_loads_no_model_libraries(prefect_server, tmp_path, tiny_model_dir):
    """`python flows/generate.py` run twice: the second run is all cache hits (no stage body starts) and
    never imports torch, transformers, spaCy or pandas, which is what keeps it a small fraction of the first."""
    import json
    import os
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    from tests.helpers import ROOT

    overrides = [f"store.url={tmp_path / 'runs'}", "store.run_name=t", "prompts.per_iteration=4", "sampling.n=2",
                 "sampling.max_new_tokens=8", f"models.policy.name_or_path={tiny_model_dir}",
                 f"models.labeler.name_or_path={tiny_model_dir}", "judge.low_mass_error=false"]
    probe = ("import json, runpy, sys; sys.argv = ['flows/generate.py', *sys.argv[1:]]; "
             "runpy.run_path('flows/generate.py', run_name='__main__'); "
             "print('LOADED', json.dumps([m for m in ('torch', 'transformers', 'spacy', 'pandas') if m in sys.modules]))")
    stage_log = tmp_path / "stages.log"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "RLAIFV_TEST_STAGE_LOG": str(stage_log)}

    def run() -> list[str]:
        done = subprocess.run([sys.executable, "-c", probe, *overrides], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        return json.loads(done.stdout.rsplit("LOADED", 1)[1])

    assert "torch" in run()  # the first run samples and judges with the tiny model
    first_stages = stage_log.read_text().splitlines()
    assert {line.split()[0] for line in first_stages} >= {"prompts", "sample", "claims", "judge", "pairs"}
    assert run() == []
    assert stage_log.read_text().splitlines() == first_stages  # no stage body started on the re-run


def test_best_of_n_runs_are_named_and_tagged_like_the_other_flows(prefect_server, tmp_path, tiny_model_dir):
    """The best-of-n run is `best-of-n-<store.run_name>`, its tasks say what they run, and every one of them
    carries the run and iteration tags (the UI's filters)."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId, TaskRunFilter

    from flows.best_of_n import best_of_n_flow

    config = _tiny_config(tmp_path, tiny_model_dir, **{"store.run_name": "bon", "prompts.per_iteration": 2})
    state = best_of_n_flow(config, reward_model=str(tiny_model_dir), reference=str(tiny_model_dir), n=2,
                           iteration=2, return_state=True)
    assert state.is_completed()

    async def read_back():
        async with get_client() as client:
            (run,) = await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["best-of-n"])),
                                                 flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
            tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
                                                task_run_filter=TaskRunFilter())
            return run, tasks

    run, tasks = asyncio.run(read_back())
    assert run.name == "best-of-n-bon" and {"run:bon", "iteration:2"} <= set(run.tags)
    assert {t.name for t in tasks} == {"best-of-n-sample-iter-2", "best-of-n-score-iter-2", "best-of-n-write-iter-2"}
    assert all({"run:bon", "iteration:2"} <= set(t.tags) for t in tasks), [(t.name, t.tags) for t in tasks]
