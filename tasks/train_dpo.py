"""Tasks: reference log-probs (once per iteration) and DPO training with checkpoints in the run store.

    ref = reference_logps(pairs_ref, policy_spec, policy_ckpt, policy_fp, config.dpo, config.store,
                          "iter-2/ref_logps.parquet")
    trained = train_dpo(pairs_ref, ref, policy_spec, policy_ckpt, policy_fp, config.dpo, config.store, "iter-2")
    trained.checkpoints   # [CheckpointRef(step, epoch, ref)] → iter-2/checkpoints/step-<n>

The reference is the iteration's starting policy (the model selected at the end of iteration k−1),
named explicitly by spec + checkpoint + fingerprint. `reference_logps` is cached on the pairs' hash,
the reference fingerprint, the precision and the source; `train_dpo` on the pairs' hash, the
reference log-probs' hash, the reference fingerprint, the DPO section and the source. A retried (or
re-run) `train_dpo` resumes from the latest complete checkpoint of its local work folder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Optional

from prefect import task
from prefect.cache_policies import TASK_SOURCE, CachePolicy
from prefect.logging import get_run_logger
from pydantic import BaseModel

from rlaifv_core.config import DPOConfig, ModelSpec, StoreConfig
from rlaifv_core.store import MANIFEST, ArtifactRef, RunStore, sha256_bytes

from .common import CoreSource, Progress, holds_models, local_checkpoint, stage_hook, store_of


class _KeyOf(CachePolicy):
    """Cache key from the named inputs only (artifact hashes, fingerprints, config sections); where a
    model or table lives does not matter, what it is does. The core's source is keyed by CoreSource."""

    def __init__(self, *names: str):
        super().__init__()
        self.names = names

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs) -> Optional[str]:
        parts = {}
        for name in self.names:
            head, _, attr = name.partition(".")
            value = inputs.get(head)
            if attr and value is not None:
                value = getattr(value, attr)
            if isinstance(value, ArtifactRef):
                value = value.sha256
            elif isinstance(value, BaseModel):
                value = value.model_dump(mode="json")
            parts[name] = value
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class CheckpointRef(BaseModel):
    step: int
    epoch: float | None
    ref: ArtifactRef


class TrainDPOResult(BaseModel):
    checkpoints: list[CheckpointRef]
    metrics: dict[str, float]
    global_step: int
    resumed_from: int | None
    num_pairs: int
    log: ArtifactRef | None


def _model_dir(spec: ModelSpec, store: StoreConfig, checkpoint: ArtifactRef | None) -> str:
    from rlaifv_core.models import resolve_model_path

    local = local_checkpoint(store, checkpoint)
    return str(local) if local is not None else resolve_model_path(spec.name_or_path)


def _work_dir(run_store: RunStore, store: StoreConfig, folder: str, key: str) -> Path:
    """Local trainer folder (checkpoint-N, optimizer state) that a retry resumes from."""
    if run_store.is_local:
        return Path(run_store.root) / folder / ".train-work" / key
    from rlaifv_core.store import cache_root

    return cache_root() / "train" / store.run_name / folder / key


@task(name="reference-logps", persist_result=True, log_prints=False, retries=2, retry_delay_seconds=5,
      cache_policy=_KeyOf("pairs_ref", "reference_fingerprint", "dpo.dtype", "store", "out_path") + TASK_SOURCE
      + CoreSource("rlaifv_core.training"))
@holds_models("reference")
def reference_logps(pairs_ref: ArtifactRef, reference: ModelSpec, reference_checkpoint: ArtifactRef | None,
                    reference_fingerprint: str, dpo: DPOConfig, store: StoreConfig, out_path: str) -> ArtifactRef:
    """Summed and per-token reference log-probs of every pair (`iter-<k>/ref_logps.parquet`); of the
    DPO section only the precision (`dtype`) and `ref_batch_size` matter, and only `dtype` is keyed."""
    stage_hook("reference", out_path)
    import rlaifv_core.training as core

    logger = get_run_logger()
    run_store = store_of(store)
    pairs = run_store.read_table(pairs_ref)
    model_dir = _model_dir(reference, store, reference_checkpoint)
    logger.info(f"reference log-probs of {len(pairs)} pairs under {model_dir} ({reference_fingerprint})")
    if len(pairs) == 0:
        import pandas as pd

        frame = pd.DataFrame({c: [] for c in core.REF_FRAME_COLUMNS})
    else:
        frame = core.compute_reference_logps(model_dir, pairs, dpo=dpo, progress=Progress("reference log-probs"))
    frame["reference_fingerprint"] = reference_fingerprint
    return run_store.write_table(out_path, frame, schema="ref_logps")


