"""DPO training of a vision-language model on preference pairs, on TRL's `DPOTrainer`.

    from rlaifv_core.dpo import TrainJob, compute_reference_logps, launch, load_pairs

    pairs = load_pairs("runs/demo/iter-1/pairs.parquet")        # or s3://…, or a `datasets` hub id
    ref = compute_reference_logps("runs/…/policy-k-1", pairs, dpo=config.dpo)  # once per iteration
    result = launch(TrainJob(model_dir="runs/…/policy-k-1", pairs_path=…, ref_logps_path=…,
                             output_dir="work/train", dpo=config.dpo))
    result.checkpoints   # every 1/checkpoints_per_epoch epoch: step, epoch, folder

The method (shared/docs/method.md §5): sigmoid DPO on summed answer log-probs, β 0.1, cosine
schedule with 5 % warm-up, AdamW with weight decay 0.01, a checkpoint every ¼ epoch; full
fine-tuning trains the language model and the projector with the vision tower frozen; LoRA
(r 64, α 16, dropout 0.05) adapts every linear layer of the language model only.

Reference log-probs are computed **once per iteration** with the reference model (the policy
selected at the end of iteration k−1, always passed explicitly) through TRL's own collator and
fused LM head, so they are the numbers TRL would compute live. Training reads them from the
batch: `RLAIFVDPOTrainer` enables TRL's precomputed-reference mode, which TRL refuses to *build*
for vision data, by re-enabling the flag in `create_accelerator_and_postprocess` (the hook that
runs between TRL's vision check and its reference-model decision) and by answering TRL's
`_precompute_ref_logps` hook with the cached columns; while the trainer is built, TRL's fallback
loader (`config._name_or_path`, which TRL still takes under FSDP) is disarmed. No reference model
is loaded or held while training: the process holds exactly one model.

transformers 5 saves LLaVA-style checkpoints in their legacy key layout, and `Trainer`'s resume
loads them raw (strict=False), silently keeping the initial weights; `RLAIFVDPOTrainer` resumes
through the model's own key mapping instead (`load_checkpoint_weights`).

Launch: in-process by default; `dpo.launcher = accelerate` runs
`accelerate launch --config_file <shipped config> -m rlaifv_core.dpo JOB.json` in a subprocess and
streams its output. A re-run with the same output folder resumes from its latest complete
checkpoint. An out-of-memory error while training halves the per-device batch and doubles the
gradient accumulation (same global batch, steps and checkpoints) and restarts from that checkpoint. This module imports no Prefect.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pandas as pd
from pydantic import BaseModel, Field

from .chat import adapter_base, is_lora_adapter
from .config import DPOConfig

log = logging.getLogger(__name__)

REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
REF_TOKEN_COLUMNS = ("ref_chosen_token_logps", "ref_rejected_token_logps")
#: the cached reference table: one row per pair, in the pairs' order
REF_FRAME_COLUMNS = ("pair_key", *REF_COLUMNS, *REF_TOKEN_COLUMNS)
CONFIG_DIR = Path(__file__).resolve().parent / "accelerate_configs"
#: files of a Trainer checkpoint that only serve resuming (left out of exported checkpoints)
TRAINING_STATE_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "training_args.bin")
VISION_MODULE_NAMES = ("vision_tower", "visual", "vision_model", "vpm", "vision_encoder", "image_encoder")
PROJECTOR_MODULE_NAMES = ("multi_modal_projector", "mm_projector", "resampler", "vision_resampler", "connector")
_GUARD_LOCK = threading.Lock()


# -- pairs ---------------------------------------------------------------------------------------------
def load_pairs(source: str | os.PathLike | pd.DataFrame, *, split: str = "train", limit: int | None = None,
               storage_options: dict | None = None) -> pd.DataFrame:
    """Preference pairs as a DataFrame with at least question, chosen, rejected and an image
    (`image` {bytes, path} or `image_path`): our pairs parquet or the public RLAIF-V-Dataset schema.

    `source`: a DataFrame; a parquet file or folder of parquet files, local or any fsspec URL
    (s3://… with credentials from AWS_* variables); a folder written by `Dataset.save_to_disk`; or
    a `datasets` hub id such as `openbmb/RLAIF-V-Dataset` (`split`, first `limit` rows)."""
    if isinstance(source, pd.DataFrame):
        frame = source
    else:
        text = str(source)
        local = Path(text)
        if local.is_dir() and (local / "dataset_info.json").exists():
            import datasets

            frame = datasets.load_from_disk(text).to_pandas()
        elif "://" in text or local.exists():
            import fsspec

            fs, path = fsspec.core.url_to_fs(text, **(storage_options or {}))
            files = sorted(fs.glob(f"{path.rstrip('/')}/**/*.parquet")) if fs.isdir(path) else [path]
            if not files:
                raise FileNotFoundError(f"{text}: no parquet files")
            frames = []
            for file in files:
                with fs.open(file, "rb") as handle:
                    frames.append(pd.read_parquet(io.BytesIO(handle.read())))
            frame = pd.concat(frames, ignore_index=True)
        else:
            import datasets

            wanted = f"{split}[:{limit}]" if limit else split
            frame = datasets.load_dataset(text, split=wanted).to_pandas()
    check_pair_columns(frame, "<DataFrame>" if isinstance(source, pd.DataFrame) else str(source))
    if limit:
        frame = frame.iloc[:limit]
    return frame.reset_index(drop=True)


def check_pair_columns(frame: pd.DataFrame, where: str = "pairs") -> None:
    """A clear error naming the source and the missing columns (before any model is loaded)."""
    missing = [c for c in ("question", "chosen", "rejected") if c not in frame.columns]
    if "image" not in frame.columns and "image_path" not in frame.columns:
        missing.append("image or image_path")
    if missing:
        raise ValueError(f"{where}: pairs need question, chosen, rejected and image or image_path columns; "
                         f"missing {missing} (has {sorted(map(str, frame.columns))})")


def image_bytes(row: dict, data_root: str | None) -> bytes:
    image = row.get("image")
    if isinstance(image, dict) and image.get("bytes"):
        return bytes(image["bytes"])
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if image is not None and hasattr(image, "save"):  # a PIL image
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    path = (image.get("path") if isinstance(image, dict) else None) or row.get("image_path")
    if not path:
        raise ValueError(f"pair {row.get('idx')!r} has neither image bytes nor an image path")
    resolved = Path(path)
    if data_root is not None:
        root = Path(data_root).resolve()
        resolved = (root / path).resolve()
        if root not in resolved.parents and resolved != root:
            raise ValueError(f"image path {path!r} leaves data_root {root}")
    return resolved.read_bytes()


def pair_keys(pairs: pd.DataFrame, data_root: str | None = None) -> list[str]:
    """A content key per pair (image bytes, question, chosen, rejected): aligns cached reference
    log-probs with the pairs they were computed for."""
    keys = []
    for row in pairs.to_dict("records"):
        digest = hashlib.sha256(hashlib.sha256(image_bytes(row, data_root)).digest())
        for text in (row["question"], row["chosen"], row["rejected"]):
            digest.update(b"\0" + str(text).encode())
        keys.append(digest.hexdigest()[:24])
    return keys


def to_trl_dataset(pairs: pd.DataFrame, *, data_root: str | None = None, ref_logps: pd.DataFrame | None = None):
    """TRL's conversational vision rows: `prompt` (user turn with the question; TRL inserts the
    image placeholder), `chosen`/`rejected` (assistant turns) and `images` ([image], decoded lazily).
    With `ref_logps` (from `compute_reference_logps`, same pairs) the rows also carry
    `ref_chosen_logps`/`ref_rejected_logps`."""
    import datasets

    check_pair_columns(pairs)
    message = datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})
    columns: dict[str, Any] = {
        "prompt": [[{"role": "user", "content": str(q)}] for q in pairs["question"]],
        "chosen": [[{"role": "assistant", "content": str(a)}] for a in pairs["chosen"]],
        "rejected": [[{"role": "assistant", "content": str(a)}] for a in pairs["rejected"]],
        "images": [[{"bytes": image_bytes(row, data_root), "path": None}] for row in pairs.to_dict("records")],
    }
    features = {"prompt": message, "chosen": message, "rejected": message,
                "images": datasets.List(datasets.Image())}
    if ref_logps is not None:
        check_reference_alignment(pairs, ref_logps, data_root=data_root)
        for column in REF_COLUMNS:
            columns[column] = [float(v) for v in ref_logps[column]]
            features[column] = datasets.Value("float64")
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def check_reference_alignment(pairs: pd.DataFrame, ref_logps: pd.DataFrame, data_root: str | None = None) -> None:
    """Cached reference log-probs must be for exactly these pairs, in this order."""
    if len(ref_logps) != len(pairs):
        raise ValueError(f"reference log-probs have {len(ref_logps)} rows for {len(pairs)} pairs")
    if "pair_key" in ref_logps.columns and list(ref_logps["pair_key"]) != pair_keys(pairs, data_root):
        raise ValueError("reference log-probs were computed for other pairs (pair_key mismatch)")


# -- models --------------------------------------------------------------------------------------------
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


def load_model(model_dir: str | os.PathLike, dpo: DPOConfig, *, quantize: bool = False):
    """(model, processor) from a local safetensors folder (or hub id / `shapes:` name)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from .roles import resolve_model_path

    source = resolve_model_path(str(model_dir))
    dtype, _ = precision(dpo)
    kwargs: dict[str, Any] = {"dtype": dtype, "use_safetensors": True}
    if quantize:
        kwargs.update(_quantization_kwargs())
    model = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
    processor = AutoProcessor.from_pretrained(source)
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


