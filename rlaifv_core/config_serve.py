"""The `serve` section of a model role: a managed server's command template (rlaifv_core/models/served.py).

    models:
      policy: {backend: hf, name_or_path: shapes:policy,
               serve: {command: "vllm serve {model} --port {port} --served-model-name {name}"}}
"""

from __future__ import annotations

import shlex

from pydantic import Field, field_validator

from .config_base import _section, _Section


class ServerError(RuntimeError):
    """A managed server that did not start or did not become ready (or a bad command template)."""


def render_command(template: str, **values) -> list[str]:
    """The argv of a command template; an unknown {field} is an error naming it."""
    try:
        return [part.format(**values) for part in shlex.split(template)]
    except KeyError as exc:
        raise ServerError(f"serve command {template!r} names {{{exc.args[0]}}}; known: "
                          f"{', '.join('{' + k + '}' for k in values)}") from None


class ServeSpec(_Section):
    """A role served by a managed server the stage starts and stops (rlaifv_core/models/served.py)."""

    model_config = _section("Serve")

    command: str = Field(
        ..., description="Command template: {model} (the folder or hub id served, the current checkpoint for "
        "the policy), {port} (a free port), {name} (the served model name), {host}; e.g. "
        "vllm serve {model} --port {port} --served-model-name {name}.",
    )
    ready_timeout_s: float = Field(600.0, gt=0, description="Seconds to wait for /health or /v1/models.")
    stop_grace_s: float = Field(10.0, gt=0, description="Seconds between SIGTERM and SIGKILL when stopping.")

    @field_validator("command")
    @classmethod
    def _known_fields(cls, value: str) -> str:
        if "{port}" not in value:
            raise ValueError("serve.command must contain {port}")
        try:
            render_command(value, model="m", port=1, name="n", host="h")
        except ServerError as exc:
            raise ValueError(str(exc)) from None
        return value
