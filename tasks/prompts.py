"""Task: this iteration's prompt slice → `iter-<k>/prompts.parquet`.

Keyed by the prompts section and the content of the file it names (edited in place: recomputed; touched
only: a cache hit), the iteration, the seed and the source of the code that reads it."""

from __future__ import annotations

from prefect import task

from rlaifv_core.config import PromptsConfig, StoreConfig
from rlaifv_core.store import ArtifactRef

from .common import artifact_key, counts_table, stage_cache, stage_hook, store_of


def _source_files(inputs: dict) -> dict[str, list[str]]:
    """The prompt file (or folder) the source names, keyed by content; a registered source is code."""
    from rlaifv_core import plugins
    from rlaifv_core.fingerprints import local_files

    source = inputs["prompts"].source
    return {} if source in plugins.prompt_sources else {"prompts.source": local_files(source)}


@task(name="prompts",
      cache_policy=stage_cache("rlaifv_core.feedback.prompts", "rlaifv_core.images", "rlaifv_core.backends.user_text",
                               plugins=True, files=_source_files),
      persist_result=True)
def make_prompts(prompts: PromptsConfig, iteration: int, seed: int, store: StoreConfig) -> tuple[ArtifactRef, dict]:
    stage_hook("prompts", f"iter-{iteration}")
    import rlaifv_core.feedback.prompts as core

    frame, counts = core.load_prompts(prompts, iteration=iteration, seed=seed)
    ref = store_of(store).write_table(f"iter-{iteration}/prompts.parquet", frame, schema="prompts")
    counts_table(artifact_key(store.run_name, "iter", iteration, "prompts"), "prompts", counts)
    return ref, counts