def freeze_vision_tower(model) -> int:
    """Everything trainable except the vision tower (the original's LLM + projector). Returns the
    number of frozen parameters."""
    model.requires_grad_(True)
    frozen = vision_tower_parameters(model)
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


# -- TRL configuration -----------------------------------------------------------------------------------
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


# -- TRL subclasses ----------------------------------------------------------------------------------------
def _trl_classes():
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference, DPOTrainer

    return DataCollatorForVisionPreference, DPOTrainer


def _make_classes():
    DataCollatorForVisionPreference, DPOTrainer = _trl_classes()
    from dataclasses import dataclass

    torch = _torch()

    @dataclass
    class ReferenceLogpsVisionCollator(DataCollatorForVisionPreference):
        """TRL's vision preference collator, passing `ref_chosen_logps`/`ref_rejected_logps` through
        (TRL's text collator does; its vision collator drops them)."""

        def torch_call(self, examples):
            refs = {c: [ex[c] for ex in examples] for c in REF_COLUMNS if c in examples[0]}
            examples = [{k: v for k, v in ex.items() if k not in REF_COLUMNS} for ex in examples]
            output = super().torch_call(examples)
            for column, values in refs.items():
                output[column] = torch.tensor(values, dtype=torch.float32)
            return output

    class RLAIFVDPOTrainer(DPOTrainer):
        """TRL's DPOTrainer with an explicit reference: either cached reference log-probs in the
        dataset (`ref_chosen_logps`/`ref_rejected_logps`; no reference model loaded or held) or an
        explicit `ref_model`. TRL's fallback of loading `config._name_or_path` is never used."""

        def __init__(self, model, ref_model=None, args=None, train_dataset=None, processing_class=None,
                     peft_config=None, callbacks=None, data_collator=None, **kwargs):
            if train_dataset is None or args is None or processing_class is None:
                raise ValueError("model, args, train_dataset and processing_class are required")
            columns = set(train_dataset.column_names)
            self._cached_reference = set(REF_COLUMNS) <= columns
            if self._cached_reference and ref_model is not None:
                raise ValueError("pass either cached reference log-probs or a ref_model, not both")
            if not self._cached_reference and ref_model is None:
                raise ValueError("the reference must be explicit: cached reference log-probs in the dataset "
                                 "(compute_reference_logps) or a ref_model — never TRL's config._name_or_path reload")
            if data_collator is None:
                data_collator = ReferenceLogpsVisionCollator(processor=processing_class, max_length=args.max_length,
                                                             pad_to_multiple_of=args.pad_to_multiple_of)
            if self._cached_reference:
                # TRL refuses to *compute* reference log-probs for vision data; ours come precomputed.
                # The flag is off for that check and back on (create_accelerator_and_postprocess) before
                # TRL decides whether it needs a reference model.
                args.precompute_ref_log_probs = False
            with _no_reference_loading(self._cached_reference):
                super().__init__(model=model, ref_model=ref_model, args=args, train_dataset=train_dataset,
                                 processing_class=processing_class, peft_config=peft_config, callbacks=callbacks,
                                 data_collator=data_collator, **kwargs)
            if self._cached_reference:
                self.precompute_ref_logps = True
                if self.ref_model is not None:
                    raise RuntimeError("a reference model was loaded although the reference log-probs are cached")

        def create_accelerator_and_postprocess(self):
            super().create_accelerator_and_postprocess()
            if self._cached_reference:
                self.args.precompute_ref_log_probs = True

        def _precompute_ref_logps(self, dataset, name, batch_size):
            if not self._cached_reference:
                return super()._precompute_ref_logps(dataset, name, batch_size)
            missing = set(REF_COLUMNS) - set(dataset.column_names)
            if missing:
                raise ValueError(f"{name} dataset lacks cached reference log-probs {sorted(missing)}")
            return dataset

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            # transformers 5 saves checkpoints in the original (legacy) key layout and maps the keys back
            # in `from_pretrained`; `Trainer._load_from_checkpoint` loads the raw file with strict=False and
            # so silently resumes renamed models (LLaVA …) from their *initial* weights. Load through the
            # model's own key mapping instead (PEFT adapters, FSDP and DeepSpeed keep Trainer's path).
            from accelerate.utils import is_peft_model

            target = self.accelerator.unwrap_model(model if model is not None else self.model)
            folder = Path(resume_from_checkpoint)
            plain = (folder / "model.safetensors").exists() or (folder / "model.safetensors.index.json").exists()
            if is_peft_model(target) or self.is_fsdp_enabled or self.is_deepspeed_enabled or not plain:
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            load_checkpoint_weights(target, folder)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            for column in REF_COLUMNS:
                if column not in self._signature_columns:
                    self._signature_columns.append(column)

    for cls in (ReferenceLogpsVisionCollator, RLAIFVDPOTrainer):
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
    return ReferenceLogpsVisionCollator, RLAIFVDPOTrainer


