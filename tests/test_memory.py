"""Memory discipline: a stage holds only the models it needs and frees them when it ends.

    pytest -q tests/test_memory.py

Figures come from the backends' own accounting (rlaifv_core/backends/memory.py): every model the
backends and the training code load is counted until the garbage collector frees it.
"""

from __future__ import annotations

import pytest

from rlaifv_core.backends import memory
from rlaifv_core.config import ModelSpec, load_config
from rlaifv_core.models import forget_models, holding_models, open_model

from test_iterate import tiny_overrides


def _fresh() -> dict[str, int]:
    forget_models()
    return memory.resident()


def test_a_stage_drops_its_models_at_its_end_and_concurrent_holders_share_one(tiny_model_dir, other_model_dir):
    before = _fresh()
    with memory.recording() as log:
        with holding_models("a"):
            first = open_model(ModelSpec(name_or_path=str(tiny_model_dir)))
            with holding_models("b"):  # a concurrent shard of the same stage: the same copy
                assert open_model(ModelSpec(name_or_path=str(tiny_model_dir))) is first
            assert len(memory.resident()) == len(before) + 1  # "b" ended, "a" still holds it
            del first
        assert memory.resident() == before
        with holding_models("c"):
            open_model(ModelSpec(name_or_path=str(other_model_dir)))
        assert memory.resident() == before
    one = sum(v for k, v in log.peak_models.items() if k not in before)
    assert one > 0 and len(set(log.peak_models) - set(before)) == 1
    assert [m[:2] for m in log.marks] == [("a", "start"), ("b", "start"), ("b", "end"), ("a", "end"),
                                          ("c", "start"), ("c", "end")]
    assert log.marks[-1][2:] == (len(before), sum(before.values()))


def _model_bytes(model_dir) -> int:
    from transformers import AutoModelForImageTextToText

    return memory.parameter_bytes(AutoModelForImageTextToText.from_pretrained(str(model_dir)))


@pytest.mark.slow
@pytest.mark.parametrize("evicting", [True, False], ids=["held-per-stage", "never-evicted"])
def test_whole_iteration_peak_is_the_busiest_single_stage(prefect_server, tmp_path, tiny_model_dir,
                                                          other_model_dir, monkeypatch, evicting):
    """One iteration (start evaluation, sampling, judging, reference pass, DPO, evaluation of every
    checkpoint): at its peak the process holds exactly one model, the one the busiest stage needs
    (policy and labeler are models of the same size). Without eviction it holds several."""
    from flows.iterate import iterate
    from rlaifv_core.models import roles

    if not evicting:  # the old behaviour: every model opened stays cached for the life of the process
        monkeypatch.setattr(roles, "_let_go", lambda keys: None)
    overrides = tiny_overrides(tmp_path / "runs", tiny_model_dir) + [
        "iteration.iterations=1", f"models.labeler.name_or_path={other_model_dir}"]
    config = load_config("configs/shapes.yaml", overrides)
    need = max(_model_bytes(tiny_model_dir), _model_bytes(other_model_dir))
    before = _fresh()
    with memory.recording() as log:
        iterate(config)
    peak = {k: v for k, v in log.peak_models.items() if k not in before}
    stages = {stage for stage, phase, *_ in log.marks}
    assert {"evaluate", "sample", "judge", "reference", "dpo"} <= stages, log.marks
    for stage, phase, count, size in log.marks:
        print(f"{stage:>10} {phase:<5} models={count - len(before)} bytes={size - sum(before.values())}")
    if evicting:
        assert sum(peak.values()) == need and len(peak) == 1, peak
        assert memory.resident() == before  # every stage gave its models back
    else:
        assert sum(peak.values()) > need and len(peak) > 1, peak
    forget_models()
