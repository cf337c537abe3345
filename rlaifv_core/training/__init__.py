"""DPO training of a vision-language model on preference pairs, on TRL's `DPOTrainer`.

    from rlaifv_core import training
    pairs = training.load_pairs("runs/demo/iter-1/pairs.parquet")          # or s3://…, or a hub id
    ref = training.compute_reference_logps("runs/…/policy-k-1", pairs, dpo=config.dpo)  # once per iteration
    result = training.launch(training.TrainJob(model_dir="runs/…/policy-k-1", pairs_path=…,
                                               ref_logps_path=…, output_dir="work/train", dpo=config.dpo))
    result.checkpoints   # every 1/checkpoints_per_epoch epoch: step, epoch, folder

One module per job, each importing only the ones above it in this list:
pairs_data (pairs I/O, content keys, TRL rows) · pairs_check (each row checked before training) ·
model_setup (loading, precision, vision tower, LoRA targets) · trl_args (TRL arguments, batch
arithmetic) · trainer (the TRL subclass and its hooks) · reference (reference log-probs) · export
(checkpoint → model folder) · run (one training run: resume, OOM back-off, result) · launcher
(in-process or `accelerate launch`). Importing this package imports neither torch nor TRL; they
load when a function that needs them runs.
"""

from __future__ import annotations

from .export import TRAINING_STATE_FILES, export_checkpoint, merge_lora
from .launcher import accelerate_config_path, launch, launch_accelerate
from .model_setup import (freeze_vision_tower, load_training_model, lora_config, lora_target_modules, precision,
                          vision_tower_parameters, vision_tower_prefixes)
from .pairs_check import check_pairs, viewable_image_bytes
from .pairs_data import (REF_COLUMNS, REF_FRAME_COLUMNS, PairsFileError, check_pair_columns, image_bytes, load_pairs,
                         pair_keys, to_trl_dataset)
from .reference import compute_reference_logps
from .run import (CheckpointInfo, TrainJob, TrainResult, checkpoint_dirs, final_metrics, held_parameters,
                  latest_checkpoint, train)
from .trainer import load_checkpoint_weights
from .trl_args import build_trl_config, per_device_batch, save_steps_for, steps_per_epoch

__all__ = [
    "CheckpointInfo", "PairsFileError", "REF_COLUMNS", "REF_FRAME_COLUMNS", "RLAIFVDPOTrainer",
    "ReferenceLogpsVisionCollator", "TRAINING_STATE_FILES", "TrainJob", "TrainResult", "accelerate_config_path",
    "build_trl_config", "check_pair_columns", "check_pairs", "checkpoint_dirs", "compute_reference_logps",
    "export_checkpoint", "final_metrics",
    "freeze_vision_tower", "held_parameters", "image_bytes", "latest_checkpoint", "launch", "launch_accelerate",
    "load_checkpoint_weights", "load_pairs", "load_training_model", "lora_config", "lora_target_modules",
    "merge_lora", "pair_keys", "per_device_batch", "precision", "save_steps_for", "steps_per_epoch",
    "to_trl_dataset", "train", "viewable_image_bytes", "vision_tower_parameters", "vision_tower_prefixes",
]


def __getattr__(name: str):  # the TRL subclasses are built on first use: importing TRL is slow
    if name in ("RLAIFVDPOTrainer", "ReferenceLogpsVisionCollator"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
