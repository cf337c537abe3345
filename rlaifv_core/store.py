"""The run store: artifacts of a run in a local folder or on S3, written atomically.

    store = RunStore("runs", "demo")                 # or RunStore("s3://bucket/prefix", "demo")
    ref = store.write_table("iter-1/pairs.parquet", df, schema="pairs")
    df = store.read_table(ref)                       # verifies the content hash

Tasks pass `ArtifactRef`s (uri + sha256 + rows + schema), never payloads. A file becomes
visible only when complete: local files are written to a temporary name and renamed; S3
objects appear only when their upload completes; folders (checkpoints) are complete only once
their `_manifest.json`, written last, lists every file with its hash. Remote reads and writes are
retried on connection-level errors (`REMOTE_RETRY_DELAYS_S`: about 7 s in all, on top of the S3
client's own retries), then fail with an error naming the URI; a failed write leaves no object.
A full disk is `DiskFull` (the path and the free space), never retried; `sweep_leftovers()`, run by
the holder of the run lock, removes staging files (`.*.tmp`) and empty Prefect result files that a
killed or failed writer left.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec
from pydantic import BaseModel, ConfigDict

from .diskfull import DiskFull, disk_full_as_error

if TYPE_CHECKING:  # pandas is imported where a table is read: a fully cached run never needs it
    import pandas as pd

MANIFEST = "_manifest.json"
#: waits between attempts of a remote store operation that failed with a transient error
REMOTE_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)
_PERMANENT = (DiskFull, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)


class ArtifactRef(BaseModel):
    """A small, content-addressed pointer to an artifact in the run store."""

    model_config = ConfigDict(frozen=True)

    uri: str
    sha256: str
    rows: int | None = None
    schema_name: str = "bytes"

    @property
    def short(self) -> str:
        return self.sha256[:12]


class ArtifactCorrupt(RuntimeError):
    """An artifact's content does not match the hash its reference carries."""


class StoreUnavailable(OSError):
    """A remote store operation still failed after the bounded retries."""


def _transient(error: BaseException) -> bool:
    """A connection-level failure worth retrying (not a missing key or a refused permission)."""
    if isinstance(error, _PERMANENT):
        return False
    if isinstance(error, (OSError, ConnectionError, TimeoutError)):
        return True
    return type(error).__module__.split(".")[0] in ("botocore", "aiobotocore", "urllib3", "aiohttp")


def _retrying(what: str, operation, *args):
    for attempt in range(len(REMOTE_RETRY_DELAYS_S) + 1):
        try:
            return operation(*args)
        except Exception as error:  # noqa: BLE001 - re-raised unless transient
            if not _transient(error):
                raise
            if attempt == len(REMOTE_RETRY_DELAYS_S):
                raise StoreUnavailable(f"{what}: run store unavailable after {attempt + 1} attempts "
                                       f"({type(error).__name__}: {error})") from error
            time.sleep(REMOTE_RETRY_DELAYS_S[attempt])


def cache_root() -> Path:
    """This machine's cache of the project (bootstrapped models, remote-store training folders):
    `$RLAIFV_CACHE`, else ~/.cache/rlaifv-flows."""
    return Path(os.environ.get("RLAIFV_CACHE", Path.home() / ".cache" / "rlaifv-flows"))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _storage_options(url: str, endpoint_url: str | None) -> dict[str, Any]:
    if url.startswith("s3://") and endpoint_url:
        # Credentials come from AWS_* environment variables only; never stored here.
        return {"client_kwargs": {"endpoint_url": endpoint_url}}
    return {}


