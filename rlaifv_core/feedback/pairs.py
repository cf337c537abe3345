"""Pair assembly: scored candidates → preference pairs in the public RLAIF-V-Dataset schema.

    from rlaifv_core.feedback.pairs import build_pairs
    pairs, counts = build_pairs(scored, prompts, config.pairs, policy_id="...", labeler_id="...")

`scored` has one row per candidate answer (prompt_id, sample_idx, answer, claims, questions,
accepted, p_yes, p_no, score, n_claims); `prompts` one row per prompt (prompt_id, image,
question, ...). Builders (`pairs.builder`), each given one prompt's usable answers:

- `paper` (the default, docs/method.md §6): all pairs of one prompt's answers with score gap
  ≥ min_gap, the higher score chosen; identical texts dropped; at most `per_prompt` pairs per
  (image, question), drawn with a seed; then the length-balance filter.
- `best_of_n`: the top-scored answer ≻ the lowest-scored one, one pair per prompt (a control: train
  it with `dpo.loss_type=[sft]` for best-of-N SFT).
- `resample`: on-policy corrections (`feedback/resample.py`, the generate flow's `resample` stage):
  the answer's prefix up to its first rejected claim + the policy's best continuation ≻ the answer;
  `chosen_prefix` records the prefix, `resample_prompts_without_correction` counts prompts with none;
  with `resample_failed_continuations` also correction ≻ the policy's most likely still-rejected
  continuation of the same prefix (kind `resample_continuation`).
- any builder a plug-in registers in `plugins.pair_builders`, called as
  `build(group, config, rng, counts) -> [(kind, chosen_side, rejected_side)]` with sides from
  `pair_side`. The shapes world registers `minimal_edit_anchor`, which edits its list grammar
  ("there is A , B and C") and so makes pairs only from answers in that grammar
  (`rlaifv_core/shapes/pair_builders.py`).

Every decision is counted: the returned `counts` say how many pairs were considered and why each
dropped one was dropped. Answers whose splitting failed, and empty answers (an empty text would
otherwise win every pair as "no claim, no hallucination"), are never a side of a pair
(`skipped_split_failure`, `skipped_empty_answer`), nor are answers the labeler could not judge (a
claim question longer than its context: `skipped_prompt_too_long`). An answer that states nothing checkable ("I
cannot tell what is in this image.": no claims, score 0) is scored and may be the rejected side,
but a pair a builder makes with it as the chosen side is dropped (`skipped_zero_claim_chosen`):
saying nothing must never be taught as better than describing the image.

Degenerate feedback is never quiet: 0 pairs, or a labeler that accepts (or rejects) nearly every
claim (`DEGENERATE_SHARE`), puts a line in `counts["warnings"]` (with the counts) and logs it as a
warning; the run summary repeats it.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
from collections import Counter
from typing import Sequence

import pandas as pd

from .. import plugins
from ..seeds import mix_seed

log = logging.getLogger(__name__)

#: a labeler accepting (or rejecting) at least this share of ≥ MIN_VERDICTS claims is degenerate
DEGENERATE_SHARE = 0.98
MIN_VERDICTS = 20

PAIR_COLUMNS = ["ds_name", "image", "question", "chosen", "rejected", "origin_dataset", "origin_split", "idx",
                "image_path"]


# -- the paper's rule --------------------------------------------------------------------------------
def candidate_pairs(group: pd.DataFrame, min_gap: int) -> list[tuple[int, int]]:
    """(chosen_row, rejected_row) index pairs of one prompt's answers with |score gap| ≥ min_gap."""
    pairs = []
    for a, b in itertools.combinations(group.index, 2):
        gap = group.at[a, "score"] - group.at[b, "score"]
        if abs(gap) >= min_gap:
            pairs.append((a, b) if gap > 0 else (b, a))
    return pairs


