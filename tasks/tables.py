"""Task: concatenate shard tables into one artifact (order fixed by shard order)."""

from __future__ import annotations

from prefect import task

from rlaifv_core.config import StoreConfig
from rlaifv_core.store import ArtifactRef

from .common import stage_cache, store_of


@task(name="merge", cache_policy=stage_cache(), persist_result=True)
def merge_tables(refs: list[ArtifactRef], schema: str, store: StoreConfig, out_path: str) -> ArtifactRef:
    import pandas as pd

    run_store = store_of(store)
    frame = pd.concat([run_store.read_table(ref) for ref in refs], ignore_index=True)
    return run_store.write_table(out_path, frame, schema=schema)
