"""Quiet defaults of a flow process, set when any `flows` module is imported (flows/__init__.py):

    python flows/iterate.py         # no telemetry ERROR lines, no per-model "Loading weights" bars
    PREFECT_SERVER_ANALYTICS_ENABLED=true HF_HUB_DISABLE_PROGRESS_BARS=0 python flows/iterate.py   # yours win

- `PREFECT_SERVER_ANALYTICS_ENABLED=false`: without `PREFECT_API_URL` a flow starts Prefect's temporary
  server, a subprocess that inherits this environment; its telemetry heartbeat (the only telemetry
  that Prefect 3's server sends) logs `ERROR … Failed to send telemetry` on a machine without network.
  A value in the active Prefect profile still wins (Prefect passes profile settings to that subprocess).
- `HF_HUB_DISABLE_PROGRESS_BARS=1`: huggingface_hub's bars and transformers' (`Loading weights`, one
  per model load; transformers reads this switch). Read when huggingface_hub is first imported, which
  in a flow process is after this (models load lazily, inside tasks); nothing here imports it.

Only unset variables are set (`os.environ.setdefault`), so a user's own choice always stands.
"""

from __future__ import annotations

import os

QUIET_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}


def set_quiet_defaults(environ=os.environ) -> dict[str, str]:
    """Set every unset QUIET_DEFAULTS variable; returns those it set."""
    added = {key: value for key, value in QUIET_DEFAULTS.items() if key not in environ}
    environ.update(added)
    return added