def length_balance(chosen_words: Sequence[int], rejected_words: Sequence[int]) -> tuple[list[bool], float]:
    """The original's length-bias control (docs/method.md §6), without its divide-by-zero:
    for r in 0.00…0.98 keep pairs with (len_rej − len_ch)/len_rej ≤ r; pick the r whose kept set has
    the smallest |mean len_ch − mean len_rej| / mean len_rej (first r on ties)."""
    best_keep, best_value, best_r = [True] * len(chosen_words), float("inf"), 1.0
    if not chosen_words:
        return best_keep, best_r
    for step in range(50):
        r = step * 0.02
        keep = [(rj - ch) / max(rj, 1) <= r + 1e-12 for ch, rj in zip(chosen_words, rejected_words)]
        kept = [i for i, k in enumerate(keep) if k]
        if not kept:
            continue
        mean_ch = sum(chosen_words[i] for i in kept) / len(kept)
        mean_rj = sum(rejected_words[i] for i in kept) / len(kept)
        value = abs(mean_ch - mean_rj) / max(mean_rj, 1e-9)
        if value < best_value - 1e-12:
            best_keep, best_value, best_r = keep, value, r
    return best_keep, best_r


# -- assembly -----------------------------------------------------------------------------------------
def build_pairs(scored: pd.DataFrame, prompts: pd.DataFrame, config, *, policy_id: str, labeler_id: str,
                ds_name: str = "rlaifv-flows") -> tuple[pd.DataFrame, dict]:
    builder = pair_builder(config.builder)
    counts: Counter = Counter({"prompts": 0, "skipped_split_failure": 0, "skipped_empty_answer": 0,
                               "skipped_zero_claim_chosen": 0})
    prompts = prompts.set_index("prompt_id", drop=False)
    rows: list[dict] = []
    for prompt_id, group in scored.groupby("prompt_id", sort=True):
        rng = random.Random(mix_seed(config.seed, int.from_bytes(str(prompt_id).encode()[:8].ljust(8, b"\0"), "little")))
        counts["prompts"] += 1
        usable = group[~group["split_failed"].fillna(False).astype(bool)] if "split_failed" in group else group
        counts["skipped_split_failure"] += len(group) - len(usable)
        if "skipped" in usable:  # the labeler could not judge it (a claim question longer than its context)
            judged = usable[usable["skipped"].isna()]
            counts["skipped_prompt_too_long"] += len(usable) - len(judged)
            usable = judged
        said = usable[usable["answer"].fillna("").astype(str).str.strip() != ""]  # "" is never a side of a pair
        counts["skipped_empty_answer"] += len(usable) - len(said)
        usable = said
        made = builder(usable, config, rng, counts)
        for kind, chosen, rejected in made:
            if not chosen["claims"]:  # every builder, plug-ins included: "says nothing" never wins
                counts["skipped_zero_claim_chosen"] += 1
                continue
            rows.append(_pair_row(prompts.loc[prompt_id], kind, chosen, rejected, policy_id, labeler_id, ds_name))
    frame = pd.DataFrame(rows)
    verdicts = [bool(a) for accepted in scored.get("accepted", []) for a in (accepted if accepted is not None else [])]
    counts["verdicts"], counts["verdicts_accepted"] = len(verdicts), sum(verdicts)
    if frame.empty:
        counts["pairs"] = 0
        counts["warnings"] = feedback_warnings(counts)
        return pd.DataFrame(columns=PAIR_COLUMNS + PROVENANCE_COLUMNS), dict(counts)
    counts["before_length_balance"] = len(frame)
    if config.length_balance:
        keep, ratio = length_balance([len(c.split()) for c in frame["chosen"]], [len(r.split()) for r in frame["rejected"]])
        counts["dropped_length_balance"] = len(frame) - sum(keep)
        counts["length_balance_ratio"] = ratio
        frame = frame[keep].reset_index(drop=True)
    counts["pairs"] = len(frame)
    counts["warnings"] = feedback_warnings(counts)
    frame["idx"] = [f"{row.prompt_id}-{i}" for i, row in enumerate(frame.itertuples())]
    counts.update(audit_pairs(frame))
    return frame, dict(counts)


