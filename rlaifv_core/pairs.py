"""Pair assembly: scored candidates → preference pairs in the public RLAIF-V-Dataset schema.

    from rlaifv_core.pairs import build_pairs
    pairs, counts = build_pairs(scored, prompts, config.pairs, policy_id="...", labeler_id="...")

`scored` has one row per candidate answer (prompt_id, sample_idx, answer, claims, questions,
accepted, p_yes, p_no, score, n_claims); `prompts` one row per prompt (prompt_id, image,
question, ...). Builders:

- `paper` (the default for real models, method.md §4): all pairs of one prompt's answers with
  score gap ≥ min_gap, the higher score chosen; identical texts dropped; at most `per_prompt`
  pairs per (image, question), drawn with a seed; then the length-balance filter.
- `best_of_n`: the top-scored answer ≻ the lowest-scored one, one pair per prompt (a control: train
  it with `dpo.loss_type=[sft]` for best-of-N SFT).
- `minimal_edit_anchor`: for each answer with rejected claims, chosen = the same answer with
  those claims removed; plus an anchor per prompt built from the most complete fully accepted
  answer A, against the "say less" shortcut that minimal edits alone teach (shared/docs/facts.md).
  `anchor`: `omission_swap` (default) A ≻ A missing one of its objects and naming, in place of
  another, an object the labeler rejected in a sibling answer — the rejected side both omits a true
  object and names a false one, so the pair rewards completeness *and* correctness; `omission`
  A ≻ A minus one object (both sides equally correct: it rewards completeness only); `swap` A ≻ A
  with one object replaced (same length: correctness only). Also length-balanced.

Every decision is counted: the returned `counts` say how many pairs were considered and why each
dropped one was dropped. Answers whose splitting failed, and empty answers (an empty text would
otherwise win every pair as "no claim, no hallucination"), are never a side of a pair
(`skipped_split_failure`, `skipped_empty_answer`).
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections import Counter
from typing import Sequence

import pandas as pd

from .seeds import mix_seed

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
    """The original's length-bias control (method.md §4 step 7), without its divide-by-zero:
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


# -- minimal edits ------------------------------------------------------------------------------------
_LIST_SENTENCE = re.compile(r"^(?P<lead>(?:yes|no)\s*,\s*)?(?P<head>there (?:is|are))\s+(?P<items>.+?)\s*(?P<end>[.!]?)$",
                            re.IGNORECASE)


def _split_items(items: str) -> list[str]:
    parts = re.split(r"\s*,\s*|\s+and\s+", items.strip())
    return [p for p in (x.strip() for x in parts) if p]


