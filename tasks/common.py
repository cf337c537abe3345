"""What every stage task shares: the run store, cache policy, result storage, progress reporting.

Tasks are thin: read artifact refs → call rlaifv_core → write an artifact → return its ref.
Cache keys are built from the task's inputs (artifact refs carry content hashes; config sections
and model fingerprints are plain values), the task's source and the source of the core modules
it calls, so an unchanged re-run is all cache hits and a changed setting recomputes exactly what
depends on it. Task modules import the science inside the task body and name its modules to the
cache policy by string: a run whose tasks are all cache hits never loads torch, spaCy or pandas.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import time
from pathlib import Path
from typing import Any, Optional

from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.logging import get_run_logger

from rlaifv_core.models import holding_models, model_fingerprint
from rlaifv_core.store import ArtifactRef, RunStore


def source_files(name: str) -> list[Path]:
    """The source files of a module, or every .py file under a package (sorted), found without
    importing them (a package's own `__init__` aside, which importlib runs to find submodules)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin:
        raise ModuleNotFoundError(f"cache policy names {name!r}, which is not an importable module")
    if spec.submodule_search_locations:
        return sorted(p for folder in spec.submodule_search_locations for p in Path(folder).rglob("*.py"))
    return [Path(spec.origin)]


def plugin_packages() -> list[str]:
    """The packages of the installed plug-ins (entry points of rlaifv_core.plugins' group), whose code
    a stage runs when it asks for a plug-in's prompt source, benchmark or pair builder."""
    from importlib.metadata import entry_points

    from rlaifv_core.plugins import ENTRY_POINT_GROUP

    return sorted({ep.module.rpartition(".")[0] or ep.module for ep in entry_points(group=ENTRY_POINT_GROUP)})


class CoreSource(CachePolicy):
    """Invalidates the cache when the source of the science a task calls changes.

    Modules (or whole packages) are named, not imported: a run whose every task is a cache hit must
    not pay for importing torch or spaCy just to hash the files that would use them. With
    `plugins=True` the installed plug-ins' packages are hashed too (a stage that runs their code)."""

    def __init__(self, *module_names: str, plugins: bool = False):
        super().__init__()
        self.module_names = module_names
        self.plugins = plugins

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs) -> Optional[str]:
        digest = hashlib.sha256()
        names = list(self.module_names) + (plugin_packages() if self.plugins else [])
        for name in names:
            for file in source_files(name):
                digest.update(f"{name}:{file.name}\0".encode())
                digest.update(file.read_bytes())
        return digest.hexdigest()


def stage_cache(*core_module_names: str, plugins: bool = False) -> CachePolicy:
    return INPUTS + TASK_SOURCE + CoreSource(*core_module_names, plugins=plugins)


def holds_models(stage: str):
    """Decorator (under `@task`) of a model-running task body: the models it opens are held for the
    body only and dropped, collected and their GPU memory returned once it has returned (its frame,
    hence its references, gone). Source-based cache keys see the body: the wrapper is unwrapped."""
    def wrap(body):
        @functools.wraps(body)
        def held(*args, **kwargs):
            with holding_models(stage):
                return body(*args, **kwargs)

        return held

    return wrap


def store_of(store_config) -> RunStore:
    return RunStore.from_config(store_config)


def result_storage_for(store_config):
    """Prefect result storage inside the run store, so the store alone is enough to resume."""
    from prefect.filesystems import RemoteFileSystem

    store = store_of(store_config)
    if store.is_local:
        path = Path(store.root) / ".prefect-results"
        path.mkdir(parents=True, exist_ok=True)
        return path  # Prefect reads a Path as a local folder (a plain string would be a block slug)
    # A remote store needs a saved block. It holds the bucket path and endpoint only: credentials
    # stay in the AWS_* environment of whoever runs the flow.
    basepath = store.uri(".prefect-results")
    settings = {"client_kwargs": {"endpoint_url": store_config.endpoint_url}} if store_config.endpoint_url else {}
    name = "rlaifv-results-" + hashlib.sha256(f"{basepath}|{settings}".encode()).hexdigest()[:12]
    RemoteFileSystem(basepath=basepath, settings=settings).save(name, overwrite=True)
    return f"remote-file-system/{name}"


