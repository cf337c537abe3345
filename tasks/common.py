"""What every stage task shares: the run store, cache policy, result storage, progress reporting.

Tasks are thin: read artifact refs → call rlaifv_core → write an artifact → return its ref.
Cache keys are built from the task's inputs (artifact refs carry content hashes; config sections
and model fingerprints are plain values), the task's source and the source of the core modules
it calls, so an unchanged re-run is all cache hits and a changed setting recomputes exactly what
depends on it. Task modules import the science inside the task body and name its modules to the
cache policy by string: a run whose tasks are all cache hits never loads torch, spaCy or pandas.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

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


CORE = "rlaifv_core"
_PARSE_LOCK = threading.Lock()
_IMPORTS: dict[tuple[Path, int, int], frozenset[str]] = {}  # (file, size, mtime) -> what it imports


def _module_of(file: Path, root: Path) -> str:
    """The dotted name of a core file ("" for a file outside the core: a plug-in's, whose relative
    imports stay in the plug-in)."""
    if root not in file.parents:
        return ""
    parts = list(file.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(file: Path, root: Path) -> set[str]:
    """Dotted names of every import in a file (module level, in functions, under try/TYPE_CHECKING),
    relative ones resolved against the file's package; `from a import b` gives both a and a.b."""
    stat = file.stat()
    key = (file, stat.st_size, stat.st_mtime_ns)
    with _PARSE_LOCK:  # one parse at a time: CPython 3.11's ast.parse is not safe in parallel threads
        if key not in _IMPORTS:
            _IMPORTS[key] = frozenset(_parse_imports(file, root))
        return set(_IMPORTS[key])


def _parse_imports(file: Path, root: Path) -> set[str]:
    module = _module_of(file, root)
    package = module if file.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_bytes(), filename=str(file))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level and not module:
                continue
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def _package_of(name: str, root: Path) -> Path | None:
    """The file or folder a core module name is hashed as: a top-level module (rlaifv_core.seeds) as its
    file, anything inside a sub-package (rlaifv_core.feedback.sampling) as the whole sub-package."""
    parts = name.split(".")
    if parts[0] != CORE or len(parts) < 2:
        return None
    folder = root / parts[1]
    if folder.is_dir():
        return folder
    file = root / f"{parts[1]}.py"
    return file if file.is_file() else None


def core_closure(names: list[str]) -> list[Path]:
    """Every source file a stage may run: the named modules or packages (a name inside rlaifv_core as
    its whole sub-package, or its file for a top-level module), then every rlaifv_core sub-package or
    top-level module (seeds.py, images.py …) that code imports, statically and wherever the import sits,
    each whole, until nothing new is reached."""
    root = Path(importlib.util.find_spec(CORE).origin).parent
    todo = [_package_of(name, root) or file for name in names
            for file in ([None] if _package_of(name, root) else source_files(name))]
    seen: set[Path] = set()
    files: set[Path] = set()
    while todo:
        unit = todo.pop()
        if unit in seen:
            continue
        seen.add(unit)
        unit_files = sorted(unit.rglob("*.py")) if unit.is_dir() else [unit]
        files |= set(unit_files)
        for file in unit_files:
            todo += [u for u in (_package_of(m, root) for m in _imported_modules(file, root)) if u is not None]
    return sorted(files)


class CoreSource(CachePolicy):
    """Invalidates the cache when the source of the science a task calls changes.

    Modules (or whole packages) are named, not imported: a run whose every task is a cache hit must
    not pay for importing torch or spaCy just to hash the files that would use them. What is hashed is
    `core_closure` of the names: each named package whole, and every core package (or top-level module,
    e.g. seeds.py, images.py) their code imports. With `plugins=True` the installed plug-ins' packages
    are hashed too (a stage that runs their code: rlaifv_core/shapes, world.py included)."""

    def __init__(self, *module_names: str, plugins: bool = False):
        super().__init__()
        self.module_names = module_names
        self.plugins = plugins

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs) -> Optional[str]:
        digest = hashlib.sha256()
        names = list(self.module_names) + (plugin_packages() if self.plugins else [])
        root = Path(importlib.util.find_spec(CORE).origin).parent.parent
        for file in core_closure(names):
            label = file.relative_to(root) if root in file.parents else file.name
            digest.update(f"{label}\0".encode())
            digest.update(file.read_bytes())
        return digest.hexdigest()


class InputFiles(CachePolicy):
    """Keys the content of the local files a task's inputs name (a prompts file, a benchmark's data):
    `files_of(inputs) -> {key: [path, …]}`; each file by its content hash (rlaifv_core.fingerprints:
    streamed, cached by path+size+mtime), so an edit in place recomputes and a touch does not."""

    def __init__(self, files_of: Callable[[dict[str, Any]], dict[str, list[str]]]):
        super().__init__()
        self.files_of = files_of

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs) -> Optional[str]:
        from rlaifv_core.fingerprints import files_fingerprint

        return files_fingerprint(self.files_of(inputs))


def stage_cache(*core_module_names: str, plugins: bool = False, files=None) -> CachePolicy:
    """The key of a stage: its inputs, its source, the core's source it runs and (`files`: see
    InputFiles) the content of the local files its inputs name."""
    policy = INPUTS + TASK_SOURCE + CoreSource(*core_module_names, plugins=plugins)
    return policy + InputFiles(files) if files is not None else policy


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


def retry_unless_disk_full(task, task_run, state) -> bool:
    """Prefect `retry_condition_fn`: a full disk (`DiskFull`, ENOSPC, torch.save's "unexpected pos")
    is never retried; every other failure is."""
    from rlaifv_core.diskfull import is_disk_full

    try:
        error = state.result(raise_on_failure=False)
    except Exception as unreadable:  # noqa: BLE001 - the failure's own result could not be read
        error = unreadable
    return not (isinstance(error, BaseException) and is_disk_full(error))


def retry_options(iteration_config) -> dict:
    """`with_options` of a model-running task: the run's retries (a GPU fault, a dropped endpoint),
    never for a full disk."""
    return {"retries": iteration_config.retries, "retry_delay_seconds": iteration_config.retry_delay_s,
            "retry_condition_fn": retry_unless_disk_full}


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


def sum_counts(parts: list[dict]) -> dict:
    """The counts of a stage's shards added up (numbers summed, `examples` lists joined, first five kept)."""
    total: dict = {}
    for part in parts:
        for key, value in part.items():
            if key == "examples":
                total[key] = (total.get(key, []) + list(value))[:5]
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
    return total


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