def _join_items(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return f"{' , '.join(items[:-1])} and {items[-1]}"


def _relist(match: re.Match, items: list[str]) -> str:
    """The list sentence `match` with its items replaced by `items`."""
    return f"{match.group('lead') or ''}{match.group('head')} {_join_items(items)} {match.group('end') or '.'}".strip()


def _claim_item(claim: str) -> str:
    match = _LIST_SENTENCE.match(claim.strip())
    return match.group("items").strip() if match else claim.strip()


def remove_claims(answer: str, claims_to_remove: Sequence[str]) -> str | None:
    """The answer with the given claims removed, edited minimally: items of a "there is A, B and C"
    list are dropped from the list; other sentences are dropped when they state a removed claim.
    Returns None when nothing would be left or a claim cannot be located (no pair is made then)."""
    remove = {_claim_item(c).lower() for c in claims_to_remove}
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", answer.strip()) if s]
    kept_sentences, found = [], set()
    for sentence in sentences:
        match = _LIST_SENTENCE.match(sentence)
        if match:
            items = _split_items(match.group("items"))
            left = [i for i in items if i.lower() not in remove]
            found |= {i.lower() for i in items} & remove
            if left:
                kept_sentences.append(_relist(match, left))
            continue
        core = sentence.rstrip(" .!?").lower()
        if core in remove:
            found.add(core)
            continue
        kept_sentences.append(sentence)
    if found != remove or not kept_sentences:
        return None
    return " ".join(kept_sentences)


def swap_claim(answer: str, old_claim: str, new_claim: str) -> str | None:
    """The answer with the list item of `old_claim` replaced, in place, by that of `new_claim`
    ("there is A , B and C" → "there is A , X and C"). None when `old_claim` is not a list item."""
    old, new = _claim_item(old_claim), _claim_item(new_claim)
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", answer.strip()) if s]
    for n, sentence in enumerate(sentences):
        match = _LIST_SENTENCE.match(sentence)
        items = _split_items(match.group("items")) if match else []
        lowered = [i.lower() for i in items]
        if old.lower() in lowered and new.lower() not in lowered:
            items[lowered.index(old.lower())] = new
            sentences[n] = _relist(match, items)
            return " ".join(sentences)
    return None


# -- assembly -----------------------------------------------------------------------------------------
def build_pairs(scored: pd.DataFrame, prompts: pd.DataFrame, config, *, policy_id: str, labeler_id: str,
                ds_name: str = "rlaifv-flows") -> tuple[pd.DataFrame, dict]:
    counts: Counter = Counter({"prompts": 0, "skipped_split_failure": 0, "skipped_empty_answer": 0})
    prompts = prompts.set_index("prompt_id", drop=False)
    rows: list[dict] = []
    for prompt_id, group in scored.groupby("prompt_id", sort=True):
        rng = random.Random(mix_seed(config.seed, int.from_bytes(str(prompt_id).encode()[:8].ljust(8, b"\0"), "little")))
        counts["prompts"] += 1
        usable = group[~group["split_failed"].fillna(False).astype(bool)] if "split_failed" in group else group
        counts["skipped_split_failure"] += len(group) - len(usable)
        said = usable[usable["answer"].fillna("").astype(str).str.strip() != ""]  # "" is never a side of a pair
        counts["skipped_empty_answer"] += len(usable) - len(said)
        usable = said
        if config.builder == "paper":
            made = _paper_pairs(usable, config, rng, counts)
        elif config.builder == "best_of_n":
            made = _best_of_n_pair(usable, counts)
        else:
            made = _minimal_edit_pairs(usable, config, rng, counts)
        for kind, chosen, rejected in made:
            rows.append(_pair_row(prompts.loc[prompt_id], kind, chosen, rejected, policy_id, labeler_id, ds_name))
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=PAIR_COLUMNS + PROVENANCE_COLUMNS), dict(counts)
    counts["before_length_balance"] = len(frame)
    if config.length_balance:
        keep, ratio = length_balance([len(c.split()) for c in frame["chosen"]], [len(r.split()) for r in frame["rejected"]])
        counts["dropped_length_balance"] = len(frame) - sum(keep)
        counts["length_balance_ratio"] = ratio
        frame = frame[keep].reset_index(drop=True)
    counts["pairs"] = len(frame)
    frame["idx"] = [f"{row.prompt_id}-{i}" for i, row in enumerate(frame.itertuples())]
    return frame, dict(counts)


def _paper_pairs(group: pd.DataFrame, config, rng: random.Random, counts: Counter):
    candidates = candidate_pairs(group, config.min_gap)
    counts["candidate_pairs"] += len(candidates)
    distinct = [(c, r) for c, r in candidates if group.at[c, "answer"].strip() != group.at[r, "answer"].strip()]
    counts["dropped_identical"] += len(candidates) - len(distinct)
    counts["dropped_per_prompt_cap"] += max(0, len(distinct) - config.per_prompt)
    if len(distinct) > config.per_prompt:
        distinct = rng.sample(distinct, config.per_prompt)
    return [("paper", _side(group.loc[c]), _side(group.loc[r])) for c, r in distinct]


def _best_of_n_pair(group: pd.DataFrame, counts: Counter):
    """The control for "what does the preference loss add": the top-scored answer (most claims on
    ties) as chosen, the lowest-scored as rejected. Trained with loss_type [sft], only chosen counts."""
    if group.empty:
        return []
    ranked = group.sort_values(["score", "n_claims", "sample_idx"], ascending=[False, False, True])
    best, worst = ranked.index[0], ranked.index[-1]
    if group.at[best, "answer"].strip() == group.at[worst, "answer"].strip():
        counts["dropped_identical"] += 1
        return []
    return [("best_of_n", _side(group.loc[best]), _side(group.loc[worst]))]