def retry_options(iteration_config) -> dict:
    """`with_options` of a model-running task: the run's retries (a GPU fault, a dropped endpoint)."""
    return {"retries": iteration_config.retries, "retry_delay_seconds": iteration_config.retry_delay_s}


def checkpoint_fingerprint(spec, checkpoint: ArtifactRef | None) -> str:
    """Identity of the model a stage runs: a run-store checkpoint's manifest hash (what
    `model_fingerprint` of its downloaded folder gives, without downloading it), else the spec's."""
    return checkpoint.sha256[:16] if checkpoint is not None else model_fingerprint(spec)


def local_checkpoint(store_config, ref: ArtifactRef | None) -> Path | None:
    return None if ref is None else store_of(store_config).local_folder(ref)


class Progress:
    """A Prefect progress artifact plus a console progress line, updated at most every second."""

    def __init__(self, label: str, total: int | None = None):
        self.label = label
        self.logger = get_run_logger()
        self.started = time.time()
        self.last = 0.0
        try:
            self.artifact_id = create_progress_artifact(progress=0.0, description=label)
        except Exception:  # noqa: BLE001 - outside a run (tests of core code): console only
            self.artifact_id = None

    def __call__(self, done: int, total: int) -> None:
        now = time.time()
        if now - self.last < 1.0 and done < total:
            return
        self.last = now
        percent = 100.0 * done / max(total, 1)
        elapsed = now - self.started
        eta = elapsed / max(done, 1) * (total - done)
        bar = "#" * int(percent // 5)
        print(f"\r{self.label:<28} [{bar:<20}] {done}/{total} {percent:5.1f}% {elapsed:5.0f}s eta {eta:4.0f}s",
              end="\n" if done >= total else "", flush=True)
        if self.artifact_id is not None:
            update_progress_artifact(self.artifact_id, progress=percent)


def uniform_rows(rows: list[dict]) -> list[dict]:
    """Every row with the same keys, in first-seen order; a value a row lacks is empty ("").

    Prefect's UI takes a table artifact's columns from its first row: a key missing there would
    never be shown as a column."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return [{key: ("" if row.get(key) is None else row[key]) for key in columns} for row in rows]


def table_artifact(key: str, rows: list[dict], description: str) -> None:
    """A table artifact whose every row has every column (`uniform_rows`)."""
    create_table_artifact(key=key, table=uniform_rows(rows), description=description)


def counts_table(key: str, stage: str, counts: dict) -> None:
    """A table artifact of a stage's counts (in, out, skipped and why)."""
    rows = [{"stage": stage, "count": name, "value": str(value)} for name, value in counts.items()]
    table_artifact(key, rows, f"{stage}: counts")


def artifact_key(*parts: Any) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    text = "-".join(str(p) for p in parts).lower()
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")[:120]


def stage_hook(stage: str, where: str = "") -> None:
    """Test-only fault injection (tests/reliability), inert unless these variables are set.

    RLAIFV_TEST_STAGE_LOG=<file>: append "<stage> <where>" each time a stage's body starts (a cache
    hit never gets here), so a test can tell which stages a re-run recomputed.
    RLAIFV_TEST_PAUSE_AT=<stage> or <stage>@<where prefix>: at that point, append "PAUSED <stage>
    <where>" to the log and sleep, so a test can kill the flow inside that stage."""
    log, pause = os.environ.get("RLAIFV_TEST_STAGE_LOG"), os.environ.get("RLAIFV_TEST_PAUSE_AT")
    if not log and not pause:
        return
    name, _, prefix = (pause or "").partition("@")
    paused = name == stage and where.startswith(prefix)
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"{'PAUSED ' if paused else ''}{stage} {where}\n")
    if paused:
        time.sleep(3600)