def audit_pairs(frame: pd.DataFrame) -> dict[str, float]:
    """`audit_<name>` shares from the plug-in that knows the truth of the pairs' images (`pair_audits`,
    by `origin_dataset`); nothing where no plug-in does or the pairs come from several origins."""
    origins = set(frame["origin_dataset"])
    if len(origins) != 1 or (origin := origins.pop()) not in plugins.pair_audits:
        return {}
    return {f"audit_{name}": round(value, 4) for name, value in plugins.pair_audits.get(origin)(frame).items()}


def feedback_warnings(counts) -> list[str]:
    """Loud lines for degenerate feedback (0 pairs; a labeler accepting/rejecting nearly everything),
    each logged as a warning."""
    warnings = []
    total, accepted = counts.get("verdicts", 0), counts.get("verdicts_accepted", 0)
    if total >= MIN_VERDICTS and accepted >= DEGENERATE_SHARE * total:
        warnings.append(f"the labeler accepted {accepted} of {total} claims: it is not discriminating "
                        "(check its yes/no tokens and P(yes)+P(no))")
    if total >= MIN_VERDICTS and total - accepted >= DEGENERATE_SHARE * total:
        warnings.append(f"the labeler rejected {total - accepted} of {total} claims: it is not discriminating "
                        "(check its yes/no tokens and P(yes)+P(no))")
    if not counts.get("pairs"):
        warnings.append(f"0 preference pairs from {counts.get('prompts', 0)} prompts ({total} claim verdicts, "
                        f"{accepted} accepted): this iteration trains on nothing")
    for line in warnings:
        log.warning("pairs: %s", line)
    return warnings


def pair_builder(name: str):
    """The builder called `name`: `paper` and `best_of_n` here, others from the plug-in registry."""
    return _BUILT_IN[name] if name in _BUILT_IN else plugins.pair_builders.get(name)


def _paper_pairs(group: pd.DataFrame, config, rng: random.Random, counts: Counter):
    candidates = candidate_pairs(group, config.min_gap)
    counts["candidate_pairs"] += len(candidates)
    distinct = [(c, r) for c, r in candidates if group.at[c, "answer"].strip() != group.at[r, "answer"].strip()]
    counts["dropped_identical"] += len(candidates) - len(distinct)
    counts["dropped_per_prompt_cap"] += max(0, len(distinct) - config.per_prompt)
    if len(distinct) > config.per_prompt:
        distinct = rng.sample(distinct, config.per_prompt)
    return [("paper", pair_side(group.loc[c]), pair_side(group.loc[r])) for c, r in distinct]


def _best_of_n_pair(group: pd.DataFrame, config, rng: random.Random, counts: Counter):
    """The control for "what does the preference loss add": the top-scored answer (most claims on
    ties) as chosen, the lowest-scored as rejected. Trained with loss_type [sft], only chosen counts."""
    if group.empty:
        return []
    ranked = group.sort_values(["score", "n_claims", "sample_idx"], ascending=[False, False, True])
    best, worst = ranked.index[0], ranked.index[-1]
    if group.at[best, "answer"].strip() == group.at[worst, "answer"].strip():
        counts["dropped_identical"] += 1
        return []
    return [("best_of_n", pair_side(group.loc[best]), pair_side(group.loc[worst]))]