class RunStore:
    """One run's folder inside a store URL."""

    def __init__(self, url: str = "runs", run_name: str = "default", endpoint_url: str | None = None):
        self.url = url.rstrip("/")
        self.run_name = run_name
        self.endpoint_url = endpoint_url
        self.fs, root = fsspec.core.url_to_fs(self.url, **_storage_options(self.url, endpoint_url))
        self.is_local = isinstance(self.fs, fsspec.implementations.local.LocalFileSystem)
        self.root = f"{root.rstrip('/')}/{run_name}"
        self.protocol = "" if self.is_local else f"{self.fs.protocol[0] if isinstance(self.fs.protocol, tuple) else self.fs.protocol}://"

    @classmethod
    def from_config(cls, store_config) -> "RunStore":
        return cls(store_config.url, store_config.run_name, store_config.endpoint_url)

    # -- paths ------------------------------------------------------------------------------
    def uri(self, relpath: str) -> str:
        return f"{self.protocol}{self.root}/{relpath.lstrip('/')}"

    def _fs_path(self, uri: str) -> str:
        return uri[len(self.protocol):] if self.protocol and uri.startswith(self.protocol) else uri

    def exists(self, relpath_or_ref: str | ArtifactRef) -> bool:
        uri = relpath_or_ref.uri if isinstance(relpath_or_ref, ArtifactRef) else self.uri(relpath_or_ref)
        path = self._fs_path(uri)
        if self.fs.isdir(path):
            return self.fs.exists(f"{path}/{MANIFEST}")
        return self.fs.exists(path)

    # -- bytes --------------------------------------------------------------------------------
    def write_bytes(self, relpath: str, data: bytes, schema: str = "bytes", rows: int | None = None) -> ArtifactRef:
        uri = self.uri(relpath)
        path = self._fs_path(uri)
        if self.is_local:
            with disk_full_as_error(path):
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{Path(path).name}.", suffix=".tmp", dir=Path(path).parent)
                try:
                    with os.fdopen(fd, "wb") as handle:
                        handle.write(data)
                        handle.flush()
                        os.fsync(handle.fileno())
                    os.replace(tmp, path)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
        else:
            # An object store publishes an object only when its (single or multipart) upload
            # completes, so a killed writer leaves nothing under this key.
            _retrying(f"writing {uri}", self.fs.pipe_file, path, data)
        return ArtifactRef(uri=uri, sha256=sha256_bytes(data), rows=rows, schema_name=schema)

    def read_bytes(self, ref: ArtifactRef | str, verify: bool = True) -> bytes:
        uri = ref.uri if isinstance(ref, ArtifactRef) else self.uri(ref)
        data = self._remote(f"reading {uri}", self.fs.cat_file, self._fs_path(uri))
        if verify and isinstance(ref, ArtifactRef) and sha256_bytes(data) != ref.sha256:
            raise ArtifactCorrupt(f"{uri}: content hash differs from the reference {ref.short}")
        return data

    def _remote(self, what: str, operation, *args):
        return operation(*args) if self.is_local else _retrying(what, operation, *args)

    # -- tables -------------------------------------------------------------------------------
    def write_table(self, relpath: str, frame: pd.DataFrame, schema: str) -> ArtifactRef:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return self.write_bytes(relpath, buffer.getvalue(), schema=schema, rows=len(frame))

    def read_table(self, ref: ArtifactRef | str) -> pd.DataFrame:
        import pandas as pd

        return pd.read_parquet(io.BytesIO(self.read_bytes(ref)))

    # -- json ---------------------------------------------------------------------------------
    def write_json(self, relpath: str, obj: Any, schema: str = "json") -> ArtifactRef:
        data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
        rows = len(obj) if isinstance(obj, list) else None
        return self.write_bytes(relpath, data, schema=schema, rows=rows)

    def read_json(self, ref: ArtifactRef | str) -> Any:
        return json.loads(self.read_bytes(ref))

    # -- folders (checkpoints) ----------------------------------------------------------------
    def write_folder(self, relpath: str, local_dir: str | Path, schema: str = "checkpoint") -> ArtifactRef:
        """Copy a local folder into the store; complete only once its manifest exists."""
        local_dir = Path(local_dir)
        files = sorted(p for p in local_dir.rglob("*") if p.is_file() and p.name != MANIFEST)
        manifest = {str(p.relative_to(local_dir)): sha256_file(p) for p in files}
        manifest_bytes = json.dumps(manifest, indent=1, sort_keys=True).encode()
        uri = self.uri(relpath)
        path = self._fs_path(uri)
        if self.is_local:
            if local_dir.resolve() == Path(path).resolve():
                staging = local_dir
            else:
                staging = Path(path).parent / f".{Path(path).name}.{uuid.uuid4().hex[:8]}.tmp"
            try:
                with disk_full_as_error(path):
                    if staging != local_dir:
                        Path(path).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copytree(local_dir, staging)
                    (staging / MANIFEST).write_bytes(manifest_bytes)
            except BaseException:
                if staging != local_dir:
                    shutil.rmtree(staging, ignore_errors=True)
                raise
            if staging != local_dir:
                if Path(path).exists():
                    shutil.rmtree(path)
                os.replace(staging, path)
        else:
            if _retrying(f"checking {uri}", self.fs.exists, f"{path}/{MANIFEST}"):
                _retrying(f"writing {uri}", self.fs.rm_file, f"{path}/{MANIFEST}")
            for file in files:
                _retrying(f"writing {uri}", self.fs.put_file, str(file), f"{path}/{file.relative_to(local_dir)}")
            _retrying(f"writing {uri}", self.fs.pipe_file, f"{path}/{MANIFEST}", manifest_bytes)
        return ArtifactRef(uri=uri, sha256=sha256_bytes(manifest_bytes), rows=len(files), schema_name=schema)

    def listdir(self, relpath: str) -> list[str]:
        """Names directly inside a folder of the run (none if it does not exist)."""
        path = self._fs_path(self.uri(relpath))
        if not self._remote(f"listing {self.uri(relpath)}", self.fs.isdir, path):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self._remote(f"listing {path}", self.fs.ls, path,
                                                                            False))

    def sweep_leftovers(self) -> list[str]:
        """Remove what a killed or failed writer left: local staging files and folders (`.*.tmp`, not
        in `.train-work`, which training resumes from) and empty files under `.prefect-results` (a
        result whose write failed). Only the holder of the run lock may call it. Returns the URIs."""
        removed = []
        if self.is_local and Path(self.root).is_dir():
            for folder, dirs, files in os.walk(self.root):
                dirs[:] = [d for d in dirs if d != ".train-work"]
                for name in [d for d in dirs if d.startswith(".") and d.endswith(".tmp")]:
                    shutil.rmtree(Path(folder) / name, ignore_errors=True)
                    dirs.remove(name)
                    removed.append(str(Path(folder) / name))
                for name in files:
                    file = Path(folder) / name
                    if (name.startswith(".") and name.endswith(".tmp")) or (
                            ".prefect-results" in file.relative_to(self.root).parts and file.stat().st_size == 0):
                        file.unlink(missing_ok=True)
                        removed.append(str(file))
        elif not self.is_local:
            results = self._fs_path(self.uri(".prefect-results"))
            found = self._remote(f"listing {results}", self.fs.find, results, None, False, True)
            for name, info in found.items():
                if info.get("size") == 0 and info.get("type") == "file":
                    self._remote(f"removing {name}", self.fs.rm_file, name)
                    removed.append(f"{self.protocol}{name}")
        return removed

    def local_folder(self, ref: ArtifactRef, cache_dir: str | Path | None = None) -> Path:
        """A local path holding the folder's files (downloaded and verified for remote stores).

        Remote folders go to a bounded machine-wide cache (`checkpoint_cache_dir()`): one download per
        folder under a file lock, so concurrent tasks of any process wait for it instead of racing;
        each file is fetched with the store's retries; least-recently-used folders are evicted past
        `RLAIFV_CHECKPOINT_CACHE_GB` (see `evict_checkpoint_cache`)."""
        from filelock import FileLock

        path = self._fs_path(ref.uri)
        manifest_bytes = self._remote(f"reading {ref.uri}", self.fs.cat_file, f"{path}/{MANIFEST}")
        if sha256_bytes(manifest_bytes) != ref.sha256:
            raise ArtifactCorrupt(f"{ref.uri}: manifest hash differs from the reference {ref.short}")
        if self.is_local:
            return Path(path)
        cache_dir = Path(cache_dir or checkpoint_cache_dir())
        cache_dir.mkdir(parents=True, exist_ok=True)
        target = cache_dir / ref.sha256[:16]
        with FileLock(str(cache_dir / f".{ref.sha256[:16]}.lock")):
            if not (target / MANIFEST).exists():
                self._download_folder(ref, path, json.loads(manifest_bytes), manifest_bytes, cache_dir, target)
            os.utime(target / MANIFEST)  # last use, for the LRU eviction
        evict_checkpoint_cache(cache_dir, keep=target)
        return target

    def _download_folder(self, ref: ArtifactRef, path: str, manifest: dict, manifest_bytes: bytes, cache_dir: Path,
                         target: Path) -> None:
        staging = cache_dir / f".{ref.sha256[:16]}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            for name, digest in manifest.items():
                local = staging / name
                local.parent.mkdir(parents=True, exist_ok=True)
                _retrying(f"reading {ref.uri}/{name}", self.fs.get_file, f"{path}/{name}", str(local))
                if sha256_file(local) != digest:
                    raise ArtifactCorrupt(f"{ref.uri}/{name}: content hash mismatch")
            (staging / MANIFEST).write_bytes(manifest_bytes)
            if target.exists():  # an incomplete leftover (no manifest): no reader can be using it
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


