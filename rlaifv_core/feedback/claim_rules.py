"""Rule-based claim splitting: an answer → its atomic claims, with no model.

    from rlaifv_core.feedback.claim_rules import split_claims_rules
    split_claims_rules("there is a red circle , a blue square and a green triangle .")
    # ['there is a red circle', 'there is a blue square', 'there is a green triangle']

One claim per clause; a leading "yes ,"/"no ," and discourse markers ("Additionally,", "In the
image,") are dropped; "there is/are A , B and C" and "the image shows / I can see A and B" become
one existential claim per noun phrase (number agreement redone, a trailing place phrase shared);
"there is nothing" is no claim. Exact on the shapes world's language; the grammar helpers are in
`grammar.py`.
"""

from __future__ import annotations

from typing import Sequence

from .grammar import (BE_FORMS, DETERMINERS, FUNCTION_WORDS, MODALS, NUMBER, PLURAL_DETS, SINGULAR_DETS,
                      SUBJECT_PRONOUNS, Tok, find_predicate, lexicon, nlp, noun_like, render, tokens_of)

# --------------------------------------------------------------------------------------------
# rule-based splitter
# --------------------------------------------------------------------------------------------

_PUNCT_END = {".", "!", "?", ";", ":", ",", "…"}
_INTERJECTIONS = {"yes", "no", "yeah", "yep", "nope", "sure", "correct", "indeed", "okay", "ok", "well"}
_FRAME_NOUNS = {"image", "picture", "photo", "photograph", "scene", "illustration", "painting",
                "drawing", "frame", "foreground", "shot", "snapshot", "view"}
_DISCOURSE = [
    ("additionally",), ("also",), ("furthermore",), ("moreover",), ("overall",), ("however",),
    ("besides",), ("finally",), ("lastly",), ("then",), ("in", "addition"), ("in", "summary"),
    ("in", "conclusion"), ("in", "general"), ("all", "in", "all"), ("to", "summarize"),
]
_SHOW_VERBS = {"shows", "depicts", "features", "contains", "displays", "includes", "presents",
               "captures", "showcases", "portrays", "has", "show", "depict", "feature", "contain",
               "display", "include"}
_SEE_VERBS = {"see", "observe", "notice", "spot"}
_CLAUSE_JOINERS = {",", "and", "but", "while", "whereas", "yet"}
_NP_SEPARATORS = {",", "and", "or", "nor", "&"}
_PLACE_PREPS = {"in", "on", "at", "near", "under", "over", "behind", "beside", "next", "between",
                "among", "above", "below", "across", "along", "around", "against", "inside",
                "outside", "atop", "beneath", "underneath"}
_NOTHING = {"nothing", "none"}


def _strip_lead(toks: list[Tok]) -> list[Tok]:
    """Drop a leading yes/no, discourse markers and an "In the image," frame (repeatedly)."""
    changed = True
    while toks and changed:
        changed = False
        low = [t.lower for t in toks]
        if low[0] in _INTERJECTIONS and (len(low) == 1 or low[1] in {",", ".", "!", "-", "–", "—"}):
            toks = toks[2:] if len(toks) > 1 else []
            changed = True
            continue
        for phrase in _DISCOURSE:
            k = len(phrase)
            if tuple(low[:k]) == phrase and len(low) > k and low[k] == ",":
                toks, changed = toks[k + 1:], True
                break
        if changed:
            continue
        # "In the image," / "In this picture there is …"
        if len(low) > 3 and low[0] in ("in", "within", "on") and low[1] in ("the", "this", "that") \
                and low[2] in _FRAME_NOUNS and (low[3] == "," or low[3] == "there"):
            toks = toks[4:] if low[3] == "," else toks[3:]
            changed = True
    return toks


def _trim(toks: list[Tok]) -> list[Tok]:
    """Remove leading separators and trailing punctuation; clear the last whitespace."""
    toks = list(toks)
    while toks and (toks[0].text in _PUNCT_END or toks[0].lower in ("and", "but", "-", "–", "—")):
        toks.pop(0)
    while toks and toks[-1].text in _PUNCT_END:
        toks.pop()
    if toks:
        toks[-1] = Tok(toks[-1].text, "")
    return toks


def _subject_like(tok: Tok) -> bool:
    low = tok.lower
    return low in DETERMINERS or low in SUBJECT_PRONOUNS or low == "there" or bool(NUMBER.match(low)) \
        or noun_like(tok, 1)


def _clauses(toks: list[Tok]) -> list[list[Tok]]:
    """Split a sentence at ";" and at clause coordination (", and the woman is …")."""
    out: list[list[Tok]] = []
    current: list[Tok] = []
    for tok in toks:
        if tok.text in (";",):
            out.append(current)
            current = []
        else:
            current.append(tok)
    out.append(current)
    result: list[list[Tok]] = []
    for part in out:
        result.extend(_split_coordination(part))
    return result


