"""One DPO training run in this process (one rank under `accelerate launch`), resumable and OOM-tolerant.

    from rlaifv_core.training import TrainJob, train
    result = train(TrainJob(model_dir="runs/…/policy-k-1", pairs_path=…, ref_logps_path=…,
                            output_dir="work/train", dpo=config.dpo))
    result.checkpoints   # every 1/checkpoints_per_epoch epoch: step, epoch, folder

The method (docs/method.md §7): sigmoid DPO on summed answer log-probs, β 0.1, cosine schedule with
5 % warm-up, AdamW with weight decay 0.01, a checkpoint every ¼ epoch; full fine-tuning trains the
language model and the projector with the vision tower frozen; LoRA (r 64, α 16, dropout 0.05)
adapts every linear layer of the language model only. A re-run with the same output folder resumes
from its latest complete checkpoint; an out-of-memory error halves the per-device batch and
doubles the gradient accumulation (same global batch, steps and checkpoints) and restarts from that
checkpoint. This module imports no Prefect.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import pandas as pd
from pydantic import BaseModel, Field

from ..backends.oom import refuse_under_multiprocess
from ..config import DPOConfig, ModelSpec
from ..models.lora import is_lora_adapter
from .export import TRAINING_STATE_FILES
from .model_setup import _torch, freeze_vision_tower, load_training_model, lora_config
from .pairs_data import load_pairs, load_pairs_table, to_trl_dataset
from .trainer import _classes
from .trl_args import build_trl_config

log = logging.getLogger(__name__)


class TrainJob(BaseModel):
    """Everything one training run needs; also the JSON job file of the accelerate entry point."""

    model_dir: str = Field(description="Starting policy (the model selected at the end of iteration k-1).")
    pairs_path: str = Field(description="Pairs: parquet file/folder (local or fsspec URL) or a datasets hub id.")
    output_dir: str = Field(description="Trainer output folder (checkpoint-N); a re-run resumes from it.")
    dpo: DPOConfig = Field(default_factory=DPOConfig, description="Our DPO section.")
    ref_logps_path: str | None = Field(None, description="Cached reference log-probs (compute_reference_logps).")
    reference_dir: str | None = Field(None, description="Live reference model folder (only without a cache).")
    data_root: str | None = Field(None, description="Folder that relative image paths resolve in.")
    pairs_limit: int | None = Field(None, description="Train on the first n pairs only.")
    result_path: str | None = Field(None, description="Where the main process writes the TrainResult JSON.")
    resume: bool = Field(True, description="Resume from the latest complete checkpoint in output_dir.")
    trl_overrides: dict[str, Any] = Field(default_factory=dict, description="Extra TRL DPOConfig arguments.")
    model_spec: ModelSpec | None = Field(None, description="The policy's spec: trust_remote_code and revision for loading.")


class CheckpointInfo(BaseModel):
    step: int
    epoch: float | None
    path: str
    lora: bool


class TrainResult(BaseModel):
    output_dir: str
    checkpoints: list[CheckpointInfo]
    metrics: dict[str, float]
    log_history: list[dict[str, Any]]
    global_step: int
    resumed_from: int | None
    lora: bool
    num_pairs: int
    trainable_parameters: int
    held_parameters: int


def checkpoint_dirs(output_dir: str | os.PathLike, complete_only: bool = True) -> list[Path]:
    """checkpoint-N folders by step; complete = the Trainer wrote trainer_state.json (its last file)."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.glob("checkpoint-*"):
        suffix = path.name.split("-", 1)[1]
        if path.is_dir() and suffix.isdigit() and (not complete_only or (path / "trainer_state.json").exists()):
            found.append(path)
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]))


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    done = checkpoint_dirs(output_dir)
    return done[-1] if done else None


def _job_identity(job: TrainJob) -> dict:
    return _comparable(job.model_dump(mode="json", exclude={"result_path", "resume"}), job.output_dir)


