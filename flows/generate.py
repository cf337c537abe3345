"""One iteration's feedback data: prompts → samples → claims → questions → verdicts → pairs.

    python flows/generate.py                                   # shapes world, iteration 1
    python flows/generate.py --config configs/llava15-7b.yaml prompts.per_iteration=200
    python flows/generate.py --iteration 2 pairs.builder=paper

Prints the pairs artifact and the stage counts. Every stage is a cached Prefect task; sampling, claim
splitting and labeling run in shards of `sampling.shard_size` prompts on the task runner that `scale.task_runner`
names (threads, a Dask or a Ray cluster; flows/runner.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

from prefect import flow, tags
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python flows/generate.py` from a checkout

from flows.lock import holding_run  # noqa: E402
from flows.names import named, run_tags  # noqa: E402
from flows.outcome import finish, warnings_of  # noqa: E402
from flows.runner import gpu_guarded, shard_runner  # noqa: E402
from rlaifv_core.config import RunConfig  # noqa: E402
from rlaifv_core.models import model_fingerprint  # noqa: E402
from rlaifv_core.store import ArtifactRef  # noqa: E402
from tasks.claims import split_and_rewrite  # noqa: E402
from tasks.common import (artifact_key, checkpoint_fingerprint, counts_table, result_storage_for,  # noqa: E402
                          retry_options, sum_counts)
from tasks.judge import judge_shard  # noqa: E402
from tasks.pairs import assemble_pairs  # noqa: E402
from tasks.prompts import make_prompts  # noqa: E402
from tasks.sample import sample_shard  # noqa: E402
from tasks.tables import merge_tables  # noqa: E402


class GenerateResult(BaseModel):
    prompts: ArtifactRef
    candidates: ArtifactRef
    claims: ArtifactRef
    verdicts: ArtifactRef
    pairs: ArtifactRef
    counts: dict


def shards(total: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, total)) for start in range(0, total, max(size, 1))] or [(0, 0)]


@flow(name="generate", flow_run_name="generate-iter-{iteration}", log_prints=True)
def generate(config: RunConfig = RunConfig(), iteration: int = 1, policy_checkpoint: ArtifactRef | None = None) -> GenerateResult:
    """Feedback data for one iteration with the given policy (default: the configured policy).
    Degenerate feedback (0 pairs; a labeler accepting or rejecting nearly every claim) ends the run
    "Completed with warnings" (flows/outcome.py); callers get the GenerateResult either way."""
    with tags(*run_tags(config, iteration)), holding_run(config):
        result = _generate(config, iteration, policy_checkpoint)
    return finish(result, warnings_of(result.counts["pairs"]))


def _generate(config: RunConfig, iteration: int, policy_checkpoint: ArtifactRef | None) -> GenerateResult:
    folder = f"iter-{iteration}"
    it = f"iter-{iteration}"
    storage = {"result_storage": result_storage_for(config.store)}
    retry = retry_options(config.iteration)  # the model-running stages
    prompts_ref, prompt_counts = named(make_prompts.with_options(**storage), f"prompts-{it}")(
        config.prompts, iteration, config.iteration.seed, config.store)
    policy_fp = checkpoint_fingerprint(config.models.policy, policy_checkpoint)
    labeler_fp = model_fingerprint(config.models.labeler)
    parts = shards(prompts_ref.rows or 0, config.sampling.shard_size)

    scale = config.scale
    with shard_runner(scale) as run_shards:  # threads here, or a Dask/Ray cluster (config.scale)
        sampler = sample_shard.with_options(**storage, **retry)
        sampled = run_shards([
            (gpu_guarded(named(sampler, f"sample-{it}-shard-{i}"), scale),
             dict(prompts_ref=prompts_ref, shard=part, policy=config.models.policy, policy_checkpoint=policy_checkpoint,
                  policy_fingerprint=policy_fp, sampling=config.sampling, store=config.store,
                  out_path=f"{folder}/shards/candidates-{i:04d}.parquet"))
            for i, part in enumerate(parts)])
        sample_counts = sum_counts([c for _, c in sampled])
        candidates_ref = named(merge_tables.with_options(**storage), f"merge-candidates-{it}")(
            [r for r, _ in sampled], "candidates", config.store, f"{folder}/candidates.parquet")

        claimer = split_and_rewrite.with_options(**storage, **retry)
        splitter_fp, rewriter_fp = model_fingerprint(config.models.splitter), model_fingerprint(config.models.rewriter)
        claimed = run_shards([
            (gpu_guarded(named(claimer, f"claims-{it}-shard-{i}"), scale),
             dict(candidates_ref=shard_ref, prompts_ref=prompts_ref, models=config.models, claims=config.claims,
                  splitter_fingerprint=splitter_fp, rewriter_fingerprint=rewriter_fp,
                  seed=config.iteration.seed * 1000 + iteration, store=config.store,
                  out_path=f"{folder}/shards/claims-{i:04d}.parquet"))
            for i, (shard_ref, _) in enumerate(sampled)])
        claim_counts = sum_counts([c for _, c in claimed])
        claims_ref = named(merge_tables.with_options(**storage), f"merge-claims-{it}")(
            [r for r, _ in claimed], "claims", config.store, f"{folder}/claims.parquet")
        counts_table(artifact_key(config.store.run_name, f"{folder}/claims.parquet", "counts"), "claims", claim_counts)

        judge = judge_shard.with_options(**storage, **retry)
        judged = run_shards([
            (gpu_guarded(named(judge, f"judge-{it}-shard-{i}"), scale),
             dict(prompts_ref=prompts_ref, claims_ref=claims_ref, shard=part, labeler=config.models.labeler,
                  labeler_fingerprint=labeler_fp, judge=config.judge, store=config.store,
                  out_path=f"{folder}/shards/verdicts-{i:04d}.parquet"))
            for i, part in enumerate(parts)])
        verdicts_ref = named(merge_tables.with_options(**storage), f"merge-verdicts-{it}")(
            judged, "verdicts", config.store, f"{folder}/verdicts.parquet")

    pairs_ref, pair_counts = named(assemble_pairs.with_options(**storage), f"pairs-{it}")(
        prompts_ref, candidates_ref, claims_ref, verdicts_ref, config.pairs, policy_fp, labeler_fp, config.store,
        f"{folder}/pairs.parquet")
    counts = {"prompts": prompt_counts, "sample": sample_counts, "claims": claim_counts, "pairs": pair_counts}
    print(f"pairs: {pairs_ref.rows} → {pairs_ref.uri}")
    return GenerateResult(prompts=prompts_ref, candidates=candidates_ref, claims=claims_ref, verdicts=verdicts_ref,
                          pairs=pairs_ref, counts=counts)


def main(argv: list[str] | None = None) -> GenerateResult:
    from flows.cli import parse_config

    config, args = parse_config(__doc__.splitlines()[0], argv,
                                extra=lambda p: p.add_argument("--iteration", type=int, default=1))
    result = generate(config, iteration=args.iteration)
    for stage, counts in result.counts.items():
        print(f"{stage:>8}: " + ", ".join(f"{k}={v}" for k, v in counts.items() if k != "examples"))
    return result


if __name__ == "__main__":
    from flows.signals import run_main

    run_main(main)
