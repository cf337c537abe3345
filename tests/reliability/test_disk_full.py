"""Disk full (issue 19, item 7): one clear `DiskFull` naming the path and the free space, never
retried; staging folders and empty result files of a failed write are removed by the next run.

A real 2 MB tmpfs is used where this process may mount one (root); otherwise ENOSPC is simulated."""

from __future__ import annotations

import errno
import shutil
import subprocess

import pytest
from prefect.states import Failed

from rlaifv_core.diskfull import DiskFull, disk_full_as_error, is_disk_full
from rlaifv_core.store import RunStore
from tasks.common import retry_options, retry_unless_disk_full


@pytest.fixture()
def small_fs(tmp_path):
    """A 2 MB tmpfs, or a skip where mounting is not allowed."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip("cannot mount a tmpfs here (not root): the simulated cases cover the mapping")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)  # lazy: a handle still open must not leave it mounted


def _folder(path, size: int):
    path.mkdir()
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"\0" * size)
    return path


def test_torch_save_and_store_writes_on_a_full_filesystem_are_one_clear_error(small_fs, tmp_path):
    import torch

    with pytest.raises(DiskFull) as full:
        with disk_full_as_error(small_fs / "trainer"):
            torch.save({"w": torch.zeros(1_000_000)}, small_fs / "state.pt")  # 4 MB on 2 MB
    assert "unexpected pos" in str(full.value.__cause__)  # what torch says, naming neither cause nor file
    assert f"no space left on the device of {small_fs / 'trainer'}" in str(full.value) and "free" in str(full.value)
    (small_fs / "state.pt").unlink()
    store = RunStore(str(small_fs), "run")
    with pytest.raises(DiskFull, match="step-4"):
        store.write_folder("iter-1/checkpoints/step-4", _folder(tmp_path / "export", 3_000_000))
    assert list((small_fs / "run" / "iter-1" / "checkpoints").iterdir()) == []  # no `.step-4.*.tmp` left
    with pytest.raises(DiskFull, match="summary.json"):
        store.write_bytes("summary.json", b"x" * 3_000_000)
    assert [p.name for p in (small_fs / "run").iterdir()] == ["iter-1"]  # no partial summary, no temp file


def test_simulated_enospc_in_store_writes_is_disk_full_naming_path_and_free_space(tmp_path, monkeypatch):
    store = RunStore(str(tmp_path), "run")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("rlaifv_core.store.os.fsync", full)
    with pytest.raises(DiskFull) as error:
        store.write_bytes("iter-1/pairs.parquet", b"data")
    assert str(tmp_path / "run" / "iter-1" / "pairs.parquet") in str(error.value)
    assert " free" in str(error.value) and error.value.errno == errno.ENOSPC
    assert list((tmp_path / "run" / "iter-1").iterdir()) == []
    monkeypatch.undo()

    def copy_then_fill(source, target):  # copies one file, then the disk is full
        target.mkdir(parents=True)
        shutil.copy(source / "config.json", target / "config.json")
        full()

    monkeypatch.setattr("rlaifv_core.store.shutil.copytree", copy_then_fill)
    with pytest.raises(DiskFull, match="step-4"):
        store.write_folder("iter-1/checkpoints/step-4", _folder(tmp_path / "export", 10))
    assert list((tmp_path / "run" / "iter-1" / "checkpoints").iterdir()) == []


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"),
    RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                 "data/3: file write failed"),
    Exception("Error while serializing: I/O error: No space left on device (os error 28)"),  # safetensors
], ids=["enospc", "torch-unexpected-pos", "torch-write-failed", "safetensors"])
def test_full_disk_errors_are_recognised_and_never_retried(error):
    assert is_disk_full(error)
    wrapped = RuntimeError("export failed")
    wrapped.__cause__ = error
    assert is_disk_full(wrapped)
    assert retry_unless_disk_full(None, None, Failed(data=DiskFull("/x", 10, error))) is False
    assert retry_unless_disk_full(None, None, Failed(data=error)) is False
    assert retry_options(type("It", (), {"retries": 2, "retry_delay_s": 0})())["retry_condition_fn"] \
        is retry_unless_disk_full


def test_other_errors_are_still_retried():
    for error in (OSError(errno.ECONNRESET, "reset"), RuntimeError("CUDA error: an illegal memory access"),
                  RuntimeError("[enforce fail at inline_container.cc:235] . PytorchStreamReader failed reading "
                               "zip archive")):
        assert not is_disk_full(error)
        assert retry_unless_disk_full(None, None, Failed(data=error)) is True


def test_the_next_run_removes_staging_folders_and_empty_result_files(tmp_path):
    store = RunStore(str(tmp_path), "run")
    store.write_json("iter-1/pairs.json", [])
    root = tmp_path / "run"
    staging = root / "iter-1" / "checkpoints" / ".step-4.1a2b3c4d.tmp"
    staging.mkdir(parents=True)
    (staging / "model.safetensors").write_bytes(b"partial")
    (root / "iter-1" / ".pairs.parquet.x1y2.tmp").write_bytes(b"partial")
    results = root / ".prefect-results"
    results.mkdir()
    (results / "0badc0de").write_bytes(b"")  # a result whose write failed
    (results / "600d").write_text('{"result": 1}')
    work = root / "iter-1" / ".train-work" / "k.attempt" / "trainer"
    work.mkdir(parents=True)
    (work / ".resume-me.tmp").write_bytes(b"kept")  # training resumes from its work folder
    removed = store.sweep_leftovers()
    assert sorted(removed) == sorted(str(p) for p in (staging, root / "iter-1" / ".pairs.parquet.x1y2.tmp",
                                                     results / "0badc0de"))
    assert (results / "600d").exists() and (work / ".resume-me.tmp").exists()
    assert (root / "iter-1" / "pairs.json").exists()
    assert store.sweep_leftovers() == []
