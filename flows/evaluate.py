"""Evaluate checkpoints on benchmarks and print a table.

    python flows/evaluate.py                                   # the bootstrapped shapes policy
    python flows/evaluate.py --model runs/shapes/iter-1/checkpoints/step-40 --model shapes:policy
    python flows/evaluate.py --config configs/llava15-7b.yaml --model llava-hf/llava-1.5-7b-hf

Each (model, benchmark) is one cached task; records (metrics, n, judge identity, generation
settings) are written to the run store under `eval/` and summarised in a table artifact.
"""

from __future__ import annotations

import sys
from pathlib import Path

from prefect import flow, tags

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flows.lock import holding_run  # noqa: E402
from flows.names import named, prefixed_run_name, run_tags  # noqa: E402
from flows.runner import gpu_guarded  # noqa: E402
from rlaifv_core.config import RunConfig  # noqa: E402
from rlaifv_core.models import model_fingerprint  # noqa: E402
from tasks.common import artifact_key, result_storage_for, retry_options, store_of, table_artifact  # noqa: E402
from tasks.evaluate import evaluate_model  # noqa: E402


@flow(name="evaluate", flow_run_name=prefixed_run_name("evaluate"), log_prints=True)
def evaluate(config: RunConfig = RunConfig(), models: list[str] | None = None) -> list[dict]:
    """Evaluate each model (hub id, folder or shapes:policy; default: the configured policy)."""
    with tags(*run_tags(config)), holding_run(config):
        return _evaluate(config, models)


def _evaluate(config: RunConfig, models: list[str] | None) -> list[dict]:
    from rlaifv_core.evals.registry import check_benchmark_data

    check_benchmark_data(config.eval)  # before any model runs
    run_store = store_of(config.store)
    task = evaluate_model.with_options(result_storage=result_storage_for(config.store),
                                       **retry_options(config.iteration))
    rows = []
    for name in models or [config.models.policy.name_or_path]:
        spec = config.models.policy.model_copy(update={"name_or_path": name})
        fingerprint = model_fingerprint(spec)
        for bench in config.eval.benchmarks:
            label = name.rstrip("/").rsplit("/", 1)[-1]
            ref = gpu_guarded(named(task, f"evaluate-{label}-{bench}"), config.scale)(spec, None, fingerprint, bench, config.eval, config.models.eval_judge, config.store,
                       f"eval/{fingerprint[:12]}/{bench}.json")
            record = run_store.read_json(ref)
            rows.append({"model": name, "benchmark": bench, "n": record["n"],
                         **{k: round(v, 4) for k, v in record["metrics"].items()}, "record": ref.uri})
    table_artifact(artifact_key(config.store.run_name, "evaluation"), rows, "evaluation")
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    from flows.cli import parse_config

    config, args = parse_config(__doc__.splitlines()[0], argv,
                                extra=lambda p: p.add_argument("--model", action="append", default=None))
    rows = evaluate(config, args.model)
    keys = [k for k in rows[0] if k not in ("record",)] if rows else []
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(str(row[k]) for k in keys))
    print("records:", *sorted({row["record"] for row in rows}), sep="\n  ")
    return rows


if __name__ == "__main__":
    from flows.signals import run_main

    run_main(main)