def _minimal_edit_pairs(group: pd.DataFrame, config, rng: random.Random, counts: Counter):
    made = []
    flawed = [i for i in group.index if group.at[i, "n_claims"] > 0 and group.at[i, "score"] < 0]
    seen_texts = set()
    edits = []
    for i in flawed:
        answer = group.at[i, "answer"]
        rejected_claims = [c for c, ok in zip(group.at[i, "claims"], group.at[i, "accepted"]) if not ok]
        edited = remove_claims(answer, rejected_claims)
        if edited is None:
            counts["dropped_edit_impossible"] += 1
            continue
        if answer.strip() in seen_texts:
            counts["dropped_duplicate_answer"] += 1
            continue
        seen_texts.add(answer.strip())
        chosen = _side(group.loc[i], text=edited, drop=rejected_claims)
        edits.append(("minimal_edit", chosen, _side(group.loc[i])))
    counts["minimal_edit_candidates"] += len(edits)
    counts["dropped_per_prompt_cap"] += max(0, len(edits) - config.per_prompt)
    if len(edits) > config.per_prompt:
        edits = rng.sample(edits, config.per_prompt)
    made.extend(edits)
    clean = [i for i in group.index if group.at[i, "n_claims"] >= 2 and group.at[i, "score"] == 0]
    if not clean or config.anchors_per_prompt <= 0:
        return made
    most = max(group.at[i, "n_claims"] for i in clean)
    best = sorted({group.at[i, "answer"].strip(): i for i in clean if group.at[i, "n_claims"] == most}.values())
    for i in rng.sample(best, min(config.anchors_per_prompt, len(best))):
        if config.anchor == "omission":
            anchor = _omission_anchor(group, i, rng, counts)
        else:
            anchor = _swap_anchor(group, i, rng, counts, omit=config.anchor == "omission_swap")
        if anchor is not None:
            made.append(anchor)
    return made


def _omission_anchor(group: pd.DataFrame, i, rng: random.Random, counts: Counter):
    """The most complete clean answer ≻ itself minus one (accepted) claim."""
    dropped = rng.choice(list(group.at[i, "claims"]))
    shorter = remove_claims(group.at[i, "answer"], [dropped])
    if shorter is None:
        counts["dropped_edit_impossible"] += 1
        return None
    counts["omission_anchors"] += 1
    return "omission_anchor", _side(group.loc[i]), _side(group.loc[i], text=shorter, drop=[dropped])


def _swap_anchor(group: pd.DataFrame, i, rng: random.Random, counts: Counter, omit: bool = False):
    """The most complete clean answer A ≻ A with one of its objects replaced by an object the labeler
    rejected in another answer to this prompt (`swap`: same length, so it rewards the true object
    over the false one without rewarding brevity), and with `omit` also one other true object
    dropped (`omission_swap`: the rejected side both misses a true object and names a false one, so
    the pair rewards naming true objects, as the omission anchor does, and not naming false ones)."""
    claims = list(group.at[i, "claims"])
    own = {_claim_item(c).lower() for c in claims}
    false_objects = sorted({(c, q, float(p)) for j in group.index
                            for c, q, ok, p in zip(group.at[j, "claims"], group.at[j, "questions"],
                                                   group.at[j, "accepted"], group.at[j, "p_yes"])
                            if not ok and _LIST_SENTENCE.match(c.strip()) and _claim_item(c).lower() not in own})
    if not false_objects:
        counts["no_swap_anchor_without_rejected_object"] += 1
        return None
    swap_at = rng.randrange(len(claims))
    false_claim, false_question, false_p_yes = rng.choice(false_objects)
    text = swap_claim(group.at[i, "answer"], claims[swap_at], false_claim)
    dropped = [rng.choice([c for n, c in enumerate(claims) if n != swap_at])] if omit else []
    if text is not None and dropped:
        text = remove_claims(text, dropped)
    if text is None:
        counts["dropped_edit_impossible"] += 1
        return None
    rejected = _side(group.loc[i], text=text)
    rejected["claims"][swap_at] = false_claim
    rejected["questions"][swap_at] = false_question
    rejected["verdicts"][swap_at] = {"accepted": False, "p_yes": false_p_yes}
    keep = [c not in dropped for c in claims]
    for field in ("claims", "questions", "verdicts"):
        rejected[field] = [x for x, k in zip(rejected[field], keep) if k]
    rejected["score"] = -1
    kind = "omission_swap_anchor" if omit else "swap_anchor"
    counts[kind + "s"] += 1
    return kind, _side(group.loc[i]), rejected


PROVENANCE_COLUMNS = ["prompt_id", "pair_kind", "chosen_claims", "rejected_claims", "chosen_questions",
                      "rejected_questions", "chosen_verdicts", "rejected_verdicts", "chosen_score", "rejected_score",
                      "policy_id", "labeler_id"]


def _side(row: pd.Series, text: str | None = None, drop: Sequence[str] = ()) -> dict:
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
    }
