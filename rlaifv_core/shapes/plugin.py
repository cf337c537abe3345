"""The shapes world as a plug-in: what it adds to the pipeline, registered with the core's registries.

    [project.entry-points."rlaifv_flows.plugins"]      # pyproject.toml: found by rlaifv_core.plugins
    shapes = "rlaifv_core.shapes.plugin:register"

It registers the model scheme `shapes:` (`shapes:policy`, `shapes:labeler`: the bootstrapped tiny
models, trained on first use), the `oracle` backend (ground truth as labeler, for ablations), the
prompt source `shapes`, the benchmarks `shapes` (exact CHAIR; selection's scenes) and `shapes_report` (the report split) and the pair builder
`minimal_edit_anchor`, and CHAIR against the truth its prompts carry. Each entry imports its module only when it is called, so registering
costs nothing: a cached run never loads torch through here.
"""

from __future__ import annotations

from .. import plugins


def _model_folder(role: str):
    from .bootstrap import bootstrapped_model_dir

    return bootstrapped_model_dir(role)


def _oracle(spec):
    from .oracle import OracleLabeler

    return OracleLabeler()


def _prompts(config, iteration: int, seed: int):
    from .prompts import load_shapes_prompts

    return load_shapes_prompts(config, iteration, seed)


def _benchmark(backend, eval_config, settings):
    from .benchmark import run_shapes_benchmark

    return run_shapes_benchmark(backend, eval_config, settings)


def _report_benchmark(backend, eval_config, settings):
    from .benchmark import run_shapes_benchmark

    return run_shapes_benchmark(backend, eval_config, settings, report=True)


def _minimal_edit_anchor(group, config, rng, counts):
    from .pair_builders import minimal_edit_anchor_pairs

    return minimal_edit_anchor_pairs(group, config, rng, counts)


def _chair_against_truth(truths, answers):
    from .benchmark import chair_against_truth

    return chair_against_truth(truths, answers)


def _audit_pairs(frame):
    from .pair_audit import audit_pairs

    report = audit_pairs(frame)
    return {k: report[k] for k in ("chosen_fewer_hallucinations", "chosen_more_hallucinations",
                                   "labeler_claim_precision")}


def register() -> None:
    plugins.model_schemes.register("shapes", _model_folder)
    plugins.backends.register("oracle", _oracle)
    plugins.prompt_sources.register("shapes", _prompts)
    plugins.benchmarks.register("shapes", _benchmark)
    plugins.benchmarks.register("shapes_report", _report_benchmark)
    plugins.pair_builders.register("minimal_edit_anchor", _minimal_edit_anchor)
    plugins.truth_metrics.register("shapes", _chair_against_truth)
    plugins.pair_audits.register("shapes", _audit_pairs)
