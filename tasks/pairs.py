"""Task: scored candidates → preference pairs (`pairs.parquet`, RLAIF-V-Dataset schema + provenance)."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from rlaifv_core.config import PairsConfig, StoreConfig
from rlaifv_core.store import ArtifactRef

from .common import artifact_key, counts_table, stage_cache, stage_hook, store_of


@task(name="pairs", cache_policy=stage_cache("rlaifv_core.feedback.pairs", plugins=True), persist_result=True)
def assemble_pairs(prompts_ref: ArtifactRef, candidates_ref: ArtifactRef, claims_ref: ArtifactRef,
                   verdicts_ref: ArtifactRef, pairs: PairsConfig, policy_id: str, labeler_id: str, store: StoreConfig,
                   out_path: str, corrections_ref: ArtifactRef | None = None) -> tuple[ArtifactRef, dict]:
    stage_hook("pairs", out_path)
    import rlaifv_core.feedback.pairs as core

    run_store = store_of(store)
    keys = ["prompt_id", "sample_idx"]
    scored = (run_store.read_table(candidates_ref)
              .merge(run_store.read_table(claims_ref), on=keys, validate="one_to_one")
              .merge(run_store.read_table(verdicts_ref), on=keys, validate="one_to_one"))
    if corrections_ref is not None:  # builder resample: each answer's correction, where one was found
        scored = scored.merge(run_store.read_table(corrections_ref), on=keys, how="left", validate="one_to_one")
    frame, counts = core.build_pairs(scored, run_store.read_table(prompts_ref), pairs,
                                     policy_id=policy_id, labeler_id=labeler_id)
    ref = run_store.write_table(out_path, frame, schema="pairs")
    counts_table(artifact_key(store.run_name, out_path, "counts"), "pairs", counts)
    create_markdown_artifact(key=artifact_key(store.run_name, out_path, "examples"),
                             markdown=example_pairs_markdown(frame), description="example pairs")
    return ref, counts


def example_pairs_markdown(frame, limit: int = 4) -> str:
    lines = ["| question | chosen | rejected | rejected claims |", "|---|---|---|---|"]
    for row in frame.head(limit).itertuples():
        import json

        verdicts = json.loads(row.rejected_verdicts)
        wrong = [c for c, v in zip(row.rejected_claims, verdicts) if not v["accepted"]]
        lines.append(f"| {row.question} | {row.chosen} | {row.rejected} | {'; '.join(wrong) or '—'} |")
    return "\n".join(lines) if len(frame) else "no pairs"