#: folders used this recently are never evicted (a task may be opening the files it was just given)
CHECKPOINT_CACHE_GRACE_S = 120.0


def checkpoint_cache_dir() -> Path:
    """Where remote checkpoint folders are cached on this machine: `$RLAIFV_CHECKPOINT_CACHE`, else
    <temp>/rlaifv-store-cache."""
    return Path(os.environ.get("RLAIFV_CHECKPOINT_CACHE") or Path(tempfile.gettempdir()) / "rlaifv-store-cache")


def checkpoint_cache_limit() -> int:
    """The cache's bound in bytes: `$RLAIFV_CHECKPOINT_CACHE_GB` (default 100 GB, about seven 7B
    checkpoints in bf16)."""
    value = os.environ.get("RLAIFV_CHECKPOINT_CACHE_GB") or "100"
    try:
        limit = float(value)
    except ValueError:
        raise ValueError(f"RLAIFV_CHECKPOINT_CACHE_GB={value!r} is not a number of gigabytes") from None
    if limit <= 0:
        raise ValueError(f"RLAIFV_CHECKPOINT_CACHE_GB={value!r} must be positive")
    return int(limit * 1e9)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def evict_checkpoint_cache(cache_dir: str | Path, keep: Path | None = None, limit: int | None = None) -> list[Path]:
    """Remove least-recently-used complete folders until the cache fits `limit` (default
    `checkpoint_cache_limit()`); never `keep` nor a folder used in the last CHECKPOINT_CACHE_GRACE_S
    seconds, so the bound is exceeded rather than a folder in use removed. Returns the removed folders."""
    from filelock import FileLock

    cache_dir = Path(cache_dir)
    limit = checkpoint_cache_limit() if limit is None else limit
    entries = sorted((entry for entry in cache_dir.iterdir()
                      if not entry.name.startswith(".") and (entry / MANIFEST).exists()),
                     key=lambda entry: (entry / MANIFEST).stat().st_mtime)
    sizes = {entry: _folder_bytes(entry) for entry in entries}
    total, removed, now = sum(sizes.values()), [], time.time()
    for entry in entries:
        if total <= limit:
            break
        if entry == keep:
            continue
        with FileLock(str(cache_dir / f".{entry.name}.lock")):
            manifest = entry / MANIFEST
            if not manifest.exists() or now - manifest.stat().st_mtime < CHECKPOINT_CACHE_GRACE_S:
                continue
            manifest.unlink()  # incomplete from here on: a concurrent reader downloads it afresh
            shutil.rmtree(entry, ignore_errors=True)
        total -= sizes[entry]
        removed.append(entry)
    return removed
