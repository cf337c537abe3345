"""Tasks: reference log-probs (once per iteration) and DPO training with checkpoints in the run store.

    ref = reference_logps(pairs_ref, policy_spec, policy_ckpt, policy_fp, config.dpo, config.store,
                          "iter-2/ref_logps.parquet")
    trained = train_dpo(pairs_ref, ref, policy_spec, policy_ckpt, policy_fp, config.dpo, config.store, "iter-2")
    trained.checkpoints   # [CheckpointRef(step, epoch, ref)] → iter-2/checkpoints/step-<n>

The reference is the iteration's starting policy (the model selected at the end of iteration k−1),
named explicitly by spec + checkpoint + fingerprint. `reference_logps` is cached on the pairs' hash,
the reference fingerprint, the precision (`dpo.dtype` and the device kind and precision it
computes in here) and the source; `train_dpo` on the pairs' hash, the
reference log-probs' hash, the reference fingerprint, the DPO section and the source. Each attempt
trains in its own work folder (`.train-work/<key>.<attempt>`); a retried (or re-run) attempt claims a
previous attempt's folder by renaming it and resumes from its latest complete checkpoint. A flow
trusts a (cached) result only once `checked_training` found every checkpoint it lists in the store,
and every checkpoint of that training in the store listed; otherwise it trains again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Optional

from prefect import task
from prefect.cache_policies import TASK_SOURCE, CachePolicy
from prefect.logging import get_run_logger
from pydantic import BaseModel

from rlaifv_core.config import DPOConfig, ModelSpec, StoreConfig
from rlaifv_core.diskfull import disk_full_as_error
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


class _Precision(CachePolicy):
    """The device kind and precision the reference pass computes in here (bf16 autocast on a GPU, fp32
    on the CPU: other numbers), so log-probs computed on one never serve a run on the other."""

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs) -> Optional[str]:
        from rlaifv_core.fingerprints import precision_key

        return precision_key(inputs["dpo"].dtype)


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
    training_key: str | None = None


def _model_dir(spec: ModelSpec, store: StoreConfig, checkpoint: ArtifactRef | None) -> str:
    from rlaifv_core.models import resolve_model_path

    local = local_checkpoint(store, checkpoint)
    return str(local) if local is not None else resolve_model_path(spec.name_or_path)


def _work_dir(run_store: RunStore, store: StoreConfig, folder: str, key: str) -> Path:
    """This attempt's local trainer folder (checkpoint-N, optimizer state): a fresh name, holding the
    folder of an earlier attempt of the same training if one is left (claimed by an atomic rename,
    the one with the most complete checkpoints; the others are removed)."""
    if run_store.is_local:
        base = Path(run_store.root) / folder / ".train-work"
    else:
        from rlaifv_core.store import cache_root

        base = cache_root() / "train" / store.run_name / folder
    from rlaifv_core.training import checkpoint_dirs

    mine = base / f"{key}.{uuid.uuid4().hex[:8]}"
    earlier = [p for p in base.glob(f"{key}*") if p.is_dir() and p.name.split(".", 1)[0] == key]
    earlier.sort(key=lambda p: len(checkpoint_dirs(p / "trainer")), reverse=True)
    for previous in earlier:
        try:
            os.rename(previous, mine)
            break
        except OSError:  # claimed by someone else meanwhile
            continue
    for previous in earlier:
        shutil.rmtree(previous, ignore_errors=True)
    return mine


def training_problems(result: TrainDPOResult, store: StoreConfig, folder: str) -> list[str]:
    """Why a training result cannot be trusted: a checkpoint it lists is missing from the store or
    differs there, or the store holds a checkpoint of this training that it does not list."""
    if not result.checkpoints:
        return []
    run_store = store_of(store)
    problems = []
    for checkpoint in result.checkpoints:
        relpath = f"{folder}/checkpoints/step-{checkpoint.step}"
        if not run_store.exists(relpath):
            problems.append(f"step-{checkpoint.step} is not in the store ({checkpoint.ref.uri})")
        elif sha256_bytes(run_store.read_bytes(f"{relpath}/{MANIFEST}", verify=False)) != checkpoint.ref.sha256:
            problems.append(f"step-{checkpoint.step} in the store is not the one the result lists")
    listed = {f"step-{c.step}" for c in result.checkpoints}
    for name in run_store.listdir(f"{folder}/checkpoints"):
        relpath = f"{folder}/checkpoints/{name}"
        if name in listed or not name.startswith("step-") or not run_store.exists(f"{relpath}/{PROVENANCE}"):
            continue
        try:
            training = json.loads(run_store.read_bytes(f"{relpath}/{PROVENANCE}", verify=False)).get("training")
        except ValueError:
            continue
        if training is not None and training == result.training_key:
            problems.append(f"{name} of this training is in the store but not in the result")
    return problems


def checked_training(task, *args) -> TrainDPOResult:
    """`task(*args)` (train_dpo, as the flow configured it), trained again (`refresh_cache`) when its
    result does not match the store (`training_problems`)."""
    store, folder = args[6], args[7]
    result = task(*args)
    problems = training_problems(result, store, folder)
    if problems:
        get_run_logger().warning(f"the training result of {folder} does not match the store ("
                                 + "; ".join(problems) + "): training again")
        result = task.with_options(refresh_cache=True)(*args)
        problems = training_problems(result, store, folder)
        if problems:
            raise RuntimeError(f"the training result of {folder} still does not match the store: "
                               + "; ".join(problems))
    return result


@task(name="reference-logps", persist_result=True, log_prints=False, retries=2, retry_delay_seconds=5,
      cache_policy=_KeyOf("pairs_ref", "reference_fingerprint", "dpo.dtype", "store", "out_path") + TASK_SOURCE
      + CoreSource("rlaifv_core.training") + _Precision())
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
    with disk_full_as_error(work):
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
            with disk_full_as_error(staging):
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
        work.parent.rmdir()  # `.train-work` once no other attempt's folder is left in it
    except OSError:
        pass
    return TrainDPOResult(checkpoints=checkpoints, metrics=metrics, global_step=result.global_step,
                          resumed_from=result.resumed_from, num_pairs=result.num_pairs, log=log_ref,
                          training_key=key)