def _comparable(identity: dict, output_dir: str | os.PathLike) -> dict:
    """A job's identity wherever its folder is: the output folder itself is left out and input files
    next to it are named relative to it (a work folder renamed by a new attempt stays resumable)."""
    identity = dict(identity)
    identity.pop("output_dir", None)
    if identity.get("model_spec") is None:  # jobs written before the field existed stay resumable
        identity.pop("model_spec", None)
    base = Path(output_dir).parent.resolve()
    for key in ("pairs_path", "ref_logps_path"):
        value = identity.get(key)
        if value and "://" not in value and Path(value).resolve().is_relative_to(base):
            identity[key] = "./" + str(Path(value).resolve().relative_to(base))
    return identity


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def held_parameters(trainer) -> int:
    """Parameters of every distinct nn.Module the trainer holds (model, ref_model, wrappers)."""
    torch = _torch()
    seen: dict[int, Any] = {}
    for value in vars(trainer).values():
        if isinstance(value, torch.nn.Module):
            for p in value.parameters():
                seen[id(p)] = p
    return sum(p.numel() for p in seen.values())


def train(job: TrainJob, *, pairs: pd.DataFrame | None = None, ref_logps: pd.DataFrame | None = None,
          callbacks: list | None = None, log_fn: Callable[[str], None] | None = None) -> TrainResult:
    """Train in this process (one rank under `accelerate launch`). `pairs`/`ref_logps` may be given
    as frames instead of the job's paths."""
    say = log_fn or log.info
    dpo = job.dpo
    if dpo.quantization != "none" and not dpo.lora:
        raise ValueError("dpo.quantization needs dpo.lora=true (QLoRA)")
    output_dir = Path(job.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    identity = output_dir / "job.json"
    previous = checkpoint_dirs(output_dir, complete_only=False)
    if previous and identity.exists() \
            and _comparable(json.loads(identity.read_text()), output_dir) != _job_identity(job):
        raise ValueError(f"{output_dir} holds checkpoints of a different training job")
    if _is_main_process():
        identity.write_text(json.dumps(_job_identity(job), indent=1, sort_keys=True))
        done = {p.name for p in checkpoint_dirs(output_dir)}
        for path in previous:
            if path.name not in done:  # killed while saving: never resume from it
                say(f"removing incomplete {path.name}")
                shutil.rmtree(path, ignore_errors=True)

    if pairs is None:
        pairs = load_pairs(job.pairs_path, limit=job.pairs_limit)
    elif job.pairs_limit:
        pairs = pairs.iloc[:job.pairs_limit].reset_index(drop=True)
    if ref_logps is None and job.ref_logps_path:
        ref_logps = load_pairs_table(job.ref_logps_path)
    if ref_logps is None and not job.reference_dir:
        raise ValueError("no reference: give ref_logps_path (cached) or reference_dir (live, explicit)")
    if ref_logps is not None and job.pairs_limit:
        ref_logps = ref_logps.iloc[:job.pairs_limit].reset_index(drop=True)
    dataset = to_trl_dataset(pairs, data_root=job.data_root, ref_logps=ref_logps)

    def build(run_dpo: DPOConfig):
        model, processor = load_training_model(job.model_dir, dpo, quantize=dpo.quantization == "4bit",
                                               spec=job.model_spec)
        ref_model = None
        if ref_logps is None:
            ref_model, _ = load_training_model(job.reference_dir, dpo, spec=job.model_spec)
        peft_config = None
        if dpo.lora:
            peft_config = lora_config(dpo, model)
        elif dpo.freeze_vision_tower:
            frozen = freeze_vision_tower(model)
            say(f"vision tower frozen: {frozen:,} parameters")
        else:
            model.requires_grad_(True)
        args = build_trl_config(run_dpo, output_dir, len(dataset), overrides=job.trl_overrides)
        Trainer = _classes()[1]
        trainer = Trainer(model=model, ref_model=ref_model, args=args, train_dataset=dataset,
                          processing_class=processor, peft_config=peft_config, callbacks=callbacks)
        _route_trainer_logs(trainer, say)
        trainer.add_callback(_prune_callback(output_dir))
        return trainer, args

    trainer, args = build(dpo)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    held = held_parameters(trainer)
    say(f"DPO on {len(dataset)} pairs: {trainable:,} trainable of {held:,} held parameters; "
        f"save every {args.save_steps} steps; reference: {'cached' if ref_logps is not None else 'live'}")
    run_dpo = dpo
    while True:
        resume = latest_checkpoint(output_dir) if job.resume else None
        if resume is not None:
            say(f"resuming from {resume.name}")
        try:
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
            break
        except Exception as error:  # noqa: BLE001 - re-raised unless halving the batch can fix it
            from accelerate.utils.memory import clear_device_cache, should_reduce_batch_size

            per_device = args.per_device_train_batch_size
            if not should_reduce_batch_size(error) or per_device < 2 or per_device % 2:
                raise
            refuse_under_multiprocess(error, "DPO training", f"set dpo.grad_accum={run_dpo.grad_accum * 2} (a "
                                      f"per-device batch of {per_device // 2}; the global dpo.batch_size stays) "
                                      "or run on devices with more memory")
        # Out of memory (handled outside `except`, so the failed step's tensors can be freed): half the
        # per-device batch, twice the accumulation (the global batch, the steps and the checkpoints stay
        # the recipe's); fresh weights, resumed from the latest complete checkpoint if there is one.
        trainer = None
        clear_device_cache(garbage_collection=True)
        run_dpo = run_dpo.model_copy(update={"grad_accum": run_dpo.grad_accum * 2})
        say(f"out of memory: per-device batch halved to {per_device // 2} (gradient accumulation "
            f"{run_dpo.grad_accum}), restarting from {resume.name if resume else 'the start'}")
        trainer, args = build(run_dpo)
    checkpoints = [CheckpointInfo(step=int(p.name.split("-", 1)[1]), epoch=_checkpoint_epoch(p), path=str(p),
                                  lora=is_lora_adapter(p))
                   for p in checkpoint_dirs(output_dir)]
    history = [dict(entry) for entry in trainer.state.log_history]
    result = TrainResult(output_dir=str(output_dir), checkpoints=checkpoints, metrics=final_metrics(history),
                         log_history=history, global_step=trainer.state.global_step,
                         resumed_from=int(resume.name.split("-", 1)[1]) if resume else None, lora=dpo.lora,
                         num_pairs=len(dataset), trainable_parameters=trainable, held_parameters=held)
    if job.result_path and _is_main_process():
        Path(job.result_path).write_text(result.model_dump_json(indent=1))
    return result


def _route_trainer_logs(trainer, say: Callable[[str], None]) -> None:
    """Trainer's log lines (loss, rewards/…, every logging_steps) go to `say` instead of print."""
    from transformers import PrinterCallback, TrainerCallback

    class _Say(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_local_process_zero and logs:
                say(f"step {state.global_step}: " + json.dumps({k: (round(v, 6) if isinstance(v, float) else v)
                                                                for k, v in logs.items()}))

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(_Say())


def prune_training_state(output_dir: str | os.PathLike) -> None:
    """Optimizer, scheduler and RNG state only in the latest complete checkpoint (resuming needs no
    more); older checkpoints keep their model folders."""
    done = checkpoint_dirs(output_dir)
    for path in done[:-1]:
        for item in path.iterdir():
            if item.name in TRAINING_STATE_FILES or item.name.startswith("rng_state"):
                item.unlink(missing_ok=True)
            elif item.is_dir() and item.name.startswith("global_step"):  # DeepSpeed optimizer shards
                shutil.rmtree(item, ignore_errors=True)


def _prune_callback(output_dir: Path):
    from transformers import TrainerCallback

    class _Prune(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                prune_training_state(output_dir)

    return _Prune()


def _checkpoint_epoch(path: Path) -> float | None:
    try:
        return json.loads((path / "trainer_state.json").read_text()).get("epoch")
    except (OSError, ValueError):
        return None


STEP_METRIC_KEYS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                    "logps/chosen", "logps/rejected")
RUN_METRIC_KEYS = ("learning_rate", "epoch", "train_loss", "train_runtime")


def final_metrics(history: list[dict]) -> dict[str, float]:
    """The DPO run's metrics from TRL's logs. A step metric (loss, rewards/…, logps/…) is its mean over
    every log of the run, and `last/<key>` its last log: each log averages only the `logging_steps`
    batches before it, so the last one alone is a few pairs' worth of noise. The run's own values
    (learning rate, epoch, train_loss, runtime) are their last logged values."""
    logged: dict[str, list[float]] = {}
    metrics: dict[str, float] = {}
    for entry in history:
        for key in STEP_METRIC_KEYS:
            if isinstance(entry.get(key), (int, float)):
                logged.setdefault(key, []).append(float(entry[key]))
        for key in RUN_METRIC_KEYS:
            if isinstance(entry.get(key), (int, float)):
                metrics[key] = float(entry[key])
    for key, values in logged.items():
        metrics[key] = sum(values) / len(values)
        metrics[f"last/{key}"] = values[-1]
    return metrics
