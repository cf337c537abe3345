import hashlib
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from rlaifv_core.store import ArtifactCorrupt, RunStore, sha256_bytes


def test_table_round_trip_and_hash(tmp_path):
    store = RunStore(str(tmp_path), "run")
    frame = pd.DataFrame({"a": [1, 2, 3], "image": [b"\x89PNG", b"", b"x"]})
    ref = store.write_table("iter-1/t.parquet", frame, schema="demo")
    assert ref.rows == 3 and ref.schema_name == "demo"
    data = (tmp_path / "run" / "iter-1" / "t.parquet").read_bytes()
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    pd.testing.assert_frame_equal(store.read_table(ref), frame)
    # same content → same hash; different content → different hash
    assert store.write_table("iter-1/u.parquet", frame, schema="demo").sha256 == ref.sha256
    assert store.write_table("iter-1/v.parquet", frame.iloc[:2], schema="demo").sha256 != ref.sha256


def test_tampered_artifact_is_refused(tmp_path):
    store = RunStore(str(tmp_path), "run")
    ref = store.write_json("x.json", {"a": 1})
    (tmp_path / "run" / "x.json").write_text('{"a": 2}')
    with pytest.raises(ArtifactCorrupt, match="hash"):
        store.read_json(ref)


def test_interrupted_write_leaves_no_visible_file(tmp_path):
    """A writer killed mid-write (os._exit inside the write) leaves neither the file nor a
    partial file under its name; only a hidden temporary may remain."""
    script = textwrap.dedent(f"""
        import os
        from rlaifv_core.store import RunStore
        store = RunStore({str(tmp_path)!r}, "run")
        class Exploding(bytes):
            pass
        import rlaifv_core.store as s
        real_fdopen = os.fdopen
        def dying_fdopen(fd, mode):
            handle = real_fdopen(fd, mode)
            real_write = handle.write
            def write(data):
                real_write(data[: len(data) // 2]); handle.flush(); os._exit(9)
            handle.write = write
            return handle
        s.os.fdopen = dying_fdopen
        store.write_bytes("iter-1/big.bin", b"x" * 1_000_000)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert result.returncode == 9
    folder = tmp_path / "run" / "iter-1"
    assert not (folder / "big.bin").exists()
    assert all(p.name.startswith(".") for p in folder.iterdir())
    assert not RunStore(str(tmp_path), "run").exists("iter-1/big.bin")


def test_folder_is_complete_only_with_manifest(tmp_path):
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "model.safetensors").write_bytes(b"weights")
    (source / "sub" / "config.json").write_text("{}")
    store = RunStore(str(tmp_path / "store"), "run")
    ref = store.write_folder("iter-1/checkpoints/step-4", source)
    assert ref.rows == 2 and store.exists(ref)
    local = store.local_folder(ref)
    assert (local / "model.safetensors").read_bytes() == b"weights"
    (local / "_manifest.json").unlink()
    assert not store.exists("iter-1/checkpoints/step-4")


def test_sha256_bytes():
    assert sha256_bytes(b"abc") == hashlib.sha256(b"abc").hexdigest()