def _progress_callback():
    from transformers import TrainerCallback

    progress = Progress("DPO training")

    class _Report(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            progress(state.global_step, state.max_steps or 1)
            stage_hook("dpo-step", f"step-{state.global_step}")

    return _Report()


PROVENANCE = "rlaifv_training.json"


def _existing_folder(run_store: RunStore, relpath: str, provenance: dict) -> ArtifactRef | None:
    """The ref of a checkpoint folder already complete in the store *from this very training*
    (a retry after a partial export); a folder left by another configuration is rewritten."""
    if not run_store.exists(relpath) or not run_store.exists(f"{relpath}/{PROVENANCE}"):
        return None
    try:
        if json.loads(run_store.read_bytes(f"{relpath}/{PROVENANCE}", verify=False)) != provenance:
            return None
    except ValueError:
        return None
    manifest = run_store.read_bytes(f"{relpath}/{MANIFEST}", verify=False)
    return ArtifactRef(uri=run_store.uri(relpath), sha256=sha256_bytes(manifest), rows=len(json.loads(manifest)),
                       schema_name="checkpoint")


@task(name="train-dpo", persist_result=True, log_prints=False, retries=2, retry_delay_seconds=10,
      cache_policy=_KeyOf("pairs_ref", "ref_logps_ref", "policy_fingerprint", "dpo", "store", "folder") + TASK_SOURCE
      + CoreSource("rlaifv_core.training"))
@holds_models("dpo")
def train_dpo(pairs_ref: ArtifactRef, ref_logps_ref: ArtifactRef, policy: ModelSpec,
              policy_checkpoint: ArtifactRef | None, policy_fingerprint: str, dpo: DPOConfig, store: StoreConfig,
              folder: str) -> TrainDPOResult:
    """DPO from the starting policy against the cached reference; every checkpoint goes to
    `<folder>/checkpoints/step-<n>` as a complete model folder (LoRA: merged, adapter in `adapter/`)."""
    stage_hook("dpo", folder)
    import rlaifv_core.training as core

    logger = get_run_logger()
    run_store = store_of(store)
    pairs = run_store.read_table(pairs_ref)
    ref_logps = run_store.read_table(ref_logps_ref)
    if len(pairs) == 0:
        logger.warning("no pairs: nothing to train")
        return TrainDPOResult(checkpoints=[], metrics={}, global_step=0, resumed_from=None, num_pairs=0, log=None)
    key = hashlib.sha256("|".join([pairs_ref.sha256, ref_logps_ref.sha256, policy_fingerprint,
                                   dpo.fingerprint()]).encode()).hexdigest()[:16]
    work = _work_dir(run_store, store, folder, key)
    work.mkdir(parents=True, exist_ok=True)
    model_dir = _model_dir(policy, store, policy_checkpoint)
    job = core.TrainJob(model_dir=model_dir, pairs_path=str(work / "pairs.parquet"),
                        ref_logps_path=str(work / "ref_logps.parquet"), output_dir=str(work / "trainer"), dpo=dpo)
    if dpo.launcher == "accelerate":  # the subprocess reads its inputs from files
        pairs.to_parquet(job.pairs_path, index=False)
        ref_logps.to_parquet(job.ref_logps_path, index=False)
        result = core.launch(job, log_fn=logger.info)
    else:
        result = core.launch(job, log_fn=logger.info, pairs=pairs, ref_logps=ref_logps,
                             callbacks=[_progress_callback()])
    from rlaifv_core.backends import memory

    memory.release()  # the trainer's policy is gone before an export loads the base model (LoRA merge)
    checkpoints = []
    for info in result.checkpoints:
        relpath = f"{folder}/checkpoints/step-{info.step}"
        provenance = {"training": key, "step": info.step, "epoch": info.epoch, "pairs": pairs_ref.sha256,
                      "ref_logps": ref_logps_ref.sha256, "start_policy": policy_fingerprint, "lora": info.lora,
                      "dpo": dpo.model_dump(mode="json")}
        ref = _existing_folder(run_store, relpath, provenance)
        if ref is None:
            staging = work / "export" / f"step-{info.step}"
            shutil.rmtree(staging, ignore_errors=True)
            core.export_checkpoint(info.path, staging, base_model_dir=model_dir, dpo=dpo)
            (staging / PROVENANCE).write_text(json.dumps(provenance, indent=1, sort_keys=True))
            ref = run_store.write_folder(relpath, staging)
            shutil.rmtree(staging, ignore_errors=True)
        checkpoints.append(CheckpointRef(step=info.step, epoch=info.epoch, ref=ref))
        logger.info(f"checkpoint step {info.step} (epoch {info.epoch}) → {ref.uri}")
    log_ref = run_store.write_json(f"{folder}/train_log.json", result.log_history, schema="train_log")
    metrics = {k: v for k, v in result.metrics.items() if not k.startswith("train_")}
    logger.info("DPO: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    shutil.rmtree(work, ignore_errors=True)  # every checkpoint is in the store now; the task result is the record
    try:
        work.parent.rmdir()  # `.train-work` once no other training of this folder is in flight
    except OSError:
        pass
    return TrainDPOResult(checkpoints=checkpoints, metrics=metrics, global_step=result.global_step,
                          resumed_from=result.resumed_from, num_pairs=result.num_pairs, log=log_ref)

