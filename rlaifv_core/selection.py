"""Checkpoint selection: the best of an iteration's checkpoints by a stated, recorded rule.

    from rlaifv_core.selection import select_checkpoint
    decision = select_checkpoint(scores, config.selection, baseline_recall=0.98)

`scores` maps a candidate name ("start" = the iteration's starting policy, "step-40", …) to its
flattened benchmark metrics ({"shapes.chair_s": …, "shapes.recall": …}). The rule: drop every
candidate whose recall fell more than `max_recall_drop` below the baseline (the run's initial
policy); among the rest take the lowest `metric`, ties broken by the highest `tie_breaker`, then
by the earliest candidate (`selection.plus` adds further metrics to `metric`, to select on several
benchmarks: the objective is then `a.x + b.y`). The starting policy competes when `include_start` is set, so an
iteration never selects something worse than what it started from by the rule's own measure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Selection:
    chosen: str
    rule: str
    eligible: list[str]
    excluded: dict[str, str]
    scores: dict[str, dict[str, float]]

    def as_dict(self) -> dict:
        return asdict(self)


def metric_value(metrics: dict[str, float], name: str) -> float:
    """`name` may be `bench.metric`, a bare metric found in exactly one benchmark, or a sum of such
    names (`object_halbench.chair_s + mmhal.hallucination_rate`: several benchmarks in one rule)."""
    if "+" in name:
        return sum(metric_value(metrics, part.strip()) for part in name.split("+"))
    if name in metrics:
        return metrics[name]
    matches = [k for k in metrics if k.split(".", 1)[-1] == name]
    if len(matches) != 1:
        raise KeyError(f"selection metric {name!r} is {'ambiguous' if matches else 'missing'} among {sorted(metrics)}")
    return metrics[matches[0]]


def select_checkpoint(scores: dict[str, dict[str, float]], config, baseline_recall: float | None = None) -> Selection:
    if not scores:
        raise ValueError("no candidate to select from")
    candidates = [name for name in scores if config.include_start or name != "start"]
    excluded = {}
    eligible = []
    for name in candidates:
        recall = metric_value(scores[name], config.tie_breaker) if baseline_recall is not None else None
        if recall is not None and recall < baseline_recall - config.max_recall_drop - 1e-12:
            excluded[name] = f"{config.tie_breaker} {recall:.3f} < baseline {baseline_recall:.3f} - {config.max_recall_drop}"
        else:
            eligible.append(name)
    if not eligible:  # nothing keeps recall: keep the starting policy if it competes, else the best-recall one
        fallback = "start" if "start" in scores else max(candidates, key=lambda n: metric_value(scores[n], config.tie_breaker))
        eligible = [fallback]
    order = {name: i for i, name in enumerate(candidates)}
    objective = config.objective  # the metric, or metric + plus…
    chosen = min(eligible, key=lambda n: (round(metric_value(scores[n], objective), 9),
                                          -metric_value(scores[n], config.tie_breaker), order.get(n, 0)))
    rule = (f"min {objective}, ties by max {config.tie_breaker}, excluding {config.tie_breaker} drops > "
            f"{config.max_recall_drop} below {baseline_recall if baseline_recall is not None else 'n/a'}; "
            f"start competes: {config.include_start}")
    return Selection(chosen=chosen, rule=rule, eligible=eligible, excluded=excluded, scores=scores)
