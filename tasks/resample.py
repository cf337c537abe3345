"""Task: answers with a rejected claim → on-policy corrections (`resample.parquet`; pairs.builder resample).

Runs in the generate flow after judging, only when `pairs.builder` is `resample`; see
rlaifv_core/feedback/resample.py.
"""

from __future__ import annotations

from prefect import task

from rlaifv_core.config import ClaimsConfig, JudgeConfig, ModelsConfig, PairsConfig, SamplingConfig, StoreConfig
from rlaifv_core.models import open_model
from rlaifv_core.models.served import serving
from rlaifv_core.store import ArtifactRef

from .claims import CLAIM_MODULES, _role
from .common import (Progress, artifact_key, counts_table, holds_models, local_checkpoint, stage_cache, stage_hook,
                     store_of)


@task(name="resample", cache_policy=stage_cache("rlaifv_core.feedback.resample", "rlaifv_core.feedback.judge",
                                                "rlaifv_core.backends", *CLAIM_MODULES),
      persist_result=True, retries=2, retry_delay_seconds=5)
@holds_models("resample")
def resample_corrections(prompts_ref: ArtifactRef, candidates_ref: ArtifactRef, claims_ref: ArtifactRef,
                         verdicts_ref: ArtifactRef, models: ModelsConfig, policy_checkpoint: ArtifactRef | None,
                         fingerprints: tuple[str, ...], claims: ClaimsConfig, judge: JudgeConfig,
                         sampling: SamplingConfig, pairs: PairsConfig, seed: int, store: StoreConfig,
                         out_path: str) -> tuple[ArtifactRef, dict]:
    """`fingerprints`: the policy's, splitter's, rewriter's and labeler's (the cache key's models)."""
    stage_hook("resample", out_path)
    import rlaifv_core.feedback.resample as core

    run_store = store_of(store)
    keys = ["prompt_id", "sample_idx"]
    scored = (run_store.read_table(candidates_ref)
              .merge(run_store.read_table(claims_ref), on=keys, validate="one_to_one")
              .merge(run_store.read_table(verdicts_ref).drop(columns=["labeler_id"], errors="ignore"), on=keys,
                     validate="one_to_one"))
    policy = open_model(models.policy, local_checkpoint(store, policy_checkpoint))  # hf only (config check)
    # the continuations are split and judged by the very roles the claims and judge stages use, served alike
    with serving(models.splitter) as (splitter, _), serving(models.labeler) as (labeler, _):
        frame, counts = core.resample_corrections(
            scored, run_store.read_table(prompts_ref), policy, _role(splitter), _role(models.rewriter),
            open_model(labeler), claims, judge, sampling, k=pairs.resample_k, seed=seed,
            progress=lambda phase: Progress(f"resample: {phase}"))
    ref = run_store.write_table(out_path, frame, schema="corrections")
    counts_table(artifact_key(store.run_name, out_path, "counts"), "resample", counts)
    return ref, counts
