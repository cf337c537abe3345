"""Trainer checkpoints → complete model folders (safetensors, config, processor; LoRA merged).

    from rlaifv_core.training import export_checkpoint
    export_checkpoint("work/train/checkpoint-40", "staging/step-40", base_model_dir="runs/…/policy")

The exported folder loads with AutoModelForImageTextToText/AutoProcessor and holds no optimizer or
RNG state; a LoRA checkpoint is merged into its base (merge_and_unload) and keeps its adapter in
`adapter/`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..config import DPOConfig
from ..models.lora import adapter_base, is_lora_adapter
from .model_setup import load_training_model

#: files of a Trainer checkpoint that only serve resuming (left out of exported checkpoints)
TRAINING_STATE_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "training_args.bin")


def export_checkpoint(checkpoint_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                      base_model_dir: str | os.PathLike | None = None, dpo: DPOConfig | None = None) -> Path:
    """A complete model folder from a Trainer checkpoint: safetensors weights, config and processor,
    loadable with AutoModelForImageTextToText/AutoProcessor (no optimizer or RNG state). A LoRA
    checkpoint is merged into `base_model_dir` (merge_and_unload) and its adapter kept in `adapter/`."""
    source, out = Path(checkpoint_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if is_lora_adapter(source):
        merge_lora(source, out, base_model_dir=adapter_base(source, base_model_dir), dpo=dpo)
        shutil.copytree(source, out / "adapter", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(*TRAINING_STATE_FILES, "rng_state*.pth"))
        return out
    for file in source.iterdir():
        if file.is_file() and file.name not in TRAINING_STATE_FILES and not file.name.startswith("rng_state"):
            try:  # the export is staging for the run store: a hard link spares copying the weights twice
                os.link(file, out / file.name)
            except OSError:
                shutil.copy2(file, out / file.name)
    return out


def merge_lora(adapter_dir: str | os.PathLike, out_dir: str | os.PathLike, *, base_model_dir: str | os.PathLike,
               dpo: DPOConfig | None = None) -> Path:
    """Base + LoRA adapter → one full safetensors folder (with the adapter's processor)."""
    from peft import PeftModel

    from ..backends.processors import load_processor

    model, processor = load_training_model(base_model_dir, dpo or DPOConfig())
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    out = Path(out_dir)
    merged.save_pretrained(out, safe_serialization=True)
    adapter_processor = Path(adapter_dir) / "processor_config.json"
    # the backends' loader: a Qwen2-VL-family processor loads without torchvision (AutoProcessor needs it)
    (load_processor(str(adapter_dir)) if adapter_processor.exists() else processor).save_pretrained(out)
    return out
