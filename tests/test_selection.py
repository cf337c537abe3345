"""The checkpoint-selection rule on hand-made scores."""

import pytest

from rlaifv_core.config import SelectionConfig
from rlaifv_core.selection import metric_value, select_checkpoint

RULE = SelectionConfig(metric="chair_s", tie_breaker="recall", max_recall_drop=0.10, include_start=True)


def s(chair_s, recall):
    return {"shapes.chair_s": chair_s, "shapes.recall": recall}


def test_lowest_hallucination_among_checkpoints_that_keep_recall():
    scores = {"start": s(0.34, 0.98), "step-10": s(0.20, 0.95), "step-20": s(0.05, 0.80), "step-30": s(0.15, 0.90)}
    decision = select_checkpoint(scores, RULE, baseline_recall=0.98)
    assert decision.chosen == "step-30"  # step-20 is better but lost 18 recall points
    assert "step-20" in decision.excluded and "recall" in decision.rule


def test_ties_go_to_recall_then_to_the_earliest_candidate():
    scores = {"start": s(0.20, 0.95), "step-10": s(0.10, 0.93), "step-20": s(0.10, 0.96)}
    assert select_checkpoint(scores, RULE, baseline_recall=0.98).chosen == "step-20"
    same = {"start": s(0.10, 0.96), "step-10": s(0.10, 0.96)}
    assert select_checkpoint(same, RULE, baseline_recall=0.98).chosen == "start"  # a tie never replaces the start


def test_start_wins_when_every_checkpoint_is_worse_and_is_the_fallback():
    scores = {"start": s(0.10, 0.95), "step-10": s(0.12, 0.96)}
    assert select_checkpoint(scores, RULE, baseline_recall=0.98).chosen == "start"
    collapsed = {"start": s(0.30, 0.70), "step-10": s(0.01, 0.40)}
    assert select_checkpoint(collapsed, RULE, baseline_recall=0.98).chosen == "start"


def test_without_the_start_only_checkpoints_compete():
    rule = RULE.model_copy(update={"include_start": False})
    scores = {"start": s(0.01, 0.99), "step-10": s(0.20, 0.95)}
    assert select_checkpoint(scores, rule, baseline_recall=0.98).chosen == "step-10"


def test_metric_lookup():
    assert metric_value({"shapes.recall": 0.5}, "recall") == 0.5
    with pytest.raises(KeyError, match="ambiguous"):
        metric_value({"a.recall": 0.5, "b.recall": 0.4}, "recall")
    with pytest.raises(KeyError, match="missing"):
        metric_value({"a.x": 1.0}, "recall")
