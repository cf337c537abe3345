"""Cache keys from content: an input changed recomputes its stage, a file touched without a change does not.

Unit-level: each stage's cache policy (or the fingerprint it keys) is computed before and after the
change. The whole-flow version (a prompts file edited in place) is tests/reliability/test_content_keys.py.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from rlaifv_core.config import EvalConfig, ModelSpec, PromptsConfig


@pytest.fixture(autouse=True)
def own_hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RLAIFV_CACHE", str(tmp_path / "cache"))


def _touch(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns + 5_000_000_000, stat.st_mtime_ns + 5_000_000_000))


def _edit_in_place(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert old in data and len(old) == len(new)
    path.write_bytes(data.replace(old, new))  # same size, same path


def test_file_hash_is_of_the_content_and_is_remembered(tmp_path, monkeypatch):
    from rlaifv_core import fingerprints

    file = tmp_path / "prompts.jsonl"
    file.write_text('{"question": "what is red ?"}\n')
    first = fingerprints.file_sha256(file)
    reads = []
    real = fingerprints._stream_sha256
    monkeypatch.setattr(fingerprints, "_stream_sha256", lambda p: reads.append(p) or real(p))
    assert fingerprints.file_sha256(file) == first and reads == []  # (path, size, mtime) unchanged: not read
    _touch(file)
    assert fingerprints.file_sha256(file) == first and len(reads) == 1  # read again, same content
    _edit_in_place(file, b"red", b"big")
    assert fingerprints.file_sha256(file) != first
    assert (tmp_path / "cache" / fingerprints.HASH_DB).exists()


def test_prompts_stage_key_follows_the_prompt_file_content(tmp_path):
    from tasks.common import InputFiles
    from tasks.prompts import _source_files

    file = tmp_path / "prompts.jsonl"
    file.write_text('{"question": "what is red ?", "image_path": "a.png"}\n')
    policy = InputFiles(_source_files)
    key = lambda: policy.compute_key(None, {"prompts": PromptsConfig(source=str(file))}, {})  # noqa: E731
    first = key()
    _touch(file)
    assert key() == first
    _edit_in_place(file, b"red", b"big")
    assert key() != first
    assert policy.compute_key(None, {"prompts": PromptsConfig(source="shapes")}, {}) == \
        policy.compute_key(None, {"prompts": PromptsConfig(source="shapes")}, {})  # a registered source: code only


def test_evaluate_stage_key_follows_the_benchmark_files_content(tmp_path):
    from tasks.common import InputFiles
    from tasks.evaluate import _data_files

    mmhal, captions = tmp_path / "mmhal.jsonl", tmp_path / "captions.json"
    mmhal.write_text('{"question": "is it red ?"}\n')
    captions.write_text('{"annotations": []}')
    config = EvalConfig(benchmarks=["mmhal", "object_halbench"], data={"mmhal": str(mmhal),
                                                                         "coco_captions": str(captions)})
    policy = InputFiles(_data_files)
    key = lambda bench: policy.compute_key(None, {"eval_config": config, "benchmark": bench}, {})  # noqa: E731
    first_mmhal, first_objhal = key("mmhal"), key("object_halbench")
    _touch(mmhal)
    assert key("mmhal") == first_mmhal
    _edit_in_place(mmhal, b"red", b"big")
    assert key("mmhal") != first_mmhal and key("object_halbench") == first_objhal  # only its own files
    _edit_in_place(captions, b"[]", b"{}")
    assert key("object_halbench") != first_objhal


def _weights(folder: Path, value: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"lm.weight": torch.full((64, 64), 0.5), "lm.bias": torch.full((64,), value)},
              str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "llava", "hidden_size": 64}))
    return folder


def test_local_model_folder_is_identified_by_content_never_mtimes(tmp_path):
    from rlaifv_core.models import model_fingerprint

    folder = _weights(tmp_path / "model", 1.0)
    first = model_fingerprint(ModelSpec(name_or_path=str(folder)))
    _touch(folder / "model.safetensors")
    assert model_fingerprint(ModelSpec(name_or_path=str(folder))) == first
    copy = tmp_path / "elsewhere" / "model"
    shutil.copytree(folder, copy, copy_function=shutil.copy)  # new mtimes, as on another machine
    assert model_fingerprint(ModelSpec(name_or_path=str(copy))) == first
    _weights(tmp_path / "changed", 2.0)  # the same shapes, one tensor's values changed
    assert model_fingerprint(ModelSpec(name_or_path=str(tmp_path / "changed"))) != first
    (copy / "config.json").write_text(json.dumps({"model_type": "llava", "hidden_size": 65}))
    assert model_fingerprint(ModelSpec(name_or_path=str(copy))) != first


def _hub_cache(root: Path, repo: str, commit: str) -> None:
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    (folder / "snapshots" / commit / "config.json").write_text("{}")
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)


def test_hub_model_is_identified_by_its_resolved_commit(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from rlaifv_core.models import model_fingerprint

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    spec = ModelSpec(name_or_path="someone/tiny-vlm")
    _hub_cache(tmp_path / "hub", "someone/tiny-vlm", "a" * 40)
    assert model_fingerprint(spec) == f"hf:someone/tiny-vlm@{'a' * 40}"
    _hub_cache(tmp_path / "hub", "someone/tiny-vlm", "b" * 40)  # main moved on: a new download
    assert model_fingerprint(spec) == f"hf:someone/tiny-vlm@{'b' * 40}"


def test_core_source_is_hashed_as_whole_packages_with_what_they_import():
    from tasks.common import core_closure, plugin_packages

    names = lambda files: {f.relative_to(f.parents[1]).as_posix() if f.parent.name != "rlaifv_core"  # noqa: E731
                           else f.name for f in files}
    sampling = names(core_closure(["rlaifv_core.feedback.sampling", "rlaifv_core.backends"]))
    assert {"seeds.py", "images.py", "feedback/claims.py", "backends/hf.py"} <= sampling  # imported / same package
    prompts = names(core_closure(["rlaifv_core.feedback.prompts", *plugin_packages()]))
    assert {"shapes/world.py", "seeds.py", "images.py"} <= prompts
    assert "training/run.py" not in sampling  # what a stage never runs stays out of its key


def test_reference_logps_key_holds_precision_and_device_kind(monkeypatch):
    from rlaifv_core import fingerprints
    from rlaifv_core.config import DPOConfig
    from tasks.train_dpo import _Precision, reference_logps

    assert any(isinstance(p, _Precision) for p in reference_logps.cache_policy.policies)
    key = lambda dtype: _Precision().compute_key(None, {"dpo": DPOConfig(dtype=dtype)}, {})  # noqa: E731
    on_cpu = key("auto")
    assert on_cpu == "cpu/float32" and key("bfloat16") == "cpu/bfloat16"
    monkeypatch.setattr(fingerprints, "_gpu_possible", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert key("auto") == "cuda/float32+bf16-autocast" != on_cpu


def test_unused_judge_batch_field_is_gone():
    from rlaifv_core.config import JudgeConfig

    assert "questions_per_batch" not in JudgeConfig.model_fields