def load_checkpoint_weights(model, folder: str | os.PathLike) -> None:
    """Load a `save_pretrained` safetensors folder into `model` in place, renaming keys as
    `from_pretrained` does; every parameter must be covered (tied copies aside)."""
    from safetensors.torch import load_file
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    files = (sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists()
             else ["model.safetensors"])
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    expected = model.state_dict()
    if converters:  # fused/split tensors: let from_pretrained convert them (a transient second copy)
        log.info("checkpoint needs weight converters: loading it through from_pretrained")
        fresh = type(model).from_pretrained(str(folder), dtype=next(model.parameters()).dtype)
        loaded = fresh.state_dict()
    else:
        loaded = {}
        for name in files:
            for key, tensor in load_file(str(folder / name)).items():
                loaded[rename_source_key(key, renamings, converters, model.base_model_prefix, expected)[0]] = tensor
    missing, unexpected = model.load_state_dict(loaded, strict=False)
    pointers = {k: v.data_ptr() for k, v in expected.items()}
    covered = {pointers[k] for k in loaded if k in pointers}
    missing = [k for k in missing if pointers.get(k) not in covered]
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {folder} does not match the model: missing {missing[:5]}, "
                           f"unexpected {list(unexpected)[:5]}")


@contextlib.contextmanager
def _no_reference_loading(active: bool):
    """While a trainer with cached reference log-probs is built, TRL's reference fallback
    (`create_model_from_path(config._name_or_path)`, which TRL still takes under FSDP) loads
    nothing: TRL handles a None reference throughout."""
    if not active:
        yield
        return
    import trl.trainer.dpo_trainer as module

    with _GUARD_LOCK:
        original = module.create_model_from_path

        def refuse(path, *args, **kwargs):
            log.info("reference log-probs are cached: not loading a reference model from %s", path)
            return None

        module.create_model_from_path = refuse
        try:
            yield
        finally:
            module.create_model_from_path = original


