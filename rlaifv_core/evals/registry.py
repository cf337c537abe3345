"""One entry point for every benchmark: `run_benchmark(name, backend, eval_config)` → result record.

    from rlaifv_core.evals.registry import run_benchmark
    record = run_benchmark("shapes", policy_backend, config.eval)

A record has `metrics` (flat, numbers only), `n`, `judge` (identity, or "exact"/"llm-free"),
`generation` (settings) and `model` (the evaluated model's identity), plus benchmark extras.
"""

from __future__ import annotations

from .. import plugins
from ..backends.base import Backend, GenerationSettings
from .external import RUNNERS, check_eval_data


def generation_settings(eval_config) -> GenerationSettings:
    greedy = eval_config.temperature <= 0
    return GenerationSettings(n=1 if greedy else eval_config.samples_per_prompt, temperature=eval_config.temperature,
                              top_p=1.0, top_k=None, max_new_tokens=eval_config.max_new_tokens,
                              num_beams=eval_config.num_beams if greedy else 1, seed=eval_config.seed)


def check_benchmark_data(eval_config) -> None:
    """Every data file of every configured benchmark present (an error naming the key and the path):
    called by the flows before any stage runs a model, so a missing file never surfaces hours later.
    A report benchmark (`eval.report_benchmarks`) must not also be a selection benchmark: selection
    would then see the report split."""
    both = sorted(set(eval_config.benchmarks) & set(eval_config.report_benchmarks))
    if both:
        raise ValueError(f"eval.report_benchmarks {both} are also in eval.benchmarks: the report split must be "
                         "a benchmark that selection never sees")
    for field in ("benchmarks", "report_benchmarks"):
        for name in getattr(eval_config, field):
            if name in RUNNERS:
                check_eval_data(eval_config, name)
            elif name not in plugins.benchmarks:
                raise ValueError(f"unknown benchmark {name!r} in eval.{field}; known: "
                                 f"{', '.join(sorted(set(RUNNERS) | set(plugins.benchmarks.names())))}")


def run_benchmark(name: str, backend: Backend, eval_config, judge: Backend | None = None) -> dict:
    settings = generation_settings(eval_config)
    if name in RUNNERS:  # benchmarks on user-supplied data (Object HalBench, MMHal, RefoMB, AMBER)
        return RUNNERS[name](backend, eval_config, judge, settings)
    if name in plugins.benchmarks:  # a benchmark a plug-in registered (the shapes world's `shapes`)
        return plugins.benchmarks.get(name)(backend, eval_config, settings)
    known = sorted(set(RUNNERS) | set(plugins.benchmarks.names()))
    raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(known)}")
