"""Answer → atomic claims (the "divide" half of RLAIF-V's divide-and-conquer, method.md §2).

    from rlaifv_core.claims import split_claims, split_claims_rules
    split_claims_rules("there is a red circle , a blue square and a green triangle .")
    # ['there is a red circle', 'there is a blue square', 'there is a green triangle']
    results = split_claims([(question, answer), ...], config.models.splitter, config.claims)
    results[0].claims, results[0].failure, results[0].raw

Two splitters behind one call:

* rules (no model): spaCy `blank("en")` + sentencizer + lookup lemmatizer, and rules. One claim
  per clause; a leading "yes ,"/"no ," and discourse markers ("Additionally,", "In the image,")
  are dropped; "there is/are A , B and C" and "the image shows / I can see A and B" become one
  existential claim per noun phrase (number agreement redone, a trailing place phrase shared);
  "there is nothing" is no claim. Exact on the shapes world's language.
* an LLM (any Backend with chat()): the project's own prompt, or the `rlaifv-llama3` preset
  (the released RLAIF-V split model's prompt, verbatim) with its `get_facts` parsing minus its
  defects: no first-character drop, no 300-word truncation (long answers go in sentence-aligned
  chunks of config.chunk_words words), an unparsable reply is retried once with another seed
  and then recorded as a failure of that answer (never raised, never silently empty).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from .questions import (
    BE_FORMS,
    DETERMINERS,
    FUNCTION_WORDS,
    MODALS,
    PLURAL_DETS,
    SINGULAR_DETS,
    SUBJECT_PRONOUNS,
    Tok,
    _is_rules,
    _noun_like,
    _NUMBER,
    _resolve_backend,
    derive_seed,
    find_predicate,
    lexicon,
    nlp,
    parse_list,
    render,
    tokens_of,
)

if TYPE_CHECKING:  # pragma: no cover
    from .backends.base import Backend
    from .config import ClaimsConfig

__all__ = [
    "ClaimResult",
    "LLAMA3_SPLIT_PROMPT",
    "PROJECT_SPLIT_PROMPT",
    "chunk_answer",
    "nlp",
    "split_claims",
    "split_claims_llm",
    "split_claims_rules",
    "split_prompt_llama3",
    "split_prompt_project",
]


@dataclass
class ClaimResult:
    """One answer's claims.

    failure is None when the claims are complete (possibly none: an answer that states
    nothing); otherwise why no claims could be extracted (claims is then []). raw holds every
    model reply, retries included ([] for the rule-based splitter).
    """

    claims: list[str]
    failure: str | None = None
    raw: list[str] = field(default_factory=list)


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
    return low in DETERMINERS or low in SUBJECT_PRONOUNS or low == "there" or bool(_NUMBER.match(low)) \
        or _noun_like(tok, 1)


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
    if low[0] in PLURAL_DETS or (_NUMBER.match(low[0]) and low[0] not in ("0", "1")):
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
    return low in DETERMINERS or bool(_NUMBER.match(low)) or low.endswith("'s")


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
                                         or _NUMBER.match(low[0])) and low[0] not in ("this", "that",
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


# --------------------------------------------------------------------------------------------
# LLM splitter
# --------------------------------------------------------------------------------------------

PROJECT_SPLIT_PROMPT = """\
Extract the facts that the answer below states about an image, so that each fact can be \
checked against the image on its own.

Rules:
- Write one fact per line, each line starting with "- ".
- Each fact is one short, self-contained sentence about one thing: an object, an attribute \
(colour, size, material, number), a position, a relation, an action, or text in the image.
- Name things explicitly: replace pronouns ("it", "they", "she") by what they refer to.
- Keep negations as stated ("There is no dog in the image.").
- Use only what the answer states: add nothing, infer nothing, correct nothing.
- Use the question only to complete short answers: for "Is there a dog?", the answer "Yes." \
gives "- There is a dog.".
- Leave out opinions, feelings, guesses about things outside the image, and remarks about the \
answer itself.
- If the answer states no fact about the image, reply with the single line: - NONE

Question: {question}
Answer{part}: {answer}

