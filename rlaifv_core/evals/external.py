"""Adapters from `EvalConfig.data` paths to the real benchmarks (user-supplied data).

    from rlaifv_core.evals.external import RUNNERS, check_eval_data    # used through registry.run_benchmark
    check_eval_data(config.eval, "object_halbench")     # every file there, before any model runs
    record = RUNNERS["object_halbench"](policy_backend, config.eval, judge_backend, settings)

Keys of `eval.data` each benchmark reads (`DATA_KEYS`; with `eval.protocol: rlaifv` also `RLAIFV_KEYS`):
- object_halbench: `object_halbench` (jsonl), `coco_instances` and `coco_captions` (json, comma-
  separated for train+val), optional `image_root`; LLM judge if `models.eval_judge` is set, else LLM-free.
- mmhal: `mmhal` (questions jsonl/json); needs `models.eval_judge`.
- refomb: `refomb` (items jsonl), `refomb_references` (reference answers jsonl); needs the judge.
- amber: `amber_annotations`, `amber_queries`, optional `amber_relation`, `amber_safe_words`, `image_root`.
- protocol rlaifv: `rlaifv_repo` (the user's checkout of RLAIF-V) or the single files `coco_synonyms`,
  `objhal_extraction_prompt`, `mmhal_judge_prompt`, `refomb_judge_prompt`, `refomb_review_prompt`.
The judge's replies are cached in `judge_cache` (default `.judge-cache.jsonl` next to the data).
A benchmark reads its keys through a view that refuses a key its `DATA_KEYS` entry does not list, so
the table is what the code reads; `unused_data_keys` names set keys that no configured benchmark reads.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ..eval_data import DATA_KEYS, FILE_KEYS as _FILE_KEYS, REQUIRED_KEYS as _REQUIRED, RLAIFV_KEYS
from .judge import JudgeClient


class DataView:
    """`eval.data` as one benchmark may read it: only the keys DATA_KEYS (and RLAIFV_KEYS) list for it."""

    def __init__(self, data, bench: str, protocol: str):
        self._data, self._bench = data, bench
        self._allowed = set(DATA_KEYS[bench]) | (set(RLAIFV_KEYS[bench]) if protocol == "rlaifv" else set())

    def __getattr__(self, key: str):
        if key.startswith("_"):
            raise AttributeError(key)
        if key not in self._allowed:
            raise KeyError(f"benchmark {self._bench!r} read eval.data.{key}, which DATA_KEYS/RLAIFV_KEYS do not list")
        return getattr(self._data, key)


def consumed_keys(eval_config) -> set[str]:
    """The eval.data keys the configured benchmarks read under the configured protocol."""
    keys: set[str] = set()
    for bench in eval_config.benchmarks:
        keys |= set(DATA_KEYS.get(bench, ()))
        if eval_config.protocol == "rlaifv":
            keys |= set(RLAIFV_KEYS.get(bench, ()))
    return keys


def unused_data_keys(eval_config) -> list[str]:
    """eval.data keys that are set but read by no benchmark of eval.benchmarks (a typo'd or stale path)."""
    data = eval_config.data
    return sorted(k for k in data.model_fields_set if getattr(data, k) is not None and k not in consumed_keys(eval_config))


def paths(value: str | None) -> list[str]:
    """A comma-separated file list as paths."""
    return [p.strip() for p in value.split(",") if p.strip()] if value else []


def check_eval_data(eval_config, bench: str) -> None:
    """Every required eval.data key of `bench` set and every file it names present (FileNotFoundError naming
    the key and the path); called before the benchmark runs any model. Set keys nobody reads: a warning."""
    if bench not in DATA_KEYS:
        return
    data = eval_config.data
    for key in _REQUIRED[bench]:
        if not getattr(data, key):
            raise ValueError(f"benchmark {bench!r} needs eval.data.{key} (a path to the user-supplied file)")
    for key in _FILE_KEYS[bench]:
        for path in paths(getattr(data, key)):
            if not Path(path).is_file():
                raise FileNotFoundError(f"{path}: no such file (eval.data.{key}, benchmark {bench!r})")
    unused = unused_data_keys(eval_config)
    if unused:
        warnings.warn(f"eval.data keys read by no benchmark of {eval_config.benchmarks}: {', '.join(unused)}",
                      stacklevel=2)


def _judge(judge_backend, data: DataView, bench: str, required: bool) -> JudgeClient | None:
    if judge_backend is None:
        if required:
            raise ValueError(f"benchmark {bench!r} needs an LLM judge: set models.eval_judge (an OpenAI-compatible endpoint)")
        return None
    cache = data.judge_cache or str(Path(getattr(data, bench) or ".").parent / ".judge-cache.jsonl")
    return JudgeClient(judge_backend, cache_path=cache)


def object_halbench(backend, eval_config, judge_backend, settings) -> dict:
    from .object_halbench import run_object_halbench

    check_eval_data(eval_config, "object_halbench")
    data = DataView(eval_config.data, "object_halbench", eval_config.protocol)
    return run_object_halbench(data.object_halbench, paths(data.coco_instances), paths(data.coco_captions),
                               backend=backend, judge=_judge(judge_backend, data, "object_halbench", required=False),
                               settings=settings, data_root=data.image_root, keep_items=False,
                               protocol=eval_config.protocol, original=data)


def mmhal(backend, eval_config, judge_backend, settings) -> dict:
    from .mmhal import run_mmhal

    check_eval_data(eval_config, "mmhal")
    data = DataView(eval_config.data, "mmhal", eval_config.protocol)
    return run_mmhal(data.mmhal, _judge(judge_backend, data, "mmhal", required=True), backend=backend,
                     settings=settings, data_root=data.image_root, keep_items=False,
                     protocol=eval_config.protocol, original=data)


def refomb(backend, eval_config, judge_backend, settings) -> dict:
    from .refomb import run_refomb
    from .refomb_rlaifv import run_refomb_rlaifv

    check_eval_data(eval_config, "refomb")
    data = DataView(eval_config.data, "refomb", eval_config.protocol)
    judge = _judge(judge_backend, data, "refomb", required=True)
    if eval_config.protocol == "rlaifv":
        return run_refomb_rlaifv(data.refomb, data.refomb_references, judge, original=data, backend=backend,
                                 settings=settings, data_root=data.image_root, keep_items=False)
    return run_refomb(data.refomb, data.refomb_references, judge, backend=backend, settings=settings,
                      data_root=data.image_root, keep_items=False)


def amber(backend, eval_config, judge_backend, settings) -> dict:
    from .amber import run_amber

    check_eval_data(eval_config, "amber")
    data = DataView(eval_config.data, "amber", eval_config.protocol)
    return run_amber(data.amber_annotations, queries=data.amber_queries, relation=data.amber_relation,
                     safe_words=data.amber_safe_words, image_root=data.image_root, backend=backend, settings=settings)


RUNNERS = {"object_halbench": object_halbench, "mmhal": mmhal, "refomb": refomb, "amber": amber}
