"""Remote checkpoint folders on this machine: one locked download, retried reads, a bounded LRU cache.

    pytest -q tests/test_checkpoint_cache.py
"""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

import rlaifv_core.store as store_module
from rlaifv_core.store import RunStore


def _store_with_folders(tmp_path, names, size=1000) -> tuple[RunStore, dict]:
    store = RunStore(f"memory://ckpt-{uuid.uuid4().hex[:8]}", "run")
    refs = {}
    for name in names:
        source = tmp_path / "src" / name
        source.mkdir(parents=True)
        (source / "model.safetensors").write_bytes(name.encode() * (size // len(name)))
        (source / "config.json").write_text("{}")
        refs[name] = store.write_folder(f"checkpoints/{name}", source)
    return store, refs


def test_concurrent_tasks_share_one_download(tmp_path, monkeypatch):
    """The second task waits for the first's download instead of downloading again and removing
    the folder the first is loading (the old `rmtree` race)."""
    store, refs = _store_with_folders(tmp_path, ["a"])
    real, calls = store.fs.get_file, []

    def slow_get(remote, local, *args, **kwargs):
        calls.append(remote)
        time.sleep(0.3)
        return real(remote, local, *args, **kwargs)

    monkeypatch.setattr(store.fs, "get_file", slow_get)
    cache = tmp_path / "cache"
    results, errors = [], []

    def fetch():
        try:
            folder = store.local_folder(refs["a"], cache_dir=cache)
            results.append((folder, (folder / "model.safetensors").read_bytes()))
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=fetch) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len({folder for folder, _ in results}) == 1 and {data for _, data in results} == {b"a" * 1000}
    assert len(calls) == 2  # model.safetensors and config.json, once each
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]


def test_a_dropped_connection_is_retried(tmp_path, monkeypatch):
    store, refs = _store_with_folders(tmp_path, ["a"])
    monkeypatch.setattr(store_module, "REMOTE_RETRY_DELAYS_S", (0.01, 0.01))
    real, failures = store.fs.get_file, []

    def flaky(remote, local, *args, **kwargs):
        if not failures:
            failures.append(remote)
            raise ConnectionError("connection reset by peer (simulated)")
        return real(remote, local, *args, **kwargs)

    monkeypatch.setattr(store.fs, "get_file", flaky)
    folder = store.local_folder(refs["a"], cache_dir=tmp_path / "cache")
    assert failures and (folder / "model.safetensors").read_bytes() == b"a" * 1000


def test_cache_is_bounded_and_evicts_the_least_recently_used(tmp_path, monkeypatch):
    store, refs = _store_with_folders(tmp_path, ["a", "b", "c"])
    cache = tmp_path / "cache"
    monkeypatch.setattr(store_module, "CHECKPOINT_CACHE_GRACE_S", 0.0)
    monkeypatch.setenv("RLAIFV_CHECKPOINT_CACHE_GB", str(2.5 * 1002 / 1e9))  # two folders fit, not three
    a = store.local_folder(refs["a"], cache_dir=cache)
    b = store.local_folder(refs["b"], cache_dir=cache)
    os.utime(b / "_manifest.json", (time.time() - 60, time.time() - 60))
    os.utime(a / "_manifest.json", (time.time() - 120, time.time() - 120))
    store.local_folder(refs["a"], cache_dir=cache)  # used again: now b is the least recently used
    c = store.local_folder(refs["c"], cache_dir=cache)
    assert a.exists() and c.exists() and not b.exists()
    assert store.local_folder(refs["b"], cache_dir=cache) == b and (b / "model.safetensors").exists()  # fetched again


def test_a_folder_just_used_is_never_evicted(tmp_path, monkeypatch):
    store, refs = _store_with_folders(tmp_path, ["a", "b"])
    cache = tmp_path / "cache"
    monkeypatch.setenv("RLAIFV_CHECKPOINT_CACHE_GB", str(1.0 / 1e9))  # nothing fits
    a = store.local_folder(refs["a"], cache_dir=cache)
    b = store.local_folder(refs["b"], cache_dir=cache)
    assert a.exists() and b.exists()  # both within the grace period: the bound waits, no folder in use goes


@pytest.mark.parametrize("value", ["lots", "0"])
def test_a_bad_cache_bound_is_named(monkeypatch, value):
    monkeypatch.setenv("RLAIFV_CHECKPOINT_CACHE_GB", value)
    with pytest.raises(ValueError, match="RLAIFV_CHECKPOINT_CACHE_GB"):
        store_module.checkpoint_cache_limit()
