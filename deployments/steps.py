"""Deployment build steps and helpers shared by `prefect.yaml` and `serve.py`.

`prefect deploy` runs `config_parameter` as a build step, so a deployment's default parameters are
a file in configs/ resolved at deploy time (with `section.field=value` overrides), one parameter per
section (deployments/entrypoints.py): `models: "{{ shapes.config.models }}"`, … in prefect.yaml.
What the UI's run form shows is exactly what `python -m rlaifv_core.config <file>` prints.
Nothing secret can enter a parameter this way: the config has no secret fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def config_parameter(path: str = "configs/shapes.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """Build step: {"config": <the resolved RunConfig of `path` as JSON>}. Checked without this machine's
    files and hub cache (the workers' count; the flow checks them when it starts there)."""
    from rlaifv_core.config import load_config

    config = load_config(ROOT / path if not Path(path).is_absolute() else path, overrides or [], check_machine=False)
    return {"config": config.model_dump(mode="json")}
