"""Model names with a scheme: `scheme:rest` → a local model folder, by whoever registered the scheme.

    from rlaifv_core.models import resolve_model_path
    resolve_model_path("shapes:policy")            # the bootstrapped shapes policy's folder
    resolve_model_path("llava-hf/llava-1.5-7b-hf")  # unchanged: a hub id or a local path

The core knows no scheme itself; plug-ins register them in `rlaifv_core.plugins.model_schemes`
(the shapes world registers `shapes:`). Hub ids and local paths pass through unchanged; a
`word:rest` name that is neither a registered scheme nor an existing path is an error naming the
schemes that are known (hub ids never hold a colon).
"""

from __future__ import annotations

from pathlib import Path

from .. import plugins


def resolve_model_path(name_or_path: str) -> str:
    """The local folder a schemed name stands for; anything else unchanged."""
    match = plugins.SCHEMED.match(name_or_path)
    if match is None or Path(name_or_path).exists():
        return name_or_path
    return str(plugins.model_schemes.get(match["scheme"])(match["rest"]))