def _split_coordination(toks: list[Tok]) -> list[list[Tok]]:
    for b in range(1, len(toks) - 1):
        if toks[b].lower not in _CLAUSE_JOINERS:
            continue
        start = b + 1
        while start < len(toks) and toks[start].lower in _CLAUSE_JOINERS:
            start += 1
        right = _trim(toks[start:])
        if not right or not _subject_like(right[0]):
            continue
        pred = find_predicate(right)
        if pred is None or pred.index == 0:
            continue
        left = _trim(toks[:b])
        if not left or find_predicate(left) is None:
            continue
        return [left] + _split_coordination(right)
    return [toks]


def _np_number(conj: Sequence[Tok]) -> str | None:
    """'sg' / 'pl' / None (unknown) for a noun phrase."""
    low = [t.lower for t in conj]
    if not low:
        return None
    if low[:2] in (["a", "few"], ["a", "couple"]) or low[:2] == ["a", "lot"]:
        return "pl"
    if low[0] in SINGULAR_DETS or low[0] == "1":
        return "sg"
    if low[0] in PLURAL_DETS or (NUMBER.match(low[0]) and low[0] not in ("0", "1")):
        return "pl"
    head = len(low) - 1
    for k in range(1, len(low)):
        if low[k] in _PLACE_PREPS or low[k] in ("of", "with", "that", "who", "which", ",") or \
                (low[k].endswith("ing") and "ing" in lexicon().verb_forms(low[k])):
            head = k - 1
            break
    return "pl" if lexicon().is_plural_noun(low[head]) else "sg"


def _starts_np(conj: Sequence[Tok]) -> bool:
    low = conj[0].lower
    return low in DETERMINERS or bool(NUMBER.match(low)) or low.endswith("'s")


def _conjuncts(np: list[Tok]) -> list[list[Tok]]:
    """A coordinated noun-phrase list → its noun phrases ("a red circle , a blue square and a
    green triangle"); adjective coordination ("a black and white cat") stays together."""
    parts: list[tuple[list[Tok], list[Tok]]] = []  # (separator tokens before, phrase tokens)
    sep: list[Tok] = []
    cur: list[Tok] = []
    i = 0
    low = [t.lower for t in np]
    while i < len(np):
        k = 0
        if low[i] in _NP_SEPARATORS:
            k = 1
        elif low[i:i + 3] == ["as", "well", "as"]:
            k = 3
        elif low[i:i + 2] == ["along", "with"]:
            k = 2
        if k:
            if cur:
                parts.append((sep, cur))
                sep, cur = [], []
            sep = sep + list(np[i:i + k])
            i += k
            continue
        cur.append(np[i])
        i += 1
    if cur:
        parts.append((sep, cur))
    if not parts:
        return []
    # merge what is not a noun phrase of its own back into its neighbour
    first_has_det = _starts_np(parts[0][1])
    negated = parts[0][1][0].lower == "no"
    merged: list[list[Tok]] = []
    pending: list[Tok] = []
    for index, (separator, phrase) in enumerate(parts):
        phrase = pending + phrase
        pending = []
        body = phrase[1:] if _starts_np(phrase) else phrase
        is_last = index == len(parts) - 1
        if not is_last and len(body) == 1 and "adj" in lexicon().pos(body[0].lower) \
                and not _starts_np(parts[index + 1][1]):
            pending = phrase + parts[index + 1][0]  # "black and white cats"
            continue
        if merged and first_has_det and not _starts_np(phrase):
            if negated:
                phrase = [Tok("no", " ")] + phrase
            else:
                merged[-1] = merged[-1] + separator + phrase
                continue
        merged.append(phrase)
    if pending:
        merged.append(pending)
    return [_trim(m) for m in merged if _trim(m)]


def _share_place(conjs: list[list[Tok]]) -> list[list[Tok]]:
    """"a cat and a dog on the sofa": the last phrase's place phrase applies to all."""
    if len(conjs) < 2:
        return conjs
    last = conjs[-1]
    at = next((k for k in range(1, len(last)) if last[k].lower in _PLACE_PREPS), None)
    if at is None:
        return conjs
    if any(t.lower in _PLACE_PREPS or t.lower == "with" for c in conjs[:-1] for t in c[1:]):
        return conjs
    place = [Tok(t.text, t.ws) for t in last[at:]]
    out = []
    for c in conjs[:-1]:
        c = list(c)
        c[-1] = Tok(c[-1].text, " ")
        out.append(c + place)
    return out + [last]


