"""The text-model roles (claim splitter, question rewriter): "rules", a spec to load, or a backend.

    from rlaifv_core.feedback.text_roles import is_rules, text_backend
    if not is_rules(config.models.splitter):
        backend, owned = text_backend(config.models.splitter)   # owned: loaded here, close it after
"""

from __future__ import annotations

from typing import Any

from ..backends.base import Backend


def is_rules(spec: Any) -> bool:
    """Whether the role is served by the rule-based path ("rules", None, or a spec with backend rules)."""
    if spec is None or (isinstance(spec, str) and spec == "rules"):
        return True
    return getattr(spec, "backend", None) == "rules"


def text_backend(spec_or_backend: Any) -> tuple[Backend, bool]:
    """(backend, whether it was loaded here and must be closed by the caller)."""
    if isinstance(spec_or_backend, Backend):
        return spec_or_backend, False
    if getattr(spec_or_backend, "backend", None) in ("hf", "openai"):
        from ..models import load_model

        return load_model(spec_or_backend), True
    raise TypeError(f"not a text model spec or Backend: {spec_or_backend!r}")
