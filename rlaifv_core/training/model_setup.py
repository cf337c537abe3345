"""The policy as training sees it: loaded with the training precision, its vision tower and LoRA targets.

    from rlaifv_core.training import load_training_model, freeze_vision_tower, lora_target_modules
    model, processor = load_training_model("runs/…/policy", config.dpo)
    freeze_vision_tower(model)           # full fine-tuning: language model + projector train
    projector_prefixes(model)            # ['model.multi_modal_projector'] (LLaVA), ['model.visual.merger'] (Qwen2-VL)
    lora_target_modules(model)           # LoRA: every linear layer of the language model only

Precision: float32 weights with bf16 autocast on a bf16 GPU, plain float32 on the CPU, or pure
bf16 weights (`dpo.dtype: bfloat16`); the reference pass uses the same, so its log-probs are the
numbers training would compute. `dpo.quantization: 4bit` (QLoRA) needs bitsandbytes and a GPU.

Loading goes through the policy's `ModelSpec` when one is given (`trust_remote_code`, `revision`;
the weights' dtype is the training precision above, `dpo.dtype`) and through the same processor
loader as the backends (`load_processor`: Qwen2-VL-family processors without torchvision).

The projector trains wherever the architecture puts it: a top-level module (LLaVA's
`multi_modal_projector`, Idefics3's `connector`) or nested inside the vision module (Qwen2-VL's
`visual.merger`); `freeze_vision_tower` freezes the vision encoder but not a projector inside it.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

from ..config import DPOConfig

VISION_MODULE_NAMES = ("vision_tower", "visual", "vision_model", "vpm", "vision_encoder", "image_encoder")
PROJECTOR_MODULE_NAMES = ("multi_modal_projector", "mm_projector", "resampler", "vision_resampler", "connector",
                          "merger")


def _torch():
    import torch

    return torch


def has_cuda() -> bool:
    return _torch().cuda.is_available()


def precision(dpo: DPOConfig) -> tuple[Any, bool]:
    """(weights dtype, bf16 autocast?) for training and for the reference pass alike: float32 weights
    with bf16 mixed precision on a bf16 GPU, plain float32 on the CPU, or pure bf16 weights."""
    torch = _torch()
    bf16 = has_cuda() and torch.cuda.is_bf16_supported()
    if dpo.dtype == "bfloat16":
        return torch.bfloat16, bf16
    return torch.float32, bf16


def load_training_model(model_dir: str | os.PathLike, dpo: DPOConfig, *, quantize: bool = False, spec=None):
    """(model, processor) from a local safetensors folder (or hub id / `shapes:` name); `spec` (the
    role's ModelSpec) supplies trust_remote_code and revision."""
    from transformers import AutoModelForImageTextToText

    from ..backends import memory
    from ..backends.processors import load_processor
    from ..models.schemes import resolve_model_path

    source = resolve_model_path(str(model_dir))
    dtype, _ = precision(dpo)
    common: dict[str, Any] = {"trust_remote_code": bool(getattr(spec, "trust_remote_code", False))}
    if getattr(spec, "revision", None) and str(spec.name_or_path) == str(model_dir):
        common["revision"] = spec.revision  # a revision names a hub commit, not a local checkpoint
    kwargs: dict[str, Any] = {"dtype": dtype, "use_safetensors": True, **common}
    if quantize:
        kwargs.update(_quantization_kwargs())
    model = memory.track(AutoModelForImageTextToText.from_pretrained(source, **kwargs), f"training:{source}")
    processor = load_processor(source, **common)
    tokenizer = processor.tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, processor


def _quantization_kwargs() -> dict:
    torch = _torch()
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as error:
        raise RuntimeError("dpo.quantization=4bit needs bitsandbytes (pip install bitsandbytes)") from error
    if not has_cuda():
        raise RuntimeError("dpo.quantization=4bit needs a CUDA GPU")
    from transformers import BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.bfloat16)
    return {"quantization_config": config, "device_map": {"": int(os.environ.get("LOCAL_RANK", "0"))}}


def _top_level(names: Iterable[str], wanted: Sequence[str]) -> list[str]:
    found = sorted(n for n in names if n.split(".")[-1] in wanted)
    return [n for n in found if not any(n.startswith(f"{other}.") for other in found if other != n)]


def vision_tower_prefixes(model) -> list[str]:
    """Module names of the vision encoder(s), e.g. `model.vision_tower` (LLaVA), `model.visual` (Qwen-VL)."""
    prefixes = _top_level((n for n, _ in model.named_modules()), VISION_MODULE_NAMES)
    if not prefixes:
        raise ValueError(f"{type(model).__name__}: no vision tower among {VISION_MODULE_NAMES}")
    return prefixes


def vision_tower_parameters(model) -> dict[str, Any]:
    prefixes = vision_tower_prefixes(model)
    return {n: p for n, p in model.named_parameters() if any(n.startswith(f"{x}.") for x in prefixes)}


def projector_prefixes(model) -> list[str]:
    """Module names of the projector(s) between vision and language model, wherever they sit."""
    return _top_level((n for n, _ in model.named_modules()), PROJECTOR_MODULE_NAMES)


def freeze_vision_tower(model) -> int:
    """Everything trainable except the vision tower (the original's LLM + projector; a projector nested
    in the vision module, as Qwen2-VL's `visual.merger`, trains too). Returns the number of frozen
    parameters."""
    model.requires_grad_(True)
    projectors = projector_prefixes(model)
    frozen = {n: p for n, p in vision_tower_parameters(model).items()
              if not any(n.startswith(f"{x}.") for x in projectors)}
    for param in frozen.values():
        param.requires_grad_(False)
    return sum(p.numel() for p in frozen.values())


def lora_target_modules(model) -> list[str]:
    """Full names of the language model's linear layers (q/k/v/o/gate/up/down in a Llama): not the
    vision tower, not the projector, not the LM head."""
    torch = _torch()
    names = [n for n, _ in model.named_modules()]
    excluded = vision_tower_prefixes(model) + _top_level(names, PROJECTOR_MODULE_NAMES)
    head = model.get_output_embeddings()
    targets = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or module is head:
            continue
        if any(name == x or name.startswith(f"{x}.") for x in excluded):
            continue
        targets.append(name)
    if not targets:
        raise ValueError("no linear layer of the language model to adapt")
    return targets


def lora_config(dpo: DPOConfig, model):
    from peft import LoraConfig

    return LoraConfig(r=dpo.lora_r, lora_alpha=dpo.lora_alpha, lora_dropout=dpo.lora_dropout, bias="none",
                      task_type="CAUSAL_LM", target_modules=lora_target_modules(model))