def _resample_pairs(group: pd.DataFrame, config, rng: random.Random, counts: Counter):
    """On-policy corrections (feedback/resample.py): prefix + the best continuation ≻ the original
    answer, per answer a correction was found for (at most per_prompt, drawn with the seed); with
    resample_failed_continuations each of those also ≻ its prefix's failed continuation (so up to
    2 × per_prompt pairs)."""
    fixed = list(group.index[group["correction"].notna()]) if "correction" in group else []
    if not fixed:
        counts["resample_prompts_without_correction"] += 1
        return []
    counts["dropped_per_prompt_cap"] += max(0, len(fixed) - config.per_prompt)
    if len(fixed) > config.per_prompt:
        fixed = sorted(rng.sample(fixed, config.per_prompt))
    made = []
    for i in fixed:
        row = group.loc[i]
        chosen = {**_resampled_side(row, "correction", row["correction"]), "prefix": row["prefix"]}
        made.append(("resample", chosen, pair_side(row)))
        if config.resample_failed_continuations and isinstance(row.get("failed_continuation"), str):
            made.append(("resample_continuation", chosen, _resampled_side(row, "failed", row["failed_continuation"])))
    return made


def _resampled_side(row: pd.Series, side: str, text: str) -> dict:
    """A continuation judged in the resample stage (columns `correction_*` or `failed_*`) as one side of a pair."""
    verdicts = [{"accepted": bool(a), "p_yes": float(p)} for a, p in zip(row[f"{side}_accepted"], row[f"{side}_p_yes"])]
    return {"text": text, "claims": list(row[f"{side}_claims"]), "questions": list(row[f"{side}_questions"]),
            "verdicts": verdicts, "score": -sum(1 for v in verdicts if not v["accepted"])}


_BUILT_IN = {"paper": _paper_pairs, "best_of_n": _best_of_n_pair, "resample": _resample_pairs}

PROVENANCE_COLUMNS = ["prompt_id", "pair_kind", "chosen_claims", "rejected_claims", "chosen_questions",
                      "rejected_questions", "chosen_verdicts", "rejected_verdicts", "chosen_score", "rejected_score",
                      "policy_id", "labeler_id"]


def pair_side(row: pd.Series, text: str | None = None, drop: Sequence[str] = ()) -> dict:
    """One side of a pair with its claim-level evidence (an edited side lists the kept claims)."""
    claims, questions = list(row["claims"]), list(row["questions"])
    accepted, p_yes = [bool(a) for a in row["accepted"]], [float(p) for p in row["p_yes"]]
    keep = [c not in set(drop) for c in claims]
    claims = [c for c, k in zip(claims, keep) if k]
    questions = [q for q, k in zip(questions, keep) if k]
    verdicts = [{"accepted": a, "p_yes": p} for a, p, k in zip(accepted, p_yes, keep) if k]
    score = -sum(1 for v in verdicts if not v["accepted"])
    return {"text": row["answer"] if text is None else text, "claims": claims, "questions": questions,
            "verdicts": verdicts, "score": score}


def _pair_row(prompt: pd.Series, kind: str, chosen: dict, rejected: dict, policy_id: str, labeler_id: str,
              ds_name: str) -> dict:
    origin_split = json.dumps({"generator": policy_id, "feedback": labeler_id, "type": prompt.get("task", "")})
    return {
        "ds_name": ds_name,
        "image": {"bytes": prompt["image"], "path": prompt.get("image_path") or None},
        "question": prompt["question"],
        "chosen": chosen["text"],
        "rejected": rejected["text"],
        "origin_dataset": prompt.get("origin_dataset", ds_name),
        "origin_split": origin_split,
        "idx": "",
        "image_path": prompt.get("image_path") or "",
        "prompt_id": prompt["prompt_id"],
        "pair_kind": kind,
        "chosen_claims": chosen["claims"],
        "rejected_claims": rejected["claims"],
        "chosen_questions": chosen["questions"],
        "rejected_questions": rejected["questions"],
        "chosen_verdicts": json.dumps(chosen["verdicts"]),
        "rejected_verdicts": json.dumps(rejected["verdicts"]),
        "chosen_score": chosen["score"],
        "rejected_score": rejected["score"],
        "policy_id": policy_id,
        "labeler_id": labeler_id,
        **({"chosen_prefix": chosen["prefix"]} if "prefix" in chosen else {}),  # resample: the kept prefix
    }
