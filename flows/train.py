"""DPO on any preference-pairs dataset: ours, or the public RLAIF-V-Dataset format.

    python flows/train.py --pairs runs/shapes/iter-1/pairs.parquet --model shapes:policy
    python flows/train.py --pairs openbmb/RLAIF-V-Dataset --limit 2000 --model llava-hf/llava-1.5-7b-hf \\
        --config configs/llava15-7b.yaml dpo.lora=true dpo.learning_rate=1e-5
    python flows/train.py --pairs s3://bucket/pairs/ --model ./policy --reference ./reference dpo.epochs=1

Checks every pair before any model loads (`rlaifv_core.training.check_pairs`: equal or empty sides,
non-text values, undecodable or blank images, image placeholders in questions and duplicate rows are
counted skips naming the row; a file that is not parquet, or one without a usable pair, is an error
naming it), imports the usable ones into the run store (`iter-<k>/pairs.parquet`, images inlined) with
their counts (printed, an `…-counts` table artifact, `TrainFlowResult.pair_counts`), computes the
reference log-probs once (the reference is `--reference`, default the starting model itself), then
trains with TRL's DPOTrainer and writes every checkpoint to `iter-<k>/checkpoints/step-<n>`.
Prints the checkpoints and the final DPO metrics. Every stage is a cached Prefect task: a re-run
with the same inputs recomputes nothing, a retried training resumes from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

from prefect import flow, tags, task
from pydantic import Field

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python flows/train.py` from a checkout

from flows.lock import holding_run  # noqa: E402
from flows.names import named, prefixed_run_name, run_tags  # noqa: E402
from flows.runner import gpu_guarded  # noqa: E402
from rlaifv_core.config import RunConfig, StoreConfig  # noqa: E402
from rlaifv_core.models import model_fingerprint  # noqa: E402
from rlaifv_core.store import ArtifactRef  # noqa: E402
from tasks.common import (artifact_key, counts_table, result_storage_for, retry_options, stage_cache,  # noqa: E402
                          store_of)
from tasks.train_dpo import TrainDPOResult, checked_training, reference_logps, train_dpo  # noqa: E402

PAIR_COLUMNS = ["ds_name", "image", "question", "chosen", "rejected", "origin_dataset", "origin_split", "idx",
                "image_path"]


def source_fingerprint(source: str, split: str, limit: int | None) -> str:
    """Identity of a pairs source: content-derived for files (names, sizes, mtimes or object
    checksums), the id/split/limit for a hub dataset."""
    import fsspec

    local = Path(source)
    if "://" in source or local.exists():
        fs, path = fsspec.core.url_to_fs(source)
        files = sorted(fs.glob(f"{path.rstrip('/')}/**")) if fs.isdir(path) else [path]
        digest = hashlib.sha256()
        for file in files:
            if not fs.isdir(file):
                digest.update(f"{file}:{fs.ukey(file)}".encode())
        return f"{source}#{digest.hexdigest()[:16]}#{limit}"
    return f"hub:{source}@{split}[:{limit}]"


class TrainFlowResult(TrainDPOResult):
    """The training result plus the pairs import's counts: rows_in, pairs, each skip reason, examples."""

    pair_counts: dict[str, Any] = Field(default_factory=dict)


def retry_unless_bad_pairs(task, task_run, state) -> bool:
    """A pairs file that is not parquet, not found, lacks columns or has no usable pair fails the same way
    on every try (ValueError, FileNotFoundError): no retry. Anything else (a dropped S3 connection) retries."""
    try:
        state.result()
    except (ValueError, FileNotFoundError):
        return False
    except Exception:  # noqa: BLE001 - any other failure is worth the configured retries
        return True
    return True


@task(name="import-pairs", cache_policy=stage_cache("rlaifv_core.training", "rlaifv_core.images"),
      persist_result=True, retries=2, retry_delay_seconds=5, retry_condition_fn=retry_unless_bad_pairs)
