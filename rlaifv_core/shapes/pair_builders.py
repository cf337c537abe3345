"""The shapes world's pair builder `minimal_edit_anchor`, which edits its list grammar.

    pairs.builder: minimal_edit_anchor     # configs/shapes.yaml; registered by rlaifv_core.shapes.plugin
    from rlaifv_core.shapes.pair_builders import remove_claims, swap_claim
    remove_claims("there is a red circle , a blue square and a green star .", ["there is a green star"])
    # 'there is a red circle and a blue square .'

For each answer with rejected claims, chosen = the same answer with those claims removed; plus an
anchor per prompt built from the most complete fully accepted answer A, against the "say less"
shortcut that minimal edits alone teach (docs/method.md §6). `pairs.anchor`: `omission_swap`
(default) A ≻ A missing one of its objects and naming, in place of another, an object the labeler
rejected in a sibling answer — the rejected side both omits a true object and names a false one,
so the pair rewards completeness *and* correctness; `omission` A ≻ A minus one object (both sides
equally correct: it rewards completeness only); `swap` A ≻ A with one object replaced (same
length: correctness only).

The edits understand the shapes world's sentences — "there is A , B and C" lists and sentences
that state one claim whole. On free-form text they find nothing to edit, and every such answer is
counted as `dropped_edit_impossible`: this builder is for the shapes world only.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Sequence

import pandas as pd

from ..feedback.pairs import pair_side


# -- the list grammar ---------------------------------------------------------------------------------
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



# -- the builder ---------------------------------------------------------------------------------------
def minimal_edit_anchor_pairs(group: pd.DataFrame, config, rng: random.Random, counts: Counter):
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
        chosen = pair_side(group.loc[i], text=edited, drop=rejected_claims)
        edits.append(("minimal_edit", chosen, pair_side(group.loc[i])))
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
    return "omission_anchor", pair_side(group.loc[i]), pair_side(group.loc[i], text=shorter, drop=[dropped])


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
    rejected = pair_side(group.loc[i], text=text)
    rejected["claims"][swap_at] = false_claim
    rejected["questions"][swap_at] = false_question
    rejected["verdicts"][swap_at] = {"accepted": False, "p_yes": false_p_yes}
    keep = [c not in dropped for c in claims]
    for field in ("claims", "questions", "verdicts"):
        rejected[field] = [x for x, k in zip(rejected[field], keep) if k]
    rejected["score"] = -1
    kind = "omission_swap_anchor" if omit else "swap_anchor"
    counts[kind + "s"] += 1
    return kind, pair_side(group.loc[i]), rejected
