"""Best-of-N with self-feedback: sample N answers per prompt, keep the one the aligned model prefers.

    python flows/best_of_n.py --reward-model runs/shapes/iter-1/checkpoints/step-40      # shapes world
    python flows/best_of_n.py --reward-model CKPT --reference shapes:policy --n 16 prompts.per_iteration=50
    python flows/best_of_n.py --config configs/llava15-7b.yaml --reward-model openbmb/RLAIF-V-7B \\
        --reference llava-hf/llava-1.5-7b-hf --method reward

The candidates come from the configured policy (`models.policy`, any backend) with the configured
sampling settings (`sampling.*`, n replaced by `--n`); the prompts from `prompts.*` (slice
`--iteration`). Scores (docs/method.md §7): `reward` = the length-normalised DPO implicit reward
β/T Σ (log πθ − log π_ref) of the reward model (the aligned checkpoint; a LoRA adapter folder
works, with `--base-model` or its adapter config's base) relative to `--reference` (the model it
was trained from; default: the configured policy); `reward_sum` its un-normalised sum; the
baselines `policy_likelihood` / `reference_likelihood` (mean token log-prob of one model). All four
are computed and stored; `--method` picks the one that selects. Written to the run store under
`best-of-n/<tag>/`: prompts, candidates, scores and best (parquet). Three cached Prefect tasks:
sample, score, write. The run is `best-of-n-<store.run_name>`, its tasks `best-of-n-sample-iter-<k>`,
`best-of-n-score-iter-<k>`, `best-of-n-write-iter-<k>`; all carry the tags `run:<run_name>` and `iteration:<k>`.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from prefect import flow, tags
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python flows/best_of_n.py` from a checkout

from flows.lock import holding_run  # noqa: E402
from flows.names import named, prefixed_run_name, run_tags, tag_this_run  # noqa: E402
from rlaifv_core.config import RunConfig  # noqa: E402
from rlaifv_core.models import model_fingerprint  # noqa: E402
from rlaifv_core.store import ArtifactRef  # noqa: E402
from tasks.best_of_n import path_fingerprint, sample_task, score_task, write_task  # noqa: E402
from tasks.common import result_storage_for  # noqa: E402

METHODS = ("reward", "reward_sum", "policy_likelihood", "reference_likelihood")


class BestOfNResult(BaseModel):
    prompts: ArtifactRef
    candidates: ArtifactRef
    scores: ArtifactRef
    best: ArtifactRef
    counts: dict


@flow(name="best-of-n", flow_run_name=prefixed_run_name("best-of-n"), log_prints=True)
def best_of_n_flow(config: RunConfig = RunConfig(), reward_model: str = "shapes:policy", reference: str | None = None,
                   base_model: str | None = None, n: int | None = None, method: str = "reward",
                   beta: float | None = None, iteration: int = 1) -> BestOfNResult:
    """Sample N candidates per prompt from the policy, score them with the reward model, keep the best."""
    if method not in METHODS:
        raise ValueError(f"method {method!r}: one of {', '.join(METHODS)}")
    tag_this_run(*run_tags(config, iteration))
    with tags(*run_tags(config, iteration)), holding_run(config):
        return _best_of_n(config, reward_model, reference, base_model, n, method, beta, iteration)


def _best_of_n(config: RunConfig, reward_model: str, reference: str | None, base_model: str | None, n: int | None,
               method: str, beta: float | None, iteration: int) -> BestOfNResult:
    reference = reference or config.models.policy.name_or_path
    beta = config.dpo.beta if beta is None else beta
    sampling = config.sampling.model_copy(update={"n": n or config.sampling.n})
    policy_fp = model_fingerprint(config.models.policy)
    reward_fp = path_fingerprint(reward_model, base_model)
    reference_fp = path_fingerprint(reference)
    tag = hashlib.sha256(f"{iteration}|{policy_fp}|{sampling.fingerprint()}|{config.prompts.fingerprint()}".encode()
                         ).hexdigest()[:10]
    folder = f"best-of-n/iter-{iteration}-n{sampling.n}-{tag}"
    storage = {"result_storage": result_storage_for(config.store)}
    it = f"iter-{iteration}"
    prompts_ref, candidates_ref = named(sample_task.with_options(**storage), f"best-of-n-sample-{it}")(
        config.prompts, iteration, config.iteration.seed, config.models.policy, policy_fp, sampling, config.store, folder)
    score_folder = f"{folder}/scored-{hashlib.sha256(f'{reward_fp}|{reference_fp}|{beta}'.encode()).hexdigest()[:10]}"
    scores_ref = named(score_task.with_options(**storage), f"best-of-n-score-{it}")(
        prompts_ref, candidates_ref, reward_model, reward_fp, reference, reference_fp, base_model, beta,
        config.models.policy.device, config.store, score_folder)
    best_ref, counts = named(write_task.with_options(**storage), f"best-of-n-write-{it}")(
        prompts_ref, scores_ref, method, config.store, f"{score_folder}/{method}")
    print(f"best of {sampling.n} by {method}: {best_ref.rows} answers → {best_ref.uri}")
    return BestOfNResult(prompts=prompts_ref, candidates=candidates_ref, scores=scores_ref, best=best_ref, counts=counts)


def main(argv: list[str] | None = None) -> BestOfNResult:
    from flows.cli import parse_config

    def extra(parser):
        parser.add_argument("--reward-model", required=True, help="aligned checkpoint (folder, LoRA adapter, hub id)")
        parser.add_argument("--reference", default=None, help="its reference model (default: models.policy)")
        parser.add_argument("--base-model", default=None, help="base of a LoRA reward model (default: its adapter config's)")
        parser.add_argument("--n", type=int, default=None, help="candidates per prompt (default: sampling.n)")
        parser.add_argument("--method", choices=METHODS, default="reward")
        parser.add_argument("--beta", type=float, default=None, help="β of the implicit reward (default: dpo.beta)")
        parser.add_argument("--iteration", type=int, default=1, help="prompt slice")

    config, args = parse_config(__doc__.splitlines()[0], argv, extra=extra)
    result = best_of_n_flow(config, reward_model=args.reward_model, reference=args.reference,
                            base_model=args.base_model, n=args.n, method=args.method, beta=args.beta,
                            iteration=args.iteration)
    for key, value in result.counts.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items())
        print(f"{key:>20}: {value}")
    return result


if __name__ == "__main__":
    from flows.signals import run_main

    run_main(main)