Facts:"""

# The released RLAIF-V Llama-3-8B split model's prompt, verbatim (utils/llama3_8b_inference.py
# wrap_prompt_divide_to_list); the original then truncated it to 300 words (we chunk instead).
LLAMA3_SPLIT_PROMPT = (
    "You are an expert in extracting facts from the given question-answer pair for an image. Your "
    "task is to extract and rewrite the facts mentioned in the question-answer pair into "
    "self-contained sentences. Exclude opinions or subjective statements.\n\nYou should present "
    "your result in the following format:\n### Facts:\n- {Extracted fact 1}\n- {Extracted fact 2}\n"
    "- ...\n\n### Question-answer pair:\nQuestion: "
)


def split_prompt_llama3(question: str, answer: str) -> str:
    return LLAMA3_SPLIT_PROMPT + question + "\nAnswer: " + answer


def split_prompt_project(question: str, answer: str, part: int = 1, parts: int = 1) -> str:
    label = f" (part {part} of {parts}; extract the facts of this part only)" if parts > 1 else ""
    return PROJECT_SPLIT_PROMPT.format(question=question, answer=answer, part=label)


def chunk_answer(answer: str, chunk_words: int) -> list[str]:
    """Sentence-aligned chunks of at most chunk_words whitespace-separated words each (a longer
    sentence is cut at word boundaries). Every word of the answer is in exactly one chunk."""
    words = answer.split()
    if chunk_words <= 0 or len(words) <= chunk_words:
        return [answer]
    sentences = [s.text.strip() for s in nlp()(answer).sents if s.text.strip()]
    pieces: list[str] = []
    for sentence in sentences:
        sw = sentence.split()
        if len(sw) <= chunk_words:
            pieces.append(sentence)
        else:
            pieces.extend(" ".join(sw[k:k + chunk_words]) for k in range(0, len(sw), chunk_words))
    chunks: list[str] = []
    current: list[str] = []
    count = 0
    for piece in pieces:
        n = len(piece.split())
        if current and count + n > chunk_words:
            chunks.append(" ".join(current))
            current, count = [], 0
        current.append(piece)
        count += n
    if current:
        chunks.append(" ".join(current))
    return chunks


_NONE_REPLY = re.compile(r"^\W*(none|no facts?)\W*$", re.IGNORECASE)


def _parse_facts(text: str, preset: str) -> tuple[list[str], bool]:
    """(facts, explicitly_none). The preset parses like the original `get_facts` (every
    non-empty, non-### line) but strips a list marker only where there is one."""
    if preset == "rlaifv-llama3":
        facts, _ = parse_list(text, require_marker=False)
        return facts, False
    facts, _ = parse_list(text, require_marker=True)
    if len(facts) == 1 and _NONE_REPLY.match(facts[0]):
        return [], True
    if not facts and _NONE_REPLY.match(text.strip() or "x"):
        return [], True
    facts = [f for f in facts if not _NONE_REPLY.match(f)]
    return facts, False


def split_claims_llm(backend: "Backend", question: str, answer: str, config: "ClaimsConfig | None" = None,
                     *, seed: int = 0) -> ClaimResult:
    """Claims of one answer by an LLM (config.preset picks the prompt). Never raises on a bad
    reply: an unparsable chunk is retried once with another seed, then the whole answer is a
    failure (claims=[], the reason, all raw replies). Backend errors propagate."""
    from .config import ClaimsConfig

    config = config or ClaimsConfig()
    if not answer or not answer.strip():
        return ClaimResult([], None, [])
    preset = config.preset
    chunks = chunk_answer(answer, config.chunk_words)
    claims: list[str] = []
    raw: list[str] = []
    for k, chunk in enumerate(chunks):
        if preset == "rlaifv-llama3":
            content = split_prompt_llama3(question, chunk)
        else:
            content = split_prompt_project(question, chunk, k + 1, len(chunks))
        for attempt in range(2):
            reply = backend.chat([{"role": "user", "content": content}], temperature=config.temperature,
                                 top_p=config.top_p, max_new_tokens=config.max_new_tokens,
                                 seed=derive_seed(seed, "split", preset, question, answer, k, attempt))
            raw.append(reply.text)
            facts, explicitly_none = _parse_facts(reply.text, preset)
            if facts or explicitly_none:
                claims.extend(facts)
                break
        else:
            where = f"chunk {k + 1}/{len(chunks)}: " if len(chunks) > 1 else ""
            return ClaimResult([], f"{where}no list items in the reply after 2 attempts", raw)
    return ClaimResult(claims, None, raw)


def split_claims(answers: Sequence[tuple[str, str]], splitter_spec_or_backend: Any,
                 config: "ClaimsConfig | None" = None, *, seed: int = 0) -> list[ClaimResult]:
    """Claims for many (question, answer) pairs, in order.

    splitter_spec_or_backend: "rules" / None / a ModelSpec with backend="rules" → the rule-based
    splitter (the question is unused); a Backend → LLM splitting with config.preset; another
    ModelSpec (hf/openai) → loaded with backends.load_backend and closed afterwards.
    """
    if _is_rules(splitter_spec_or_backend):
        results = []
        for _question, answer in answers:
            try:
                results.append(ClaimResult(split_claims_rules(answer), None, []))
            except Exception as exc:  # one odd answer must not sink a stage; it is recorded
                results.append(ClaimResult([], f"rule splitter error: {exc!r}", []))
        return results
    backend, owned = _resolve_backend(splitter_spec_or_backend)
    try:
        return [split_claims_llm(backend, q, a, config, seed=seed) for q, a in answers]
    finally:
        if owned:
            backend.close()
