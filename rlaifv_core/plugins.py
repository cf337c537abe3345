"""The registries through which a plug-in adds to the pipeline without the core knowing it.

    from rlaifv_core import plugins
    plugins.model_schemes.register("shapes", resolve)     # "shapes:policy" → a local model folder
    plugins.prompt_sources.get("shapes")                  # loads the installed plug-ins on a miss

A plug-in is a function `register()` that fills these registries. Plug-ins are found through the
entry-point group `rlaifv_flows.plugins` (the built-in shapes world is one:
`shapes = "rlaifv_core.shapes.plugin:register"` in pyproject.toml) and through `RLAIFV_PLUGINS`
(comma-separated `module:function`, for a plug-in that is not an installed package). They are
loaded once, on the first lookup of a name that no registry holds, so a run that never asks for a
plug-in's names never imports it. What each registry holds:

- `model_schemes`: a prefix before ":" in `name_or_path` → `resolve(rest) -> local folder`.
- `backends`: a `ModelSpec.backend` that is not a model server (e.g. `oracle`) → `factory(spec) -> Backend`.
- `prompt_sources`: a `prompts.source` name → `load(config, iteration, seed) -> prompts frame`.
- `benchmarks`: an `eval.benchmarks` name → `run(backend, eval_config, settings) -> record`.
- `pair_builders`: a `pairs.builder` name → `build(group, config, rng, counts) -> [(kind, chosen, rejected)]`.
- `truth_metrics`: an `origin_dataset` whose prompts carry `truth` → `score(truths, answers) -> metrics`.
- `pair_audits`: an `origin_dataset` whose images carry their truth → `audit(pairs frame) -> {name: share}`
  (how often a pair's chosen side truly hallucinates less: shown per iteration in the run summary).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, Callable

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "rlaifv_flows.plugins"
ENV_VARIABLE = "RLAIFV_PLUGINS"


class UnknownName(KeyError):
    """A name that no registry holds, even after loading every plug-in."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class Registry:
    """Names → objects of one kind; a miss loads the installed plug-ins once, then asks again."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}

    def register(self, name: str, value: Any) -> None:
        current = self._items.get(name)
        if current is not None and current is not value:
            raise ValueError(f"{self.kind} {name!r} is registered twice ({current!r} and {value!r})")
        self._items[name] = value

    def get(self, name: str) -> Any:
        if name not in self._items:
            load_plugins()
        if name not in self._items:
            known = ", ".join(sorted(self._items)) or "none"
            raise UnknownName(
                f"unknown {self.kind} {name!r} (known: {known}). A plug-in registers it: an installed package "
                f"with an entry point in group {ENTRY_POINT_GROUP!r} (is this project installed? `pip install -e .`), "
                f"or `{ENV_VARIABLE}=module:function`."
            )
        return self._items[name]

    def __contains__(self, name: str) -> bool:
        if name not in self._items:
            load_plugins()
        return name in self._items

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._items)


#: "scheme:rest" where scheme is a short word (not a URL: "s3://…" and "http://…" have "//" after the colon)
SCHEMED = re.compile(r"^(?P<scheme>[a-z][a-z0-9_-]*):(?!//)(?P<rest>.+)$")


def scheme_of(name_or_path: str) -> str | None:
    """The scheme of a `scheme:rest` model name (`shapes` of `shapes:policy`), else None."""
    match = SCHEMED.match(name_or_path)
    return match["scheme"] if match else None


model_schemes = Registry("model-name scheme")
backends = Registry("backend")
prompt_sources = Registry("prompt source")
benchmarks = Registry("benchmark")
pair_builders = Registry("pair builder")
truth_metrics = Registry("truth metric")
pair_audits = Registry("pair audit")

_LOADED = False
_LOCK = threading.RLock()


def _plugin_functions() -> list[tuple[str, Callable[[], None]]]:
    found = [(f"entry point {ep.name} = {ep.value}", ep.load) for ep in entry_points(group=ENTRY_POINT_GROUP)]
    for spec in filter(None, (s.strip() for s in os.environ.get(ENV_VARIABLE, "").split(","))):
        module, _, function = spec.partition(":")
        found.append((f"{ENV_VARIABLE} {spec}",
                      lambda module=module, function=function: getattr(import_module(module), function or "register")))
    return found


def load_plugins() -> None:
    """Call every plug-in's `register()` (once per process; later calls return at once)."""
    global _LOADED
    with _LOCK:
        if _LOADED:
            return
        _LOADED = True  # set first: a plug-in's own lookups must not re-enter the loading
        for where, load in _plugin_functions():
            try:
                load()()
            except Exception as error:
                raise RuntimeError(f"plug-in {where} failed to register: {error}") from error
            log.debug("loaded plug-in %s", where)
