"""The main job: N RLAIF-V iterations, cached, resumable, retried and observable.

    python flows/iterate.py                                     # the shapes world (configs/shapes.yaml)
    python flows/iterate.py --config configs/llava15-7b.yaml    # the paper's recipe on GPUs
    python flows/iterate.py iteration.iterations=2 prompts.per_iteration=100 store.run_name=quick

For k = 1..N: fresh prompts → generate (sample, split, rewrite, judge, pairs) with the current
policy → reference log-probs with the current policy → DPO → evaluate every checkpoint (and the
starting policy) → select the best → it becomes the next policy and reference. Every stage is a
content-cached task, so a killed run started again with the same config recomputes nothing that
had finished. Prints a per-iteration table and the path of summary.json / summary.png.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from prefect import flow, tags
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flows.generate import GenerateResult, generate  # noqa: E402
from flows.lock import holding_run  # noqa: E402
from flows.names import named, run_name_of_config, run_tags, tag_this_run  # noqa: E402
from flows.outcome import finish, warnings_of  # noqa: E402
from flows.runner import gpu_guarded  # noqa: E402
from rlaifv_core.config import RunConfig, load_config  # noqa: E402
from rlaifv_core.selection import metric_value, select_checkpoint  # noqa: E402
from rlaifv_core.store import ArtifactRef  # noqa: E402
from rlaifv_core.summary import summary_plot, summary_table_markdown  # noqa: E402
from tasks.common import (artifact_key, checkpoint_fingerprint, result_storage_for, retry_options,  # noqa: E402
                          store_of, table_artifact)
from tasks.evaluate import evaluate_model  # noqa: E402
from tasks.train_dpo import checked_training, reference_logps, train_dpo  # noqa: E402

DEFAULT_CONFIG = load_config()


class IterationResult(BaseModel):
    iteration: int
    selected: str
    policy: ArtifactRef | None
    metrics: dict[str, float]
    pairs: int
    pair_counts: dict
    counts: dict
    dpo_metrics: dict[str, float]
    scores: dict[str, dict[str, float]]


def _flat(record: dict) -> dict[str, float]:
    return {f"{record['benchmark']}.{k}": v for k, v in record["metrics"].items()}


@flow(name="evaluate-checkpoints", flow_run_name="{purpose}-iter-{iteration}", log_prints=True)
def evaluate_checkpoints(config: RunConfig, iteration: int, candidates: dict[str, ArtifactRef | None],
                         purpose: Literal["evaluate", "report"] = "evaluate") -> dict[str, dict]:
    """Every candidate (name → checkpoint, None = the configured policy) on every benchmark
    (`eval.benchmarks`; with purpose `report`, the report split `eval.report_benchmarks`): one
    checkpoint after another (its benchmarks at once, sharing the one loaded copy), so a device holds
    a single policy, never every checkpoint of the iteration."""
    run_store = store_of(config.store)
    task = evaluate_model.with_options(result_storage=result_storage_for(config.store),
                                       **retry_options(config.iteration))
    benchmarks = config.eval.report_benchmarks if purpose == "report" else config.eval.benchmarks
    scores: dict[str, dict] = {name: {} for name in candidates}
    for name, checkpoint in candidates.items():
        fingerprint = checkpoint_fingerprint(config.models.policy, checkpoint)
        futures = []
        for bench in benchmarks:
            run = gpu_guarded(named(task, f"{purpose}-iter-{iteration}-{name}-{bench}"), config.scale)
            futures.append(run.submit(config.models.policy, checkpoint, fingerprint, bench, config.eval,
                                      config.models.eval_judge, config.store,
                                      f"iter-{iteration}/eval/{name}/{bench}.json"))
        for future in futures:  # this checkpoint is done (and released) before the next one loads
            scores[name].update(_flat(run_store.read_json(future.result())))
    return scores


@flow(name="train", flow_run_name="train-iter-{iteration}", log_prints=True)
def train_iteration(config: RunConfig, iteration: int, pairs: ArtifactRef, policy: ArtifactRef | None):
    """Reference log-probs with the current policy (it is also the reference), then DPO."""
    storage = result_storage_for(config.store)
    retry = retry_options(config.iteration)
    policy_fp = checkpoint_fingerprint(config.models.policy, policy)
    ref = gpu_guarded(named(reference_logps.with_options(result_storage=storage, **retry),
                            f"reference-logps-iter-{iteration}"), config.scale)(
        pairs, config.models.policy, policy, policy_fp, config.dpo, config.store, f"iter-{iteration}/ref_logps.parquet")
    trainer = gpu_guarded(named(train_dpo.with_options(result_storage=storage, **retry),
                                f"train-dpo-iter-{iteration}"), config.scale)
    return checked_training(trainer, pairs, ref, config.models.policy, policy, policy_fp, config.dpo, config.store,
                            f"iter-{iteration}")


@flow(name="iteration", flow_run_name="iteration-{iteration}", log_prints=True)
def run_iteration(config: RunConfig, iteration: int, policy: ArtifactRef | None, start_scores: dict[str, float],
                  baseline_recall: float) -> IterationResult:
    data: GenerateResult = generate(config, iteration=iteration, policy_checkpoint=policy)
    trained = train_iteration(config, iteration, data.pairs, policy)
    candidates = {"start": policy} | {f"step-{c.step}": c.ref for c in trained.checkpoints}
    # The starting policy comes first, so a checkpoint must be strictly better to replace it.
    scores = {"start": start_scores} | evaluate_checkpoints(config, iteration,
                                                            {k: v for k, v in candidates.items() if k != "start"})
    decision = select_checkpoint(scores, config.selection, baseline_recall=baseline_recall)
    store_of(config.store).write_json(f"iter-{iteration}/selection.json", decision.as_dict(), schema="selection")
    print(f"iteration {iteration}: selected {decision.chosen} ({decision.rule})")
    result = IterationResult(iteration=iteration, selected=decision.chosen, policy=candidates[decision.chosen],
                             metrics=scores[decision.chosen], pairs=data.pairs.rows or 0,
                             pair_counts=data.counts["pairs"], counts=data.counts,
                             dpo_metrics=trained.metrics, scores=scores)
    return finish(result, warnings_of(result.pair_counts))


@flow(name="iterate", flow_run_name=run_name_of_config, log_prints=True)
def iterate(config: RunConfig = DEFAULT_CONFIG) -> dict:
    """RLAIF-V: `config.iteration.iterations` rounds of feedback → DPO → evaluation → selection.
    Returns the summary dict; a run with degenerate feedback ends "Completed with warnings"."""
    tag_this_run(*run_tags(config))
    with tags(*run_tags(config)), holding_run(config):
        summary = _iterate(config)
    return finish(summary, summary["warnings"])


def _iterate(config: RunConfig) -> dict:
    from rlaifv_core.config_checks import check_config
    from rlaifv_core.evals.registry import check_benchmark_data

    check_benchmark_data(config.eval)  # before any model runs
    check_config(config, where="iterate")  # what load_config checks, for a run whose config came from a form
    run_store = store_of(config.store)
    run_store.write_json("config.json", config.model_dump(mode="json"), schema="config")
    with tags(*run_tags(config, 0)):
        start = evaluate_checkpoints(config, 0, {"start": None})["start"]
        report = report_scores(config, 0, "start", None)
    baseline_recall = metric_value(start, config.selection.tie_breaker)
    rows = [{"iteration": 0, "selected": "start", "pairs": 0, "metrics": start, "report": report}]
    policy: ArtifactRef | None = None
    for iteration in range(1, config.iteration.iterations + 1):
        with tags(*run_tags(config, iteration)):
            result = run_iteration(config, iteration, policy, start, baseline_recall)
            if result.selected != "start":  # a kept starting policy keeps its report scores
                report = report_scores(config, iteration, result.selected, result.policy)
        policy, start = result.policy, result.metrics
        rows.append({"iteration": iteration, "selected": result.selected, "pairs": result.pairs,
                     "metrics": result.metrics, "report": report, "pair_counts": result.pair_counts,
                     "counts": result.counts, "dpo": result.dpo_metrics,
                     "policy": result.policy.uri if result.policy else None})
    return write_summary(config, rows)


def report_scores(config: RunConfig, iteration: int, name: str, policy: ArtifactRef | None) -> dict[str, float]:
    """The selected policy on the report split (`eval.report_benchmarks`, {} when none): run after
    selection, so no choice is ever made on these scenes."""
    if not config.eval.report_benchmarks:
        return {}
    return evaluate_checkpoints(config, iteration, {name: policy}, purpose="report")[name]


SUMMARY_METRICS = ("chair_i", "chair_s", "recall", "f1", "words_per_answer", "mentions_per_answer",
                   "hallucinated_per_answer", "correct_per_answer", "chair_s_refine", "score", "hallucination_rate")
DPO_METRICS = ("rewards/accuracies", "rewards/margins", "loss")


def iterations_table(rows: list[dict], metric_names: list[str]) -> list[dict]:
    """The iterations table artifact's rows: selection, pairs, metrics, DPO metrics and skip counts
    (every row gets every column: iteration 0 trained nothing, its DPO and skip cells are empty)."""
    return [{"iteration": r["iteration"], "selected": r["selected"], "pairs": r["pairs"],
             **{k: round(v, 4) for k, v in r["metrics"].items() if k in metric_names},
             **{f"dpo.{k}": round(v, 4) for k, v in (r.get("dpo") or {}).items() if k in DPO_METRICS},
             **{f"skipped.{k.split('_', 1)[1]}": v for k, v in (r.get("pair_counts") or {}).items()
                if k.startswith(("dropped_", "skipped_"))},
             **{f"audit.{k[len('audit_'):]}": v for k, v in (r.get("pair_counts") or {}).items()
                if k.startswith("audit_")}}
            for r in rows]


def _change(name: str, first: float, last: float) -> str:
    if name.split(".", 1)[-1] in ("recall", "cover"):
        return f"{first:.3f} → {last:.3f} ({100 * (last - first):+.1f} points)"
    relative = f", {100 * (last - first) / first:+.0f} %" if first else ""
    return f"{first:.3f} → {last:.3f}{relative}"


def summary_words(config: RunConfig, rows: list[dict]) -> str:
    """The result in one paragraph: what the selection metric and its guard did, and what was kept;
    measured on the report split when there is one (selection never saw it)."""
    selection = config.selection
    where = "report" if rows[0].get("report") else "metrics"
    first, last = rows[0][where], rows[-1][where]
    done = len(rows) - 1
    kept = [r for r in rows[1:] if r["selected"] != "start"]
    parts = []
    names = (selection.metric, selection.tie_breaker, "f1")
    if where == "report":  # the report benchmarks are others than selection's: match by metric
        names = tuple(n.split(".", 1)[-1] for n in names)
    for name in names:
        try:
            key = next(k for k in last if k == name or k.split(".", 1)[-1] == name)
            parts.append(f"{key} {_change(key, metric_value(first, key), metric_value(last, key))}")
        except (StopIteration, KeyError):
            continue
    final = (f"the final policy is iteration {kept[-1]['iteration']}'s {kept[-1]['selected']}" if kept
             else "no checkpoint beat the starting policy, which stays the final policy")
    on = " on the report split (never used for selection)" if where == "report" else ""
    return (f"After {done} iteration{'s' if done != 1 else ''} of RLAIF-V (feedback → DPO → evaluation → selection){on}: "
            + ("; ".join(parts) or "no metrics") + f". {final.capitalize()}; "
            f"{sum(r['pairs'] for r in rows)} preference pairs in all.")


def summary_markdown(config: RunConfig, rows: list[dict], shown: list[dict], metric_names: list[str], png: bytes,
                     links: dict[str, str | None]) -> str:
    """The run summary artifact: the result in words, the table, the plot (inline PNG, which the
    Prefect UI renders: its markdown sanitizer lets `data:image/` sources through) and where things are."""
    import base64

    recipe = (f"{config.iteration.iterations} iterations × {config.prompts.per_iteration} prompts "
              f"({config.prompts.source}), {config.sampling.n} samples per prompt, pairs: {config.pairs.builder}, "
              f"DPO β {config.dpo.beta} lr {config.dpo.learning_rate:g} for {config.dpo.epochs:g} epoch(s); "
              f"selection: lowest {config.selection.objective} with {config.selection.tie_breaker} at most "
              f"{config.selection.max_recall_drop:g} below the start")
    lines = [f"# RLAIF-V run {config.store.run_name}", "", summary_words(config, rows), "",
             summary_table_markdown(shown, metric_names), "",
             f"![hallucination and recall per iteration](data:image/png;base64,{base64.b64encode(png).decode()})", "",
             "**Where the results are**", ""]
    lines += [f"- {label}: `{uri}`" if uri else f"- {label}: none" for label, uri in links.items()]
    lines += ["", f"**Config**: {recipe}."]
    return "\n".join(lines)


def write_summary(config: RunConfig, rows: list[dict]) -> dict:
    run_store = store_of(config.store)
    warnings = [f"iteration {r['iteration']}: {w}" for r in rows for w in warnings_of(r.get("pair_counts"))]
    summary = {"run": config.store.run_name, "iterations": rows, "final_policy": rows[-1].get("policy"),
               "warnings": warnings}
    json_ref = run_store.write_json("summary.json", summary, schema="summary")
    # selection's scores and the report split's side by side (their keys never collide: benchmark.metric)
    shown = [r | {"metrics": r["metrics"] | r.get("report", {})} for r in rows]
    png = summary_plot(shown, f"RLAIF-V: {config.store.run_name}")
    png_ref = run_store.write_bytes("summary.png", png, schema="png")
    metric_names = [m for m in shown[0]["metrics"] if m.split(".", 1)[-1] in SUMMARY_METRICS]
    table_artifact(artifact_key(config.store.run_name, "iterations"), iterations_table(shown, metric_names),
                   "one row per iteration (0 = the starting policy)")
    links = {"summary (JSON)": json_ref.uri, "plot (PNG)": png_ref.uri,
             "final checkpoint": summary["final_policy"] or f"the starting policy ({config.models.policy.name_or_path})",
             "config": run_store.uri("config.json")}
    markdown = summary_markdown(config, rows, shown, metric_names, png, links)
    if warnings:  # degenerate feedback is never a quiet Completed (nor is the flow's state: flows/outcome.py)
        markdown += "\n\n**WARNINGS**\n\n" + "\n".join(f"- {w}" for w in warnings)
        for line in warnings:
            print(f"WARNING: {line}")
    create_markdown_artifact(key=artifact_key(config.store.run_name, "summary"), markdown=markdown,
                             description="RLAIF-V run summary")
    print(summary_words(config, rows))
    print(summary_table_markdown(shown, metric_names))
    print(f"summary: {json_ref.uri}\nplot:    {png_ref.uri}")
    return summary


def main(argv: list[str] | None = None) -> dict:
    from flows.cli import parse_config

    config, _ = parse_config(__doc__.splitlines()[0], argv)
    return iterate(config)


if __name__ == "__main__":
    from flows.signals import run_main

    run_main(main)
