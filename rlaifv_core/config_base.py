"""What every config section shares: no unknown keys, checked assignments, a title, a fingerprint.

    from rlaifv_core.config_base import _Section, _section
    class MySection(_Section):
        model_config = _section("My section")      # the title the Prefect run form shows
    MySection().fingerprint()                      # stable hash of its values (cache keys)
"""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ConfigDict


def _section(title: str) -> ConfigDict:
    """A section's settings; `title` is what the Prefect run form shows above it."""
    return ConfigDict(extra="forbid", validate_assignment=True, title=title)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def fingerprint(self) -> str:
        """Stable hash of this section's values (used in cache keys)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
