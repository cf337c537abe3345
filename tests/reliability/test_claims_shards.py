"""The claims stage in shards (issue 15): a splitter that fails on one shard fails the stage; the re-run
recomputes that shard only (the finished ones are cache hits, sampling is not redone), and the merged
claims are the claims one pass over all candidates gives."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from rlaifv_core.backends.base import EndpointError

from .conftest import tiny_config

pytestmark = pytest.mark.timeout(240)


def _starts(log) -> set[tuple[str, str]]:
    lines = log.read_text().splitlines() if log.exists() else []
    return {tuple(line.partition(" ")[::2]) for line in lines}


def test_a_failed_claims_shard_is_the_only_one_the_rerun_recomputes(prefect_api, tmp_path, tiny_model_dir,
                                                                     monkeypatch):
    from prefect.context import TaskRunContext

    import rlaifv_core.feedback.claims as claims_core
    import rlaifv_core.feedback.questions as questions_core
    from flows.generate import generate

    log = tmp_path / "stages.log"
    monkeypatch.setenv("RLAIFV_TEST_STAGE_LOG", str(log))
    config = tiny_config(tmp_path / "runs", tiny_model_dir, "prompts.per_iteration=6", run="claims-shards")
    shards = tmp_path / "runs" / "claims-shards" / "iter-1" / "shards"
    real_split = claims_core.split_claims
    split_by, endpoint_down = [], [True]

    def split_failing_on_shard_1(pairs, *args, **kwargs):
        name = TaskRunContext.get().task_run.name
        split_by.append(name)
        if endpoint_down[0] and name == "claims-iter-1-shard-1":  # the endpoint fails once the other shards are done
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all((shards / f"claims-{i:04d}.parquet").exists()
                                                          for i in (0, 2)):
                time.sleep(0.05)
            time.sleep(1.0)  # their task results persisted too
            raise EndpointError("splitter at http://splitter.test/v1: HTTP 503", endpoint="http://splitter.test/v1",
                                model="splitter")
        return real_split(pairs, *args, **kwargs)

    monkeypatch.setattr(claims_core, "split_claims", split_failing_on_shard_1)
    with pytest.raises(EndpointError, match="splitter.test"):
        generate(config, iteration=1)
    assert sorted(split_by) == [f"claims-iter-1-shard-{i}" for i in range(3)]
    assert sorted(p.name for p in shards.glob("claims-*")) == ["claims-0000.parquet", "claims-0002.parquet"]
    assert not (shards.parent / "claims.parquet").exists() and not (shards.parent / "verdicts.parquet").exists()

    log.unlink()
    split_by.clear()
    endpoint_down[0] = False
    result = generate(config, iteration=1)  # the endpoint is back
    started = _starts(log)
    assert {where for stage, where in started if stage == "claims"} == {"iter-1/shards/claims-0001.parquet"}
    assert split_by == ["claims-iter-1-shard-1"]
    assert not any(stage in ("prompts", "sample") for stage, _ in started), started

    # the merged shards are the claims of one pass over every candidate
    candidates = pd.read_parquet(result.candidates.uri)
    questions = pd.read_parquet(result.prompts.uri).set_index("prompt_id")["question"]
    pairs = [(questions[p], a) for p, a in zip(candidates["prompt_id"], candidates["answer"])]
    seed = config.iteration.seed * 1000 + 1
    whole = real_split(pairs, config.models.splitter, config.claims, seed=seed)
    rewritten = questions_core.rewrite_questions([r.claims for r in whole], config.models.rewriter, config.claims,
                                                 seed=seed)
    claims = pd.read_parquet(result.claims.uri)
    assert len(claims) == len(candidates) == 6 * 4
    assert [list(c) for c in claims["claims"]] == [r.claims for r in whole]
    assert [list(q) for q in claims["questions"]] == [q.questions for q in rewritten]
    assert list(claims["prompt_id"]) == list(candidates["prompt_id"])
    assert int(result.counts["claims"]["answers"]) == 24
