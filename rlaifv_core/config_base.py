"""What every config section shares: no unknown keys, checked assignments, a title, a fingerprint.

    from rlaifv_core.config_base import _Section, _section
    class MySection(_Section):
        model_config = _section("My section")      # the title the Prefect run form shows
    MySection().fingerprint()                      # stable hash of its values (cache keys)
    apply_overrides({"dpo": {}}, ["dpo.beta=0.2"])  # `a.b=value` overrides of a config dict

The JSON schema of a section (what Prefect's run form renders) lists as `required` every field that
cannot be empty (no None): the form labels only the others "(Optional)". Validation is pydantic's and
unchanged (every field keeps its default); a deployment's parameters always carry whole sections.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml

from pydantic import BaseModel, ConfigDict


def _nullable(prop: dict) -> bool:
    return prop.get("type") == "null" or any(option.get("type") == "null" for option in prop.get("anyOf", []))


def _form_required(schema: dict, cls: type) -> None:
    """Schema hook: every property that cannot be None is `required` (so the run form does not label
    it "(Optional)"); the nullable ones (None = unset, e.g. a hub revision) stay optional."""
    schema["required"] = [name for name, prop in schema.get("properties", {}).items() if not _nullable(prop)]


def _section(title: str) -> ConfigDict:
    """A section's settings; `title` is what the Prefect run form shows above it."""
    return ConfigDict(extra="forbid", validate_assignment=True, title=title, json_schema_extra=_form_required)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, json_schema_extra=_form_required)

    def fingerprint(self) -> str:
        """Stable hash of this section's values (used in cache keys)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _parse_value(text: str) -> Any:
    """Override values are YAML scalars/lists: `4`, `1e-5`, `true`, `[sigmoid, sft]`, `null`."""
    return yaml.safe_load(text)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides to a nested dict (in place) and return it."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form section.field=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {key!r} is not a section")
        node[keys[-1]] = _parse_value(raw)
    return data
