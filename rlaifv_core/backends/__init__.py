"""Model backends behind one interface (see base.py).

    from rlaifv_core.backends import load_backend
    policy = load_backend(config.models.policy)

`rules` and `oracle` specs are not models: the stages that accept them handle them themselves.
"""

from __future__ import annotations

from .base import Backend, ChatReply, GenerationSettings, VisualPrompt, YesNo


def load_backend(spec) -> Backend:
    """The backend a ModelSpec names: hf → HFBackend, openai → OpenAIBackend."""
    if spec.backend == "hf":
        from .hf import HFBackend

        return HFBackend.from_spec(spec)
    if spec.backend == "openai":
        from .openai_api import OpenAIBackend

        return OpenAIBackend.from_spec(spec)
    raise ValueError(
        f"backend {spec.backend!r} (model {spec.name_or_path!r}) is not a model backend; "
        "load_backend serves hf and openai (rules/oracle are handled by the stages)"
    )


__all__ = ["Backend", "ChatReply", "GenerationSettings", "VisualPrompt", "YesNo", "load_backend"]
