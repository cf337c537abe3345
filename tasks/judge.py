"""Task: one shard of prompts' claims → labeler verdicts and answer scores."""

from __future__ import annotations

from prefect import task

from rlaifv_core.config import JudgeConfig, ModelSpec, StoreConfig
from rlaifv_core.models import open_model
from rlaifv_core.models.served import serving
from rlaifv_core.store import ArtifactRef

from .common import Progress, holds_models, stage_cache, stage_hook, store_of


@task(name="judge", cache_policy=stage_cache("rlaifv_core.feedback.judge", "rlaifv_core.backends"),
      persist_result=True, retries=2, retry_delay_seconds=5)
@holds_models("judge")
def judge_shard(prompts_ref: ArtifactRef, claims_ref: ArtifactRef, shard: tuple[int, int], labeler: ModelSpec,
                labeler_fingerprint: str, judge: JudgeConfig, store: StoreConfig, out_path: str) -> ArtifactRef:
    stage_hook("judge", out_path)
    import rlaifv_core.feedback.judge as core

    run_store = store_of(store)
    prompts = run_store.read_table(prompts_ref).iloc[shard[0]:shard[1]]
    claims = run_store.read_table(claims_ref)
    claims = claims[claims["prompt_id"].isin(set(prompts["prompt_id"]))]
    with serving(labeler) as (spec, _):
        backend = open_model(spec)
        verdicts = core.judge_candidates(backend, prompts, claims, judge,
                                         progress=Progress(f"judging {shard[0]}-{shard[1]}"))
        del backend
    verdicts["labeler_id"] = labeler_fingerprint
    return run_store.write_table(out_path, verdicts, schema="verdicts")
