"""Our DPO section → TRL's `DPOConfig`, and the batch arithmetic behind it.

    from rlaifv_core.training import build_trl_config, save_steps_for
    args = build_trl_config(config.dpo, "work/train", num_pairs=len(pairs))

`dpo.batch_size` is the global batch (per device × processes × gradient accumulation) and must
divide evenly; a checkpoint is saved every 1/`checkpoints_per_epoch` epoch, counted in optimizer
steps as transformers' Trainer counts them (the last partial batch kept).
"""

from __future__ import annotations

import math
import os
from typing import Any

from ..config import DPOConfig
from .model_setup import has_cuda, precision


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def per_device_batch(dpo: DPOConfig, num_processes: int = 1) -> int:
    """`dpo.batch_size` is the global batch: per device × processes × gradient accumulation."""
    per = dpo.batch_size // (num_processes * dpo.grad_accum)
    if per < 1 or per * num_processes * dpo.grad_accum != dpo.batch_size:
        raise ValueError(f"dpo.batch_size={dpo.batch_size} is not a multiple of {num_processes} processes × "
                         f"grad_accum {dpo.grad_accum}")
    return per


def steps_per_epoch(num_pairs: int, dpo: DPOConfig, num_processes: int = 1) -> int:
    """Optimizer steps per epoch, as transformers' Trainer counts them (last partial batch kept)."""
    batches = math.ceil(num_pairs / (per_device_batch(dpo, num_processes) * num_processes))
    return max(1, math.ceil(batches / dpo.grad_accum))


def save_steps_for(num_pairs: int, dpo: DPOConfig, num_processes: int = 1) -> int:
    """A checkpoint every 1/checkpoints_per_epoch epoch (original: 167 steps = ¼ of 668)."""
    return max(1, math.ceil(steps_per_epoch(num_pairs, dpo, num_processes) / max(1, dpo.checkpoints_per_epoch)))


def build_trl_config(dpo: DPOConfig, output_dir: str | os.PathLike, num_pairs: int, *,
                     num_processes: int | None = None, overrides: dict | None = None):
    """TRL's DPOConfig from our DPO section (see module docstring); `overrides` win."""
    from trl import DPOConfig as TRLDPOConfig

    processes = num_processes or world_size()
    cuda = has_cuda()
    _, bf16 = precision(dpo)
    if not 0.0 <= dpo.warmup_ratio < 1.0:
        raise ValueError("dpo.warmup_ratio must be in [0, 1)")
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        beta=dpo.beta,
        loss_type=list(dpo.loss_type),
        loss_weights=list(dpo.loss_weights) if dpo.loss_weights else None,
        learning_rate=dpo.learning_rate,
        lr_scheduler_type=dpo.lr_scheduler,
        warmup_steps=dpo.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of the total steps
        weight_decay=dpo.weight_decay,
        optim="adamw_torch",
        num_train_epochs=dpo.epochs,
        max_steps=dpo.max_steps if dpo.max_steps > 0 else -1,
        per_device_train_batch_size=per_device_batch(dpo, processes),
        gradient_accumulation_steps=dpo.grad_accum,
        save_strategy="steps",
        save_steps=save_steps_for(num_pairs, dpo, processes),
        logging_steps=dpo.logging_steps,
        seed=dpo.seed,
        report_to="none",
        remove_unused_columns=False,
        use_cpu=not cuda,
        bf16=bf16,
        activation_checkpointing=dpo.gradient_checkpointing,  # transformers 5 name of gradient_checkpointing
        max_length=None,
        pad_to_multiple_of=None,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    kwargs.update(overrides or {})
    return TRLDPOConfig(**kwargs)
