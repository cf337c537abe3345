"""The Prefect flows (`python flows/iterate.py`, …). Importing any of them sets the quiet defaults of
flows/quiet.py (no offline telemetry errors, no model-loading progress bars) unless already set."""

from flows.quiet import set_quiet_defaults

set_quiet_defaults()
