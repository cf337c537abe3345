"""Which model serves a role: names → folders, specs → backends, identities for cache keys.

    from rlaifv_core.models import open_model, model_fingerprint, resolve_model_path, open_backend
    policy = open_model(config.models.policy, checkpoint_dir)    # held per stage (holding_models)
    chat_backend = open_backend("work/train/checkpoint-40", base_model="shapes:policy")

schemes.py resolves `scheme:rest` names through the plug-in registry; roles.py loads and caches
backends and fingerprints them; lora.py recognises LoRA adapter folders and serves them merged.
"""

from __future__ import annotations

from .lora import adapter_base, is_lora_adapter, load_lora_backend, open_backend
from .roles import forget_models, holding_models, load_model, model_fingerprint, open_model
from .schemes import resolve_model_path

__all__ = ["adapter_base", "forget_models", "holding_models", "is_lora_adapter", "load_lora_backend", "load_model",
           "model_fingerprint", "open_backend", "open_model", "resolve_model_path"]
