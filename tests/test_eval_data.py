"""eval.data is typed and fully consumed; missing or empty ground truth is an error before any model runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rlaifv_core.config import CONFIG_DIR, load_config
from rlaifv_core.evals.external import DATA_KEYS, DataView, unused_data_keys
from rlaifv_core.evals.registry import run_benchmark
from rlaifv_core.selection import metric_value, select_checkpoint
from tests.test_evals_benchmarks import ScriptedVLM, _png_b64


def _leaves(data, prefix=""):
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _set_leaves(model, prefix=""):
    from pydantic import BaseModel

    for key in model.model_fields_set:
        value = getattr(model, key)
        if isinstance(value, BaseModel):
            yield from _set_leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_key_of_every_shipped_config_is_consumed(path):
    raw = yaml.safe_load(path.read_text())
    config = load_config(path, check_machine=False)  # the data files of llava15-7b.yaml are not here
    # every YAML leaf landed in a field (nothing dropped), and no eval.data key is read by no benchmark
    assert set(_leaves(raw)) <= set(_set_leaves(config)) | {k for k in _leaves(raw) if k.startswith("models.")}
    assert unused_data_keys(config.eval) == []
    for key in config.eval.data.model_fields_set:
        assert any(key in DATA_KEYS[b] for b in config.eval.benchmarks if b in DATA_KEYS), key


def test_unknown_data_key_is_an_error_at_load_time_naming_it():
    with pytest.raises(Exception, match="coco_annotations"):
        load_config("configs/llava15-7b.yaml", ["eval.data.coco_annotations=data/coco2014/annotations"])


def test_a_benchmark_reads_only_the_keys_it_declares():
    config = load_config("configs/llava15-7b.yaml", check_machine=False)
    view = DataView(config.eval.data, "mmhal", "project")
    assert view.mmhal.endswith("mmhal-bench_with_image.jsonl")
    with pytest.raises(KeyError, match="coco_instances"):
        view.coco_instances


def _llava_files(root: Path, config):
    """Small files at the paths configs/llava15-7b.yaml names (relative to root)."""
    data = config.eval.data
    for rel in data.coco_instances.split(",") + data.coco_captions.split(",") + [data.object_halbench]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
    val_i, train_i = data.coco_instances.split(",")
    val_c, train_c = data.coco_captions.split(",")
    cats = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]
    (root / val_i).write_text(json.dumps({"categories": cats, "annotations": [{"image_id": 1, "category_id": 18}]}))
    (root / train_i).write_text(json.dumps({"categories": cats, "annotations": [{"image_id": 2, "category_id": 1}]}))
    (root / val_c).write_text(json.dumps({"annotations": [{"image_id": 1, "caption": "A dog on a sofa."}]}))
    (root / train_c).write_text(json.dumps({"annotations": [{"image_id": 2, "caption": "A man with a cup."}]}))
    rows = [{"image_id": i, "question": f"Describe {i}.", "image": _png_b64()} for i in (1, 2)]
    (root / data.object_halbench).write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_llava15_config_loads_with_object_halbench_truth_populated(tmp_path, monkeypatch):
    config = load_config("configs/llava15-7b.yaml", check_machine=False)
    _llava_files(tmp_path, config)
    monkeypatch.chdir(tmp_path)
    policy = ScriptedVLM({"Describe 1.": "A dog on a couch and a cat.", "Describe 2.": "A man holds a cup."})
    record = run_benchmark("object_halbench", policy, config.eval)  # no judge configured here: LLM-free
    # truth: 1 {dog, couch} (val instances + captions), 2 {person, cup} (train files); cat hallucinated
    assert record["metrics"]["chair_s"] == pytest.approx(1 / 2)
    assert record["metrics"]["chair_i"] == pytest.approx(1 / 5)
    assert record["metrics"]["recall"] == pytest.approx(4 / 4)


def test_missing_truth_file_is_an_error_before_any_model_runs(tmp_path, monkeypatch):
    config = load_config("configs/llava15-7b.yaml", check_machine=False)
    _llava_files(tmp_path, config)
    monkeypatch.chdir(tmp_path)
    (tmp_path / config.eval.data.coco_captions.split(",")[1]).unlink()

    class Refuses(ScriptedVLM):
        def generate(self, prompts, settings):
            raise AssertionError("a model ran before the data check")

    with pytest.raises(FileNotFoundError, match="captions_train2014.json.*eval.data.coco_captions"):
        run_benchmark("object_halbench", Refuses({}), config.eval)


def test_empty_truth_for_an_image_is_an_error_naming_the_files(tmp_path, monkeypatch):
    config = load_config("configs/llava15-7b.yaml", check_machine=False)
    _llava_files(tmp_path, config)
    monkeypatch.chdir(tmp_path)
    bench = tmp_path / config.eval.data.object_halbench
    bench.write_text(bench.read_text() + json.dumps({"image_id": 3, "question": "Describe 3.", "image": _png_b64()}) + "\n")
    with pytest.raises(ValueError, match=r"no COCO ground truth for 1 benchmark images \(e.g. \[3\]\).*instances_val2014"):
        run_benchmark("object_halbench", ScriptedVLM({}), config.eval)


def test_selection_on_object_halbench_and_mmhal():
    config = load_config("configs/llava15-7b.yaml", check_machine=False)
    scores = {"start": {"object_halbench.chair_s": 0.50, "object_halbench.recall": 0.80, "mmhal.hallucination_rate": 0.40},
              "step-10": {"object_halbench.chair_s": 0.40, "object_halbench.recall": 0.79, "mmhal.hallucination_rate": 0.60},
              "step-20": {"object_halbench.chair_s": 0.45, "object_halbench.recall": 0.80, "mmhal.hallucination_rate": 0.30}}
    # sums: start 0.90, step-10 1.00 (better CHAIRs alone, worse MMHal), step-20 0.75
    assert metric_value(scores["step-10"], config.selection.objective) == pytest.approx(1.0)
    assert select_checkpoint(scores, config.selection, baseline_recall=0.80).chosen == "step-20"
    with pytest.raises(KeyError, match="mmhal.score"):
        metric_value(scores["start"], "object_halbench.chair_s + mmhal.score")


@pytest.mark.parametrize("flow_module", ["flows.iterate", "flows.evaluate"])
def test_a_missing_benchmark_file_stops_the_flow_before_any_model_runs(flow_module, tmp_path, monkeypatch):
    """The flows check every configured benchmark's files first: iterate's first stage evaluates the
    starting policy on Object HalBench, so a missing MMHal file found only when MMHal runs would come
    after a model had run (and, at 7B, after an hour)."""
    import importlib

    import rlaifv_core.evals.registry as registry

    def no_model(*args, **kwargs):
        raise AssertionError("a benchmark ran although a data file is missing")

    monkeypatch.setattr(registry, "run_benchmark", no_model)
    store = tmp_path / "store"
    config = load_config("configs/shapes.yaml", [f"store.url={store}", "eval.benchmarks=[shapes,mmhal]",
                                                 f"eval.data.mmhal={tmp_path / 'missing' / 'mmhal.json'}",
                                                 "models.eval_judge={backend: openai, name_or_path: j, base_url: 'http://127.0.0.1:9/v1'}"],
                         check_machine=False)  # load_config itself would refuse it (tests/test_config_checks.py)
    module = importlib.import_module(flow_module)
    body = module._iterate if flow_module == "flows.iterate" else (lambda c: module._evaluate(c, None))
    with pytest.raises(FileNotFoundError, match=r"missing/mmhal.json: no such file \(eval.data.mmhal, benchmark 'mmhal'\)"):
        body(config)
    assert not store.exists()  # nothing was written either
