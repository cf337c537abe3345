"""Task: this iteration's prompt slice → `iter-<k>/prompts.parquet`."""

from __future__ import annotations

from prefect import task

from rlaifv_core.config import PromptsConfig, StoreConfig
from rlaifv_core.store import ArtifactRef

from .common import artifact_key, counts_table, stage_cache, stage_hook, store_of


@task(name="prompts", cache_policy=stage_cache("rlaifv_core.feedback.prompts", "rlaifv_core.images",
                                                 "rlaifv_core.backends.user_text", plugins=True), persist_result=True)
def make_prompts(prompts: PromptsConfig, iteration: int, seed: int, store: StoreConfig) -> tuple[ArtifactRef, dict]:
    stage_hook("prompts", f"iter-{iteration}")
    import rlaifv_core.feedback.prompts as core

    frame, counts = core.load_prompts(prompts, iteration=iteration, seed=seed)
    ref = store_of(store).write_table(f"iter-{iteration}/prompts.parquet", frame, schema="prompts")
    counts_table(artifact_key(store.run_name, "iter", iteration, "prompts"), "prompts", counts)
    return ref, counts
