"""Task: evaluate one model (a checkpoint, or the configured policy) on one benchmark."""

from __future__ import annotations

from prefect import task

from rlaifv_core.config import EvalConfig, ModelSpec, StoreConfig
from rlaifv_core.models import open_model
from rlaifv_core.store import ArtifactRef

from .common import holds_models, local_checkpoint, stage_cache, stage_hook, store_of


# Every module a benchmark's result depends on: the registry, each benchmark, their judge, COCO's
# vocabulary and the generation code; and the content of the benchmark's data files.


def _data_files(inputs: dict) -> dict[str, list[str]]:
    from rlaifv_core.eval_data import data_files

    return data_files(inputs["eval_config"], inputs["benchmark"])


@task(name="evaluate",
      cache_policy=stage_cache("rlaifv_core.evals", "rlaifv_core.images", "rlaifv_core.backends", plugins=True,
                               files=_data_files),
      persist_result=True, retries=2, retry_delay_seconds=5)
@holds_models("evaluate")
def evaluate_model(policy: ModelSpec, checkpoint: ArtifactRef | None, model_fingerprint: str, benchmark: str,
                   eval_config: EvalConfig, judge: ModelSpec | None, store: StoreConfig, out_path: str) -> ArtifactRef:
    stage_hook("evaluate", out_path)
    import rlaifv_core.evals.registry as registry

    backend = open_model(policy, local_checkpoint(store, checkpoint))
    judge_backend = open_model(judge) if judge is not None else None
    record = registry.run_benchmark(benchmark, backend, eval_config, judge_backend)
    record["model_fingerprint"] = model_fingerprint
    return store_of(store).write_json(out_path, record, schema=f"eval:{benchmark}")
