"""Task: one shard of prompts → n candidate answers each, from the current policy, and the shard's counts
(prompts, skipped_prompt_too_long naming the prompts, neutralised_question)."""

from __future__ import annotations

from prefect import task

from rlaifv_core.config import ModelSpec, SamplingConfig, StoreConfig
from rlaifv_core.models import open_model
from rlaifv_core.models.served import serving
from rlaifv_core.store import ArtifactRef

from .common import (Progress, artifact_key, counts_table, holds_models, local_checkpoint, stage_cache, stage_hook,
                     store_of)


@task(name="sample", cache_policy=stage_cache("rlaifv_core.feedback.sampling", "rlaifv_core.backends"),
      persist_result=True, retries=2, retry_delay_seconds=5)
@holds_models("sample")
def sample_shard(prompts_ref: ArtifactRef, shard: tuple[int, int], policy: ModelSpec, policy_checkpoint: ArtifactRef | None,
                 policy_fingerprint: str, sampling: SamplingConfig, store: StoreConfig,
                 out_path: str) -> tuple[ArtifactRef, dict]:
    stage_hook("sample", out_path)
    import rlaifv_core.feedback.sampling as core

    run_store = store_of(store)
    prompts = run_store.read_table(prompts_ref).iloc[shard[0]:shard[1]]
    counts: dict = {}
    with serving(policy, local_checkpoint(store, policy_checkpoint)) as (spec, checkpoint):
        backend = open_model(spec, checkpoint)
        candidates = core.sample_candidates(backend, prompts, sampling,
                                            progress=Progress(f"sampling {shard[0]}-{shard[1]}"), counts=counts)
        del backend
    candidates["policy_id"] = policy_fingerprint
    ref = run_store.write_table(out_path, candidates, schema="candidates")
    counts_table(artifact_key(store.run_name, out_path, "counts"), "sample", counts)
    return ref, counts