_CLASSES: tuple | None = None


def _classes():
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _make_classes()
    return _CLASSES


def __getattr__(name: str):  # lazy: importing this module does not import TRL
    if name == "ReferenceLogpsVisionCollator":
        return _classes()[0]
    if name == "RLAIFVDPOTrainer":
        return _classes()[1]
    raise AttributeError(name)


# -- reference log-probs -----------------------------------------------------------------------------------
def compute_reference_logps(reference_model_dir: str | os.PathLike, pairs_frame: pd.DataFrame, *,
                            dpo: DPOConfig | None = None, batch_size: int | None = None,
                            data_root: str | None = None, device: str | None = None,
                            progress: Callable[[int, int], None] | None = None, model=None,
                            processor=None) -> pd.DataFrame:
    """Summed and per-token log-probs of every pair's chosen and rejected answer under the reference
    model, computed as TRL's `DPOTrainer.compute_ref_log_probs` does (same collator, labels and fused
    LM head, same precision as training). One row per pair, in order: pair_key, ref_chosen_logps,
    ref_rejected_logps, ref_chosen_token_logps, ref_rejected_token_logps.

    The reference is always explicit: a folder (or an already loaded `model` + `processor`)."""
    torch = _torch()
    from trl.trainer.utils import add_fused_lm_head

    dpo = dpo or DPOConfig()
    batch_size = batch_size or dpo.ref_batch_size
    if model is None:
        model, processor = load_model(reference_model_dir, dpo)
    device = torch.device(device or ("cuda" if has_cuda() else "cpu"))
    model.to(device).eval()
    if not getattr(model, "_rlaifv_fused_head", False):
        add_fused_lm_head(model)
        model._rlaifv_fused_head = True
    _, bf16 = precision(dpo)
    Collator = _trl_classes()[0]
    collator = Collator(processor=processor, max_length=None, pad_to_multiple_of=None)
    dataset = to_trl_dataset(pairs_frame, data_root=data_root)
    chosen_sum, rejected_sum, chosen_tok, rejected_tok = [], [], [], []
    total = len(dataset)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if bf16 and device.type == "cuda"
                else contextlib.nullcontext())
    for start in range(0, total, batch_size):
        batch = collator([dataset[i] for i in range(start, min(start + batch_size, total))])
        batch = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}
        completion_mask = batch.pop("completion_mask")
        labels = batch["input_ids"].masked_fill(completion_mask == 0, -100)
        with torch.no_grad(), autocast:
            per_token = model(**batch, use_cache=False, labels=labels, fused_lm_head=True).log_probs
        shift_mask = completion_mask[..., 1:]
        per_token = per_token[:, -shift_mask.size(1):].float()
        sums = per_token.sum(dim=1).cpu()
        half = sums.shape[0] // 2
        chosen_sum.extend(sums[:half].tolist())
        rejected_sum.extend(sums[half:].tolist())
        tokens = [row[mask.bool()].cpu().tolist() for row, mask in zip(per_token, shift_mask)]
        chosen_tok.extend(tokens[:half])
        rejected_tok.extend(tokens[half:])
        if progress:
            progress(min(start + batch_size, total), total)
    return pd.DataFrame({
        "pair_key": pair_keys(pairs_frame, data_root),
        "ref_chosen_logps": chosen_sum,
        "ref_rejected_logps": rejected_sum,
        "ref_chosen_token_logps": chosen_tok,
        "ref_rejected_token_logps": rejected_tok,
    })


