"""Best-of-N with self-feedback: sample N answers per prompt, keep the one the aligned model prefers.

    python flows/best_of_n.py --reward-model runs/shapes/iter-1/checkpoints/step-40      # shapes world
    python flows/best_of_n.py --reward-model CKPT --reference shapes:policy --n 16 prompts.per_iteration=50
    python flows/best_of_n.py --config configs/llava15-7b.yaml --reward-model openbmb/RLAIF-V-7B \\
        --reference liuhaotian/llava-v1.5-7b --method reward

The candidates come from the configured policy (`models.policy`, any backend) with the configured
sampling settings (`sampling.*`, n replaced by `--n`); the prompts from `prompts.*` (slice
`--iteration`). Scores (method.md §8): `reward` = the length-normalised DPO implicit reward
β/T Σ (log πθ − log π_ref) of the reward model (the aligned checkpoint; a LoRA adapter folder
works, with `--base-model` or its adapter config's base) relative to `--reference` (the model it
was trained from; default: the configured policy); `reward_sum` its un-normalised sum; the
baselines `policy_likelihood` / `reference_likelihood` (mean token log-prob of one model). All four
are computed and stored; `--method` picks the one that selects. Written to the run store under
`best-of-n/<tag>/`: prompts, candidates, scores and best (parquet). Three cached Prefect tasks:
sample, score, write.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from prefect import flow, task
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python flows/best_of_n.py` from a checkout

import rlaifv_core.chat as chat_core  # noqa: E402
import rlaifv_core.prompts as prompts_core  # noqa: E402
import rlaifv_core.rewards as rewards  # noqa: E402
import rlaifv_core.sampling as sampling_core  # noqa: E402
from rlaifv_core.config import ModelSpec, PromptsConfig, RunConfig, SamplingConfig, StoreConfig  # noqa: E402
from rlaifv_core.roles import folder_fingerprint, model_fingerprint, open_model, resolve_model_path  # noqa: E402
from rlaifv_core.store import ArtifactRef  # noqa: E402
from tasks.common import result_storage_for, stage_cache, store_of  # noqa: E402

METHODS = ("reward", "reward_sum", "policy_likelihood", "reference_likelihood")


class BestOfNResult(BaseModel):
    prompts: ArtifactRef
    candidates: ArtifactRef
    scores: ArtifactRef
    best: ArtifactRef
    counts: dict


def path_fingerprint(name: str, base_model: str | None = None) -> str:
    """Identity of a reward/reference model given by path, hub id or shapes: name (cache keys)."""
    local = Path(resolve_model_path(name)) if name.startswith("shapes:") else Path(name)
    ident = folder_fingerprint(local) if local.is_dir() else f"hf:{name}"
    if base_model is not None or (local.is_dir() and chat_core.is_lora_adapter(local)):
        ident += "|" + path_fingerprint(chat_core.adapter_base(local, base_model))
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


@task(name="best-of-n-sample", cache_policy=stage_cache("rlaifv_core.sampling", "rlaifv_core.prompts", "rlaifv_core.backends.hf"), persist_result=True,
      retries=2, retry_delay_seconds=5)
def sample_task(prompts_config: PromptsConfig, iteration: int, seed: int, policy: ModelSpec, policy_fingerprint: str,
                sampling: SamplingConfig, store: StoreConfig, folder: str) -> tuple[ArtifactRef, ArtifactRef]:
    """The prompt slice and N candidates per prompt from the policy."""
    run_store = store_of(store)
    frame, _ = prompts_core.load_prompts(prompts_config, iteration=iteration, seed=seed)
    prompts_ref = run_store.write_table(f"{folder}/prompts.parquet", frame, schema="prompts")
    candidates = sampling_core.sample_candidates(open_model(policy), frame, sampling)
    candidates["policy_id"] = policy_fingerprint
    return prompts_ref, run_store.write_table(f"{folder}/candidates.parquet", candidates, schema="candidates")


@task(name="best-of-n-score", cache_policy=stage_cache("rlaifv_core.rewards", "rlaifv_core.chat", "rlaifv_core.backends.hf"), persist_result=True,
      retries=2, retry_delay_seconds=5)
def score_task(prompts_ref: ArtifactRef, candidates_ref: ArtifactRef, reward_model: str, reward_fingerprint: str,
               reference: str, reference_fingerprint: str, base_model: str | None, beta: float, device: str,
               store: StoreConfig, folder: str) -> ArtifactRef:
    """Per-token log-probs of every candidate under the reward model and the reference → all scores."""
    from rlaifv_core.images import decode_image

    run_store = store_of(store)
    prompts = run_store.read_table(prompts_ref).set_index("prompt_id")
    candidates = run_store.read_table(candidates_ref)
    visual = {pid: decode_image({"prompt_id": pid, **row}) for pid, row in prompts.to_dict("index").items()}
    flat_prompts = [visual[pid] for pid in candidates["prompt_id"]]
    answers = candidates["answer"].tolist()
    logps = {}
    for role, name, base in (("policy", reward_model, base_model), ("reference", reference, None)):
        backend = chat_core.open_backend(name, base_model=base, device=device)
        logps[role] = rewards.token_logprobs(backend, flat_prompts, answers)
        del backend  # one model in memory at a time
    scores = candidates.copy()
    scores["reward"] = rewards.reward_from_logprobs(logps["policy"], logps["reference"], beta=beta)
    scores["reward_sum"] = rewards.reward_from_logprobs(logps["policy"], logps["reference"], beta=beta, normalise=False)
    scores["policy_likelihood"] = rewards.likelihood_from_logprobs(logps["policy"])
    scores["reference_likelihood"] = rewards.likelihood_from_logprobs(logps["reference"])
    scores["tokens"] = [len(row) for row in logps["policy"]]
    scores["reward_model_id"] = reward_fingerprint
    scores["reference_id"] = reference_fingerprint
    return run_store.write_table(f"{folder}/scores.parquet", scores, schema="best_of_n_scores")


@task(name="best-of-n-write", cache_policy=stage_cache("rlaifv_core.rewards"), persist_result=True)
def write_task(prompts_ref: ArtifactRef, scores_ref: ArtifactRef, method: str, store: StoreConfig,
               folder: str) -> tuple[ArtifactRef, dict]:
    """The best candidate of each prompt under `method` → best.parquet (+ exact CHAIR in the shapes world)."""
    import pandas as pd

    run_store = store_of(store)
    prompts = run_store.read_table(prompts_ref)
    scores = run_store.read_table(scores_ref).sort_values(["prompt_id", "sample_idx"], kind="stable")
    groups = [group for _, group in scores.groupby("prompt_id", sort=False)]
    chosen = rewards.best_of_n([g["answer"].tolist() for g in groups], [g[method].tolist() for g in groups])
    best = pd.DataFrame([g.iloc[j] for g, j in zip(groups, chosen)]).reset_index(drop=True)
    best["n"] = [len(g) for g in groups]
    best["method"] = method
    best["score"] = best[method]
    meta = prompts[["prompt_id", "question", "image_path", "truth"]]
    best = meta.merge(best, on="prompt_id", how="inner")
    counts: dict = {"prompts": len(best), "candidates": len(scores), "method": method}
    if best["truth"].notna().all() and len(best):
        from rlaifv_core.evals.shapes import chair

        truth = {pid: {tuple(o.split(" ", 1)) for o in json.loads(t)} for pid, t in zip(prompts["prompt_id"], prompts["truth"])}
        first = scores[scores["sample_idx"] == 0]
        counts["chair_first_sample"] = chair([truth[p] for p in first["prompt_id"]], first["answer"].tolist())
        counts["chair_best"] = chair([truth[p] for p in best["prompt_id"]], best["answer"].tolist())
    ref = run_store.write_table(f"{folder}/best.parquet", best, schema="best_of_n")
    return ref, counts


@flow(name="best-of-n", log_prints=True)
def best_of_n_flow(config: RunConfig = RunConfig(), reward_model: str = "shapes:policy", reference: str | None = None,
                   base_model: str | None = None, n: int | None = None, method: str = "reward",
                   beta: float | None = None, iteration: int = 1) -> BestOfNResult:
    """Sample N candidates per prompt from the policy, score them with the reward model, keep the best."""
    if method not in METHODS:
        raise ValueError(f"method {method!r}: one of {', '.join(METHODS)}")
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
    prompts_ref, candidates_ref = sample_task.with_options(**storage)(
        config.prompts, iteration, config.iteration.seed, config.models.policy, policy_fp, sampling, config.store, folder)
    score_folder = f"{folder}/scored-{hashlib.sha256(f'{reward_fp}|{reference_fp}|{beta}'.encode()).hexdigest()[:10]}"
    scores_ref = score_task.with_options(**storage)(
        prompts_ref, candidates_ref, reward_model, reward_fp, reference, reference_fp, base_model, beta,
        config.models.policy.device, config.store, score_folder)
    best_ref, counts = write_task.with_options(**storage)(prompts_ref, scores_ref, method, config.store,
                                                          f"{score_folder}/{method}")
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
    main()
