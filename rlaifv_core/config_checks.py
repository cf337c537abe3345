"""Fail fast: every constraint a config can be checked against, checked when it is loaded.

    from rlaifv_core.config import load_config
    load_config("configs/llava15-7b.yaml")                       # raises ConfigError naming each bad field
    load_config("configs/llava15-7b.yaml", check_machine=False)  # no file/model look-ups (building deployments)

    from rlaifv_core.config_checks import config_problems
    config_problems(config)   # [("dpo.batch_size", "8 is not a multiple of …"), …]

Ranges are pydantic constraints on the fields (rlaifv_core/config.py); this module checks what one field
cannot: divisibility, dependencies between fields, names that must be registered, and (with
`check_machine`) the files and local models the run will read. The flows run the same checks when they
start, so a deployment run (whose config never went through `load_config`) fails at once too. Every check
here also runs, later, where the value is used; this is the copy that runs before any model does. The
README's "What is checked at load" table lists them.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from . import plugins
from .eval_data import DATA_KEYS, FILE_KEYS, JUDGE_REQUIRED, REQUIRED_KEYS

ACCELERATE_CONFIGS = Path(__file__).resolve().parent / "training" / "accelerate_configs"
PROMPT_FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
MODEL_ROLES = ("policy", "labeler", "splitter", "rewriter", "eval_judge")
TEXT_ONLY_BACKENDS = ("rules",)  # never a policy, labeler or evaluation judge
_NO_WARMUP = ("constant", "reduce_lr_on_plateau")  # transformers' schedulers that ignore warm-up steps


class ConfigError(ValueError):
    """A config that cannot run; `problems` holds (field, what is wrong) pairs, all of them."""

    def __init__(self, problems: list[tuple[str, str]], where: str = "config"):
        self.problems = problems
        super().__init__(f"{where}: {len(problems)} problem(s)\n" + "\n".join(f"  {f}: {m}" for f, m in problems))


def _accelerate_processes(name: str | None) -> int | None:
    """num_processes of a shipped accelerate config or a config file (None: unknown or not a file)."""
    if name is None:
        return None
    path = ACCELERATE_CONFIGS / f"{name}.yaml"
    path = path if path.exists() else Path(name)
    if not path.is_file():
        return None
    value = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("num_processes")
    return value if isinstance(value, int) and value > 0 else None


def _dpo_problems(dpo, check_machine: bool) -> list[tuple[str, str]]:
    problems = []
    if dpo.quantization != "none" and not dpo.lora:
        problems.append(("dpo.quantization", f"{dpo.quantization} needs dpo.lora=true (QLoRA trains adapters)"))
    if dpo.loss_weights is not None and len(dpo.loss_weights) != len(dpo.loss_type):
        problems.append(("dpo.loss_weights", f"{len(dpo.loss_weights)} weights for {len(dpo.loss_type)} loss types "
                                             f"{dpo.loss_type}"))
    if dpo.warmup_ratio > 0 and dpo.lr_scheduler in _NO_WARMUP:
        problems.append(("dpo.warmup_ratio", f"{dpo.warmup_ratio} is ignored by lr_scheduler {dpo.lr_scheduler!r} "
                                             "(use constant_with_warmup, or warmup_ratio 0)"))
    if dpo.launcher == "inprocess":
        for field in ("accelerate_config", "num_processes"):
            if getattr(dpo, field) is not None:
                problems.append((f"dpo.{field}", "is read only by launcher=accelerate (dpo.launcher is inprocess)"))
        processes = 1
    else:
        name = dpo.accelerate_config
        if check_machine and name is not None and not (ACCELERATE_CONFIGS / f"{name}.yaml").exists() \
                and not Path(name).is_file():
            shipped = sorted(p.stem for p in ACCELERATE_CONFIGS.glob("*.yaml"))
            problems.append(("dpo.accelerate_config", f"{name!r} is not a shipped config {shipped} and not a file"))
        processes = dpo.num_processes or _accelerate_processes(name)
    per = processes * dpo.grad_accum if processes else dpo.grad_accum
    if dpo.batch_size % per:
        how = f"{processes} processes × grad_accum {dpo.grad_accum}" if processes else f"grad_accum {dpo.grad_accum}"
        problems.append(("dpo.batch_size", f"{dpo.batch_size} (the global batch) is not a multiple of {how}"))
    return problems


def _model_problems(models, check_machine: bool) -> list[tuple[str, str]]:
    problems = []
    for role in MODEL_ROLES:
        spec = getattr(models, role)
        if spec is None:
            continue
        field = f"models.{role}"
        if spec.backend in TEXT_ONLY_BACKENDS and role not in ("splitter", "rewriter"):
            problems.append((f"{field}.backend", f"{spec.backend!r} serves text roles only (splitter, rewriter)"))
        if spec.backend == "openai" and not spec.base_url:
            problems.append((f"{field}.base_url", "backend openai needs the server's base_url"))
        if spec.backend not in ("hf", "openai", "rules") and spec.backend not in plugins.backends:
            problems.append((f"{field}.backend", f"unknown backend {spec.backend!r}"))
        if spec.backend != "hf":
            continue
        name = spec.name_or_path
        scheme = plugins.scheme_of(name)
        if scheme is not None and not Path(name).exists():
            if scheme not in plugins.model_schemes:
                problems.append((f"{field}.name_or_path", f"{name!r}: unknown scheme {scheme!r} (known: "
                                                          f"{', '.join(plugins.model_schemes.names()) or 'none'})"))
        elif check_machine:
            problems += [(f"{field}.name_or_path", m) for m in _local_model_problems(name, spec.revision)]
    return problems


def _local_model_problems(name: str, revision: str | None) -> list[str]:
    """A path-like name must be a folder; a hub id must be in the local hub cache when the hub is offline."""
    if name.startswith((".", "/", "~")) or name.count("/") > 1:  # a hub id is `name` or `owner/name`
        return [] if Path(name).expanduser().is_dir() else [f"{name!r}: no such model folder"]
    if Path(name).is_dir() or os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("1", "true", "yes", "on"):
        return []
    from .fingerprints import hub_commit  # offline: resolved from the local hub cache only

    if hub_commit(name, revision) is None:
        return [f"{name!r} (revision {revision or 'main'}) is not in the local hub cache and HF_HUB_OFFLINE is set"]
    return []


def _eval_problems(config, check_machine: bool) -> list[tuple[str, str]]:
    problems, ev = [], config.eval
    for bench in ev.benchmarks:
        if bench not in DATA_KEYS:
            if bench not in plugins.benchmarks:
                known = sorted(set(DATA_KEYS) | set(plugins.benchmarks.names()))
                problems.append(("eval.benchmarks", f"unknown benchmark {bench!r} (known: {', '.join(known)})"))
            continue
        for key in REQUIRED_KEYS[bench]:
            if not getattr(ev.data, key):
                problems.append((f"eval.data.{key}", f"benchmark {bench!r} needs this file"))
        if bench in JUDGE_REQUIRED and config.models.eval_judge is None:
            problems.append(("models.eval_judge", f"benchmark {bench!r} needs an LLM judge (an OpenAI-compatible "
                                                  "endpoint)"))
        if check_machine:
            for key in FILE_KEYS[bench]:
                for path in [p.strip() for p in (getattr(ev.data, key) or "").split(",") if p.strip()]:
                    if not Path(path).is_file():
                        problems.append((f"eval.data.{key}", f"{path}: no such file (benchmark {bench!r})"))
    if ev.samples_per_prompt > 1 and ev.temperature <= 0:
        problems.append(("eval.samples_per_prompt", f"{ev.samples_per_prompt} answers need eval.temperature > 0 "
                                                    "(greedy decoding gives one)"))
    for field, metric in [("selection.metric", config.selection.metric), ("selection.tie_breaker",
                          config.selection.tie_breaker)] + [("selection.plus", m) for m in config.selection.plus]:
        bench, dot, _ = metric.partition(".")
        if dot and bench not in ev.benchmarks:
            problems.append((field, f"{metric!r} is a metric of benchmark {bench!r}, which eval.benchmarks "
                                    f"{ev.benchmarks} does not run"))
    return problems


def _prompt_problems(config, check_machine: bool) -> list[tuple[str, str]]:
    problems, source = [], config.prompts.source
    if source.endswith(PROMPT_FILE_SUFFIXES):
        if check_machine and not Path(source).exists():
            problems.append(("prompts.source", f"{source}: no such file"))
    elif "/" not in source and source not in plugins.prompt_sources:
        problems.append(("prompts.source", f"{source!r}: not a file, a datasets id (owner/name) or a registered "
                                           f"prompt source ({', '.join(plugins.prompt_sources.names())})"))
    if check_machine and config.prompts.data_root and not Path(config.prompts.data_root).is_dir():
        problems.append(("prompts.data_root", f"{config.prompts.data_root}: no such folder"))
    return problems


def config_problems(config, check_machine: bool = True) -> list[tuple[str, str]]:
    """Every (field, problem) of a RunConfig; `check_machine=False` skips files, folders and the hub cache."""
    resample = [("pairs.builder", "resample continues answer prefixes: it needs an hf policy (models.policy.backend)")
                ] if config.pairs.builder == "resample" and config.models.policy.backend != "hf" else []
    if config.pairs.resample_failed_continuations and config.pairs.builder != "resample":
        resample.append(("pairs.resample_failed_continuations",
                         f"pairs of failed continuations come from the resample stage: set pairs.builder: resample "
                         f"(is {config.pairs.builder})"))
    return (_dpo_problems(config.dpo, check_machine) + _model_problems(config.models, check_machine)
            + _eval_problems(config, check_machine) + _prompt_problems(config, check_machine) + resample)


def check_config(config, check_machine: bool = True, where: str = "config") -> None:
    """Raise ConfigError listing every problem of `config` (see `config_problems`)."""
    problems = config_problems(config, check_machine)
    if problems:
        raise ConfigError(problems, where)