# -- training --------------------------------------------------------------------------------------------
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
    return job.model_dump(mode="json", exclude={"result_path", "resume"})


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
    if previous and identity.exists() and json.loads(identity.read_text()) != _job_identity(job):
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
        model, processor = load_model(job.model_dir, dpo, quantize=dpo.quantization == "4bit")
        ref_model = None
        if ref_logps is None:
            ref_model, _ = load_model(job.reference_dir, dpo)
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


def load_pairs_table(path: str) -> pd.DataFrame:
    import fsspec

    with fsspec.open(path, "rb") as handle:
        return pd.read_parquet(io.BytesIO(handle.read()))


def _checkpoint_epoch(path: Path) -> float | None:
    try:
        return json.loads((path / "trainer_state.json").read_text()).get("epoch")
    except (OSError, ValueError):
        return None


METRIC_KEYS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
               "logps/chosen", "logps/rejected", "learning_rate", "epoch", "train_loss", "train_runtime")


def final_metrics(history: list[dict]) -> dict[str, float]:
    """The last logged value of each DPO metric (TRL's logs), plus the run summary."""
    metrics: dict[str, float] = {}
    for entry in history:
        for key in METRIC_KEYS:
            if key in entry and isinstance(entry[key], (int, float)):
                metrics[key] = float(entry[key])
    return metrics


