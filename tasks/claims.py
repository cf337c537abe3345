"""Task: one shard of candidates → atomic claims and their yes/no questions, and the shard's counts.

The generate flow runs one task per sampling shard (`shards/claims-NNNN.parquet`, each cached on its
own, so a failed splitter endpoint redoes only the unfinished shards) and merges them in shard order
into `claims.parquet`. A claim's split and question depend on its answer alone (seeds from content,
rlaifv_core.feedback.claims), so the shards give the claims one task over all candidates gives."""

from __future__ import annotations

from collections import Counter

from prefect import task

from rlaifv_core.config import ClaimsConfig, ModelsConfig, StoreConfig
from rlaifv_core.models import open_model
from rlaifv_core.models.served import serving
from rlaifv_core.store import ArtifactRef

from .common import Progress, artifact_key, counts_table, holds_models, stage_cache, stage_hook, store_of


def _role(spec):
    return spec if spec.backend == "rules" else open_model(spec)


#: the claim splitter and the question rewriter with everything they run
CLAIM_MODULES = tuple(f"rlaifv_core.feedback.{m}" for m in ("claims", "claim_rules", "grammar", "questions",
                                                             "llm_lists", "text_roles")) + ("rlaifv_core.backends.lengths",)


@task(name="claims", cache_policy=stage_cache(*CLAIM_MODULES),
      persist_result=True, retries=2, retry_delay_seconds=5)
@holds_models("claims")
def split_and_rewrite(candidates_ref: ArtifactRef, prompts_ref: ArtifactRef, models: ModelsConfig, claims: ClaimsConfig,
                      splitter_fingerprint: str, rewriter_fingerprint: str, seed: int, store: StoreConfig,
                      out_path: str) -> tuple[ArtifactRef, dict]:
    stage_hook("claims", out_path)
    import pandas as pd

    import rlaifv_core.feedback.claims as claims_core
    import rlaifv_core.feedback.questions as questions_core

    run_store = store_of(store)
    candidates = run_store.read_table(candidates_ref)
    questions_by_prompt = run_store.read_table(prompts_ref).set_index("prompt_id")["question"]
    pairs = [(questions_by_prompt[p], a) for p, a in zip(candidates["prompt_id"], candidates["answer"])]
    progress = Progress(f"claims {out_path.rsplit('/', 1)[-1]}")
    with serving(models.splitter) as (splitter, _):
        split = claims_core.split_claims(pairs, _role(splitter), claims, seed=seed)
    progress(len(pairs) // 2, len(pairs))
    rewritten = questions_core.rewrite_questions([r.claims for r in split], _role(models.rewriter), claims, seed=seed)
    progress(len(pairs), len(pairs))
    frame = pd.DataFrame({
        "prompt_id": candidates["prompt_id"],
        "sample_idx": candidates["sample_idx"],
        "claims": [r.claims for r in split],
        "questions": [q.questions for q in rewritten],
        "split_failed": [r.failure is not None for r in split],
        "split_failure": [r.failure for r in split],
        "question_fallback": [q.fallback_reason for q in rewritten],
    })
    counts = Counter(answers=len(frame), claims=int(frame["claims"].map(len).sum()),
                     answers_without_claims=int((frame["claims"].map(len) == 0).sum()),
                     split_failures=int(frame["split_failed"].sum()),
                     question_fallbacks=int(frame["question_fallback"].notna().sum()),
                     skipped_prompt_too_long=sum(str(r.failure).startswith("prompt_too_long") for r in split)
                     + sum(str(q.fallback_reason).startswith("prompt_too_long") for q in rewritten))
    ref = run_store.write_table(out_path, frame, schema="claims")
    counts_table(artifact_key(store.run_name, out_path, "counts"), "claims", dict(counts))
    return ref, dict(counts)
