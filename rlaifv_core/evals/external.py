"""Adapters from `EvalConfig.data` paths to the real benchmarks (user-supplied data).

    from rlaifv_core.evals.external import RUNNERS       # used through registry.run_benchmark
    record = RUNNERS["object_halbench"](policy_backend, config.eval, judge_backend, settings)

Keys of `eval.data` each benchmark reads:
- object_halbench: `object_halbench` (jsonl), `coco_instances` and `coco_captions` (json, comma-
  separated for train+val), optional `image_root`; LLM judge if `models.eval_judge` is set, else LLM-free.
- mmhal: `mmhal` (questions jsonl/json); needs `models.eval_judge`.
- refomb: `refomb` (items jsonl), `refomb_references` (reference answers jsonl); needs the judge.
- amber: `amber_annotations`, `amber_queries`, optional `amber_relation`, `amber_safe_words`, `image_root`.
The judge's replies are cached in `judge_cache` (default `.judge-cache.jsonl` next to the data).
"""

from __future__ import annotations

from pathlib import Path

from .judge import JudgeClient


def _need(data: dict, key: str, bench: str) -> str:
    if not data.get(key):
        raise ValueError(f"benchmark {bench!r} needs eval.data.{key} (a path to the user-supplied file)")
    return data[key]


def _judge(judge_backend, data: dict, bench: str, required: bool) -> JudgeClient | None:
    if judge_backend is None:
        if required:
            raise ValueError(f"benchmark {bench!r} needs an LLM judge: set models.eval_judge (an OpenAI-compatible endpoint)")
        return None
    cache = data.get("judge_cache") or str(Path(data.get(bench, ".")).parent / ".judge-cache.jsonl")
    return JudgeClient(judge_backend, cache_path=cache)


def _paths(value: str | None) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()] if value else []


def object_halbench(backend, eval_config, judge_backend, settings) -> dict:
    from .object_halbench import run_object_halbench

    data = eval_config.data
    return run_object_halbench(_need(data, "object_halbench", "object_halbench"), _paths(data.get("coco_instances")),
                               _paths(data.get("coco_captions")), backend=backend,
                               judge=_judge(judge_backend, data, "object_halbench", required=False), settings=settings,
                               data_root=data.get("image_root"), keep_items=False)


def mmhal(backend, eval_config, judge_backend, settings) -> dict:
    from .mmhal import run_mmhal

    data = eval_config.data
    return run_mmhal(_need(data, "mmhal", "mmhal"), _judge(judge_backend, data, "mmhal", required=True), backend=backend,
                     settings=settings, data_root=data.get("image_root"), keep_items=False)


def refomb(backend, eval_config, judge_backend, settings) -> dict:
    from .refomb import run_refomb

    data = eval_config.data
    return run_refomb(_need(data, "refomb", "refomb"), _need(data, "refomb_references", "refomb"),
                      _judge(judge_backend, data, "refomb", required=True), backend=backend, settings=settings,
                      data_root=data.get("image_root"), keep_items=False)


def amber(backend, eval_config, judge_backend, settings) -> dict:
    from .amber import run_amber

    data = eval_config.data
    return run_amber(_need(data, "amber_annotations", "amber"), queries=_need(data, "amber_queries", "amber"),
                     relation=data.get("amber_relation"), safe_words=data.get("amber_safe_words"),
                     image_root=data.get("image_root"), backend=backend, settings=settings)


RUNNERS = {"object_halbench": object_halbench, "mmhal": mmhal, "refomb": refomb, "amber": amber}