# -- checkpoints --------------------------------------------------------------------------------------------
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
    from transformers import AutoProcessor

    model, processor = load_model(base_model_dir, dpo or DPOConfig())
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    out = Path(out_dir)
    merged.save_pretrained(out, safe_serialization=True)
    adapter_processor = Path(adapter_dir) / "processor_config.json"
    (AutoProcessor.from_pretrained(str(adapter_dir)) if adapter_processor.exists() else processor).save_pretrained(out)
    return out


# -- launching ----------------------------------------------------------------------------------------------
def accelerate_config_path(name: str | None) -> Path:
    """A shipped config (cpu, ddp, zero2, zero3, fsdp) or a path; default cpu without a GPU, else ddp."""
    name = name or ("ddp" if has_cuda() else "cpu")
    shipped = CONFIG_DIR / f"{name}.yaml"
    if shipped.exists():
        return shipped
    path = Path(name)
    if path.exists():
        return path
    raise FileNotFoundError(f"accelerate config {name!r}: not one of "
                            f"{sorted(p.stem for p in CONFIG_DIR.glob('*.yaml'))} and not a file")


def launch(job: TrainJob, *, log_fn: Callable[[str], None] | None = None, **kwargs) -> TrainResult:
    """Train as `job.dpo.launcher` says: in this process, or under `accelerate launch`."""
    if job.dpo.launcher == "accelerate":
        return launch_accelerate(job, log_fn=log_fn)
    return train(job, log_fn=log_fn, **kwargs)


def launch_accelerate(job: TrainJob, *, config: str | None = None, num_processes: int | None = None,
                      log_fn: Callable[[str], None] | None = None, timeout_s: float | None = None) -> TrainResult:
    """`accelerate launch --config_file <config> -m rlaifv_core.dpo JOB.json` in a subprocess; every
    output line goes to `log_fn` as it comes; the main process writes the result JSON."""
    say = log_fn or (lambda line: print(line, flush=True))
    output_dir = Path(job.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    result_path = output_dir / "result.json"
    result_path.unlink(missing_ok=True)
    job = job.model_copy(update={"result_path": str(result_path)})
    job_file = output_dir / "launch-job.json"
    job_file.write_text(job.model_dump_json(indent=1))
    config_file = accelerate_config_path(config or job.dpo.accelerate_config)
    processes = num_processes or job.dpo.num_processes
    if processes is None and not has_cuda():
        processes = 1
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file)]
    if processes:
        command += ["--num_processes", str(processes)]
    command += ["-m", "rlaifv_core.dpo", str(job_file)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    say(f"$ {' '.join(command)}")
    tail: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                          env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            say(line)
            tail = (tail + [line])[-40:]
        code = proc.wait(timeout=timeout_s)
    if code != 0 or not result_path.exists():
        raise RuntimeError(f"accelerate launch exited with {code}:\n" + "\n".join(tail))
    return TrainResult.model_validate_json(result_path.read_text())


def main(argv: list[str] | None = None) -> None:
    """`python -m rlaifv_core.dpo JOB.json`: train one job (one rank under `accelerate launch`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        raise SystemExit("usage: python -m rlaifv_core.dpo JOB.json")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    job = TrainJob.model_validate_json(Path(argv[0]).read_text())
    result = train(job, log_fn=lambda line: print(line, flush=True))
    if _is_main_process():
        print(f"trained {result.global_step} steps; checkpoints: {[c.step for c in result.checkpoints]}", flush=True)


if __name__ == "__main__":
    main()
