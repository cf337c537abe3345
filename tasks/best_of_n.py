"""Tasks of the best-of-N flow (flows/best_of_n.py): sample N candidates, score them, keep the best."""

from __future__ import annotations

import hashlib
from pathlib import Path

from prefect import task

from rlaifv_core import plugins
from rlaifv_core.config import ModelSpec, PromptsConfig, SamplingConfig, StoreConfig
from rlaifv_core.fingerprints import folder_fingerprint
from rlaifv_core.models import adapter_base, is_lora_adapter, open_model, resolve_model_path
from rlaifv_core.store import ArtifactRef

from .common import holds_models, stage_cache, store_of


def path_fingerprint(name: str, base_model: str | None = None) -> str:
    """Identity of a reward/reference model given by path, hub id or shapes: name (cache keys)."""
    local = Path(resolve_model_path(name))
    ident = folder_fingerprint(local) if local.is_dir() else f"hf:{name}"
    if base_model is not None or (local.is_dir() and is_lora_adapter(local)):
        ident += "|" + path_fingerprint(adapter_base(local, base_model))
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


@task(name="best-of-n-sample",
      cache_policy=stage_cache("rlaifv_core.feedback.sampling", "rlaifv_core.feedback.prompts", "rlaifv_core.backends",
                               plugins=True),
      persist_result=True, retries=2, retry_delay_seconds=5)
@holds_models("best-of-n-sample")
def sample_task(prompts_config: PromptsConfig, iteration: int, seed: int, policy: ModelSpec, policy_fingerprint: str,
                sampling: SamplingConfig, store: StoreConfig, folder: str) -> tuple[ArtifactRef, ArtifactRef]:
    """The prompt slice and N candidates per prompt from the policy."""
    import rlaifv_core.feedback.prompts as prompts_core
    import rlaifv_core.feedback.sampling as sampling_core

    run_store = store_of(store)
    frame, _ = prompts_core.load_prompts(prompts_config, iteration=iteration, seed=seed)
    prompts_ref = run_store.write_table(f"{folder}/prompts.parquet", frame, schema="prompts")
    candidates = sampling_core.sample_candidates(open_model(policy), frame, sampling)
    candidates["policy_id"] = policy_fingerprint
    return prompts_ref, run_store.write_table(f"{folder}/candidates.parquet", candidates, schema="candidates")


@task(name="best-of-n-score",
      cache_policy=stage_cache("rlaifv_core.rewards", "rlaifv_core.models", "rlaifv_core.backends"),
      persist_result=True, retries=2, retry_delay_seconds=5)
@holds_models("best-of-n-score")
def score_task(prompts_ref: ArtifactRef, candidates_ref: ArtifactRef, reward_model: str, reward_fingerprint: str,
               reference: str, reference_fingerprint: str, base_model: str | None, beta: float, device: str,
               store: StoreConfig, folder: str) -> ArtifactRef:
    """Per-token log-probs of every candidate under the reward model and the reference → all scores."""
    import rlaifv_core.chat as chat_core
    import rlaifv_core.rewards as rewards
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


@task(name="best-of-n-write", cache_policy=stage_cache("rlaifv_core.rewards", plugins=True), persist_result=True)
def write_task(prompts_ref: ArtifactRef, scores_ref: ArtifactRef, method: str, store: StoreConfig,
               folder: str) -> tuple[ArtifactRef, dict]:
    """The best candidate of each prompt under `method` → best.parquet (+ exact CHAIR in the shapes world)."""
    import pandas as pd

    import rlaifv_core.rewards as rewards

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
    origins = set(prompts["origin_dataset"])
    if len(best) and best["truth"].notna().all() and len(origins) == 1 and (origin := origins.pop()) in plugins.truth_metrics:
        score = plugins.truth_metrics.get(origin)  # exact metrics where the prompt source knows the truth
        truth = dict(zip(prompts["prompt_id"], prompts["truth"]))
        first = scores[scores["sample_idx"] == 0]
        counts["chair_first_sample"] = score([truth[p] for p in first["prompt_id"]], first["answer"].tolist())
        counts["chair_best"] = score([truth[p] for p in best["prompt_id"]], best["answer"].tolist())
    ref = run_store.write_table(f"{folder}/best.parquet", best, schema="best_of_n")
    return ref, counts
