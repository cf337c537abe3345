"""LoRA adapters and checkpoint folders: recognise them, find their base, serve them merged.

    from rlaifv_core.models import open_backend, is_lora_adapter
    backend = open_backend("work/train/checkpoint-40", base_model="shapes:policy")   # adapter + base
    backend = open_backend("llava-hf/llava-1.5-7b-hf")                                # any loadable model

A LoRA adapter folder holds `adapter_config.json`; it is applied to its base with PEFT and merged in
memory, the base being `base_model` or the adapter config's `base_model_name_or_path`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from ..backends.base import Backend
from ..fingerprints import folder_fingerprint
from .schemes import resolve_model_path

log = logging.getLogger(__name__)


def is_lora_adapter(path: str | os.PathLike) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def adapter_base(adapter_dir: str | os.PathLike, base_model: str | os.PathLike | None = None) -> str:
    """The base model of a LoRA adapter: `base_model` if given, else the adapter config's."""
    if base_model is not None:
        return str(base_model)
    config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{adapter_dir}: the adapter config names no base_model_name_or_path; pass base_model=")
    return str(base)


def open_backend(model: str | os.PathLike, *, base_model: str | os.PathLike | None = None, backend: str = "hf",
                 base_url: str | None = None, **spec_fields) -> Backend:
    """A Backend for a full checkpoint folder, a LoRA adapter folder, a hub id, `shapes:policy`
    (hf) or an endpoint's model name (openai). spec_fields: ModelSpec fields (device, dtype, …)."""
    from ..config import ModelSpec
    from .roles import load_model

    name = str(model)
    if backend == "openai" and not base_url:
        raise ValueError("backend='openai' needs base_url (e.g. http://127.0.0.1:8000/v1)")
    if backend == "hf" and Path(name).is_dir() and is_lora_adapter(name):
        return load_lora_backend(name, base_model=base_model, **spec_fields)
    if base_model is not None:
        log.warning("%s is not a LoRA adapter folder; base_model=%s is ignored", name, base_model)
    return load_model(ModelSpec(backend=backend, name_or_path=name, base_url=base_url, **spec_fields))


def load_lora_backend(adapter_dir: str | os.PathLike, *, base_model: str | os.PathLike | None = None,
                      **spec_fields) -> Backend:
    """Base model + LoRA adapter (PEFT), merged in memory, served by an HFBackend."""
    from peft import PeftModel

    from ..backends.hf import HFBackend
    from ..config import ModelSpec

    adapter_dir = Path(adapter_dir)
    base_name = adapter_base(adapter_dir, base_model)
    base = HFBackend.from_spec(ModelSpec(name_or_path=base_name, **spec_fields), path=resolve_model_path(base_name))
    merged = PeftModel.from_pretrained(base.model, str(adapter_dir)).merge_and_unload()
    processor = base.processor
    if base.is_vlm and any((adapter_dir / f).is_file() for f in ("processor_config.json", "preprocessor_config.json")):
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(str(adapter_dir))
        tokenizer = getattr(processor, "tokenizer", processor)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    fingerprint = hashlib.sha256(f"{folder_fingerprint(adapter_dir)}|{base.fingerprint}".encode()).hexdigest()[:16]
    backend = HFBackend(merged, processor, name=f"{adapter_dir} (LoRA on {base_name})", fingerprint=fingerprint,
                        is_vlm=base.is_vlm, batch_size=base.batch_size)
    backend.identity["base_model"] = base_name
    backend.identity["adapter"] = str(adapter_dir)
    return backend
