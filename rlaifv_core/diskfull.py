"""A full disk is one clear, permanent error: `DiskFull` names the path and the free space.

    with disk_full_as_error(path):          # ENOSPC / EDQUOT, or torch.save's "unexpected pos", inside
        torch.save(state, path)             # → DiskFull("no space left on the device of <path>: 1.2 MB free …")
    is_disk_full(error)                     # the check the tasks' retry conditions use: never retried

torch.save reports a full disk as `RuntimeError: [enforce fail at inline_container.cc:…] . unexpected
pos …` or `… file write failed`, naming neither the cause nor the file, and safetensors as
`SafetensorError: … No space left on device (os error 28)`; all are mapped here. This module imports
no Prefect.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
from pathlib import Path
from typing import Iterator

_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_MARKERS = ("unexpected pos", "file write failed", "No space left on device", "os error 28")


class DiskFull(OSError):
    """No space left where the run writes; retrying cannot help, freeing space can."""

    def __init__(self, path: str | Path, free: int | None, cause: BaseException | None = None):
        self.path, self.free = str(path), free
        free_text = "free space unknown" if free is None else f"{_size(free)} free"
        detail = f" ({type(cause).__name__}: {str(cause).splitlines()[0][:200]})" if cause else ""
        super().__init__(errno.ENOSPC, f"no space left on the device of {path}: {free_text}{detail}")

    def __reduce__(self):  # survives pickling (Prefect results, Dask workers)
        return (DiskFull, (self.path, self.free))


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def free_bytes(path: str | Path) -> int | None:
    """Free bytes on the filesystem of `path` (its nearest existing parent); None if unknown."""
    here = Path(path)
    for candidate in (here, *here.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def is_disk_full(error: BaseException | None) -> bool:
    """Whether `error`, or an error it was raised from, is a full disk."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, DiskFull):
            return True
        if isinstance(error, OSError) and error.errno in _ERRNOS:
            return True
        if any(marker in str(error) for marker in _MARKERS):  # torch.save, safetensors (Rust I/O)
            return True
        error = error.__cause__ or error.__context__
    return False


@contextlib.contextmanager
def disk_full_as_error(path: str | Path) -> Iterator[None]:
    """Re-raise a full disk inside the block as `DiskFull` naming `path` and its free space."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as error:  # noqa: BLE001 - re-raised as it is unless the disk is full
        if not is_disk_full(error):
            raise
        raise DiskFull(path, free_bytes(path), error) from error