def _existential(there: Tok, tense: str, np: list[Tok], prefix: str | None = None) -> list[str]:
    """'there is A , B and C' → one claim per noun phrase; None prefix = redo be-agreement."""
    conjs = _share_place(_conjuncts(_trim(np)))
    claims = []
    for conj in conjs:
        if conj[0].lower in _NOTHING:
            continue
        if prefix is not None:
            head = prefix
        else:
            number = _np_number(conj)
            if tense == "past":
                cop = "were" if number == "pl" else "was"
            else:
                cop = "are" if number == "pl" else "is"
            head = f"{there.text} {cop}"
        claims.append(f"{head} {render(conj)}")
    return claims


def _existential_prefix(toks: list[Tok]) -> tuple[int, str | None, str | None]:
    """If toks start 'there be …': (tokens consumed, tense, fixed prefix text or None)."""
    low = [t.lower for t in toks]
    if len(low) < 3 or low[0] != "there":
        return 0, None, None
    verb = low[1]
    if verb in BE_FORMS or verb == "'s":
        k = 2
        while k < len(low) and low[k] in ("also", "still", "additionally", "clearly", "probably"):
            k += 1
        return k, ("past" if verb in ("was", "were") else "present"), None
    if verb in MODALS and low[2] == "be":
        return 3, "present", render(toks[:3])
    if verb in ("appears", "appear", "seems", "seem") and low[2:4] == ["to", "be"]:
        return 4, "present", render(toks[:4])
    return 0, None, None


def _frame_length(low: list[str]) -> int:
    """Length of a presentational frame: 'the image shows', 'I can see', 'we see'."""
    if len(low) >= 3 and low[0] in ("the", "this", "that") and low[1] in _FRAME_NOUNS \
            and low[2] in _SHOW_VERBS:
        return 3
    if len(low) >= 2 and low[0] in ("i", "we", "you", "one"):
        if low[1] in _SEE_VERBS:
            return 2
        if len(low) >= 3 and low[1] in ("can", "could") and low[2] in _SEE_VERBS:
            return 3
    return 0


def _clause_claims(toks: list[Tok]) -> list[str]:
    toks = _trim(_strip_lead(_trim(toks)))
    if not toks or not any(any(ch.isalpha() for ch in t.text) for t in toks):
        return []
    low = [t.lower for t in toks]
    frame = _frame_length(low)
    if frame:
        rest = toks[frame:]
        if rest and rest[0].lower == "that":
            return _clause_claims(rest[1:])
        if rest:
            return _existential(Tok("there" if low[0] not in ("the", "this", "that") or
                                    toks[0].text.islower() else "There", " "), "present", rest)
    consumed, tense, prefix = _existential_prefix(toks)
    if consumed:
        return _existential(toks[0], tense, toks[consumed:], prefix)
    if low[0] in _NOTHING:
        return []
    if find_predicate(toks) is None and (low[0] in (SINGULAR_DETS | PLURAL_DETS | {"some"})
                                         or NUMBER.match(low[0])) and low[0] not in ("this", "that",
                                                                                      "these", "those"):
        # a verbless noun-phrase list ("A cat, a dog and a bird.") is existential
        there = "there" if toks[0].text.islower() else "There"
        return _existential(Tok(there, " "), "present", [_lower(toks[0])] + toks[1:])
    return [render(toks)]


def _lower(tok: Tok) -> Tok:
    return Tok(tok.text.lower(), tok.ws) if tok.lower in DETERMINERS else tok


def _has_content(claim: str) -> bool:
    """A claim names something: at least one word that is not a function word."""
    return any(any(ch.isalnum() for ch in t.text) and t.lower not in FUNCTION_WORDS
               for t in tokens_of(claim))


def split_claims_rules(answer: str) -> list[str]:
    """Rule-based claims of one answer (one per clause; existential lists distributed).

    "there is a red circle , a blue square and a green triangle ." → three claims;
    "yes , there is a red circle ." → ["there is a red circle"]; "there is nothing ." → [].
    """
    if not answer or not answer.strip():
        return []
    doc = nlp()(answer)
    claims: list[str] = []
    for sent in doc.sents:
        toks = [Tok(t.text, t.whitespace_) for t in sent]
        if any(t.text == "?" for t in toks[-2:]):
            continue  # a question is not a claim
        first_alpha = next((ch for ch in sent.text if ch.isalpha()), "")
        natural = first_alpha.isupper()  # a capitalised sentence gives capitalised claims
        for clause in _clauses(toks):
            for claim in _clause_claims(clause):
                if _has_content(claim):
                    claims.append(claim[:1].upper() + claim[1:] if natural else claim)
    return claims