def import_pairs(source: str, fingerprint: str, split: str, limit: int | None, data_root: str | None,
                 store: StoreConfig, out_path: str) -> tuple[ArtifactRef, dict]:
    """Any pairs source → a self-contained pairs table in the store (image bytes inlined), every row checked
    (`check_pairs`: bad rows are counted skips naming the row; no usable pair is an error naming the source)."""
    from rlaifv_core.training import check_pairs, load_pairs

    frame, counts = check_pairs(load_pairs(source, split=split, limit=limit), source, data_root)
    for column in PAIR_COLUMNS:
        if column not in frame.columns:
            frame[column] = "" if column != "idx" else range(len(frame))
    frame["idx"] = frame["idx"].astype(str)
    skips = {k: v for k, v in counts.items() if k.startswith("skipped_")}
    print(f"imported {counts['pairs']} of {counts['rows_in']} pairs from {source}"
          + (f"; skipped {sum(skips.values())}: {skips}" if skips else ""))
    for example in counts.get("examples", []):
        print(f"  skipped {example}")
    run_store = store_of(store)
    counts_table(artifact_key(run_store.run_name, out_path, "counts"), "import-pairs", counts)
    return run_store.write_table(out_path, frame, schema="pairs"), counts


@flow(name="train-dpo", flow_run_name=prefixed_run_name("train-dpo"), log_prints=True)
def train(config: RunConfig, pairs: str, model: str | None = None, iteration: int = 1, reference: str | None = None,
          limit: int | None = None, split: str = "train", data_root: str | None = None) -> TrainFlowResult:
    """Import pairs, reference log-probs (once), DPO with checkpoints every 1/k epoch."""
    with tags(*run_tags(config, iteration)), holding_run(config):
        return _train(config, pairs, model, iteration, reference, limit, split, data_root)


def _train(config: RunConfig, pairs: str, model: str | None, iteration: int, reference: str | None,
           limit: int | None, split: str, data_root: str | None) -> TrainFlowResult:
    storage = result_storage_for(config.store)
    retry = retry_options(config.iteration)
    policy = config.models.policy if model is None else config.models.policy.model_copy(update={"name_or_path": model})
    ref_spec = policy if reference is None else policy.model_copy(update={"name_or_path": reference})
    folder = f"iter-{iteration}"
    it = f"iter-{iteration}"
    pairs_ref, pair_counts = named(import_pairs.with_options(result_storage=storage), f"import-pairs-{it}")(
        pairs, source_fingerprint(pairs, split, limit), split, limit, data_root, config.store,
        f"{folder}/pairs.parquet")
    policy_fp = model_fingerprint(policy)
    ref_fp = model_fingerprint(ref_spec)
    ref_ref = gpu_guarded(named(reference_logps.with_options(result_storage=storage, **retry),
                                f"reference-logps-{it}"), config.scale)(
        pairs_ref, ref_spec, None, ref_fp, config.dpo, config.store, f"{folder}/ref_logps.parquet")
    trainer = gpu_guarded(named(train_dpo.with_options(result_storage=storage, **retry), f"train-dpo-{it}"),
                          config.scale)
    result = checked_training(trainer, pairs_ref, ref_ref, policy, None, _combined(policy_fp, ref_fp), config.dpo,
                              config.store, folder)
    for checkpoint in result.checkpoints:
        print(f"step {checkpoint.step:>6} epoch {checkpoint.epoch or 0:6.2f}  {checkpoint.ref.uri}")
    print("DPO: " + ", ".join(f"{k}={v:.4g}" for k, v in result.metrics.items()))
    return TrainFlowResult(**result.model_dump(), pair_counts=pair_counts)


def _combined(policy_fp: str, reference_fp: str) -> str:
    """The starting policy and the reference are the same model in RLAIF-V; when they differ both count."""
    return policy_fp if policy_fp == reference_fp else f"{policy_fp}+ref:{reference_fp}"


def main(argv: list[str] | None = None) -> TrainFlowResult:
    from flows.cli import parse_config

    def extra(parser):
        parser.add_argument("--pairs", required=True, help="pairs parquet file/folder, fsspec URL or datasets hub id")
        parser.add_argument("--model", default=None, help="starting policy (default: models.policy)")
        parser.add_argument("--reference", default=None, help="reference model (default: the starting policy)")
        parser.add_argument("--iteration", type=int, default=1, help="store folder iter-<k>")
        parser.add_argument("--limit", type=int, default=None, help="first n pairs only")
        parser.add_argument("--split", default="train", help="hub dataset split")
        parser.add_argument("--data-root", default=None, help="folder that relative image paths resolve in")

    config, args = parse_config(__doc__.splitlines()[0], argv, extra=extra)
    return train(config, args.pairs, model=args.model, iteration=args.iteration, reference=args.reference,
                 limit=args.limit, split=args.split, data_root=args.data_root)


if __name__ == "__main__":
    from flows.signals import run_main

    run_main(main)
