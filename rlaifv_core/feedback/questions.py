"""Claim → yes/no question.

    from rlaifv_core.feedback.questions import rule_question, rewrite_questions
    rule_question("there is no red circle")      # 'is there no red circle ?'
    rule_question("The dog holds a ball.")       # 'Does the dog hold a ball?'
    rewrite_questions([["there is a red circle"]], "rules", config.claims)

Rule-based path (no downloaded model; the grammar helpers are in `grammar.py`). Rules:

* auxiliary / copula / modal inversion: "there is X" → "is there X", "the cat is not black" →
  "is the cat not black", "a man can swim" → "can a man swim"; "n't" becomes "not";
* do-support for a lexical verb, tense kept and the verb lemmatised: "the dog holds a ball" →
  "does the dog hold a ball", "two men ride horses" → "do two men ride horses", "a man rode a
  horse" → "did a man ride a horse";
* negations are always kept ("there are no people" → "are there no people");
* a bare noun phrase becomes existential ("a red circle" → "is there a red circle");
  anything else → "is it true that …".

Output style follows the claim: a claim starting in lower case (the shapes world's tokenised
language) gives a lower-case question ending in " ?"; a capitalised sentence gives a
capitalised question ending in "?".

LLM path: `rewrite_questions_llm` with the project's own prompt (numbered statements in,
numbered questions out) or the `rlaifv-llama3` preset (the released changeq model's prompt,
verbatim). Exactly one question per claim, negations kept; otherwise one retry with another
seed, then the rule-based questions for the whole answer, with the reason recorded. Never a
silent zip-truncation (the original's defect, docs/method.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from ..backends.lengths import PROMPT_TOO_LONG, PromptTooLong
from ..seeds import mix_seed
from .grammar import (DETERMINERS, FUNCTION_WORDS, NUMBER, PLURAL_DETS, PREPOSITIONS, RELATIVES, SINGULAR_DETS,
                      Tok, find_predicate, has_negation, lexicon, noun_like, render, tokens_of)
from .llm_lists import parse_list
from .text_roles import is_rules, text_backend

if TYPE_CHECKING:  # pragma: no cover
    from ..backends.base import Backend
    from ..config import ClaimsConfig


# --------------------------------------------------------------------------------------------
# rule_question
# --------------------------------------------------------------------------------------------

_TRAILING = {".", "!", ";", ",", ":", "?", "…"}


def _lower_first(tok: Tok) -> Tok:
    text = tok.text
    if text == "I" or not text[:1].isupper() or not text.isalpha():
        return tok
    low = text.lower()
    if low in FUNCTION_WORDS or (text[1:].islower() or len(text) == 1) and lexicon().pos(low):
        return Tok(text[0].lower() + text[1:], tok.ws)
    return tok


def _finish(words: list[Tok], natural: bool) -> str:
    text = render(words)
    if natural:
        return text[:1].upper() + text[1:] + "?"
    return text + " ?"


def rule_question(claim: str) -> str:
    """Rewrite one declarative claim as a polar question (negation preserved).

    "there is a red circle" → "is there a red circle ?"; "The dog holds a ball." → "Does the dog
    hold a ball?". Raises ValueError only for an empty claim.
    """
    text = claim.strip()
    if not any(ch.isalnum() for ch in text):
        raise ValueError(f"empty claim: {claim!r}")
    first_alpha = next((ch for ch in text if ch.isalpha()), "a")
    natural = first_alpha.isupper()
    toks = tokens_of(text)
    while toks and toks[-1].text in _TRAILING:
        toks.pop()
    if toks:
        toks[-1] = Tok(toks[-1].text, "")
    if claim.strip().endswith("?"):  # already a question
        return _finish(toks, natural)
    pred = find_predicate(toks)
    if pred is not None and pred.kind == "aux" and pred.index == 0:
        return _finish(toks, natural)
    if pred is not None:
        i = pred.index
        subject = list(toks[:i])
        subject[0] = _lower_first(subject[0])
        if subject[-1].ws == "":
            subject[-1] = Tok(subject[-1].text, " ")
        rest = list(toks[i + 1:])
        if pred.kind == "aux":
            head = Tok(pred.form, " ")
            if rest and rest[0].lower in ("n't", "not"):
                rest[0] = Tok("not", " " if len(rest) > 1 else "")
            words = [head] + subject + rest
        else:
            do = {"3sg": "does", "base": "do", "past": "did"}[pred.form]
            verb = Tok(lexicon().verb_lemma(toks[i].lower), toks[i].ws if rest else "")
            words = [Tok(do, " ")] + subject + [verb] + rest
        return _finish(words, natural)
    # no verb: a bare noun phrase is existential, anything else is asked about as a whole
    first = toks[0].lower
    if first in DETERMINERS or NUMBER.match(first) or noun_like(toks[0], 0):
        head = _np_head(toks)
        copula = "are" if (first in PLURAL_DETS or lexicon().is_plural_noun(toks[head].lower)) and \
            first not in SINGULAR_DETS else "is"
        toks[0] = _lower_first(toks[0])
        return _finish([Tok(copula, " "), Tok("there", " ")] + toks, natural)
    toks[0] = _lower_first(toks[0])
    return _finish([Tok("is", " "), Tok("it", " "), Tok("true", " "), Tok("that", " ")] + toks, natural)


def _np_head(toks: Sequence[Tok]) -> int:
    """Index of a noun phrase's head: the word before the first preposition / relative /
    participle (or the last word)."""
    for k in range(1, len(toks)):
        low = toks[k].lower
        if low in PREPOSITIONS or low in RELATIVES or low in ("that", ",") or \
                (low.endswith("ing") and "ing" in lexicon().verb_forms(low)):
            return k - 1
    return len(toks) - 1


# --------------------------------------------------------------------------------------------
# LLM path
# --------------------------------------------------------------------------------------------

PROJECT_QUESTION_PROMPT = """\
Rewrite each numbered statement about an image as one yes/no question that asks whether the \
statement is true of the image.

Rules:
- Exactly one question per statement, in the same order, numbered like the statements ("1. ...").
- Keep the meaning, the tense and every detail (objects, numbers, colours, positions); add nothing.
- Keep every negation: "There is no dog." becomes "Is there no dog?", never "Is there a dog?".
- Reply with the numbered questions only, one per line, nothing else.

Statements:
{statements}

Questions:"""

# The released RLAIF-V Llama-3-8B "changeq" model's prompt, verbatim (utils/llama3_8b_inference.py
# wrap_prompt_changeq_to_list): note the literal "\n    " before "If" and "\n- {fact}\n" per fact.
LLAMA3_CHANGEQ_PROMPT = (
    "You are an expert at modifying a given declarative sentence into a general question sentence. "
    "Your task is to modify the given declarative sentences one by one into a general question form. "
    "Do not change tenses or add extra content.\n    If the given declarative sentence contains not, "
    "no or negative meaning words, you need to check the modified general interrogative sentence to "
    "make sure that the generated general question sentence retains words with not , no or negative "
    "meaning words.\n\nYou should present your result in the following format:\n### Modified "
    "sentences:\n- {Modified sentence 1}\n- {Modified sentence 2}\n- ...\n\n### Declarative sentences:"
)


@dataclass
class QuestionResult:
    """One answer's yes/no questions, exactly one per claim, in claim order.

    fallback_reason is None when the LLM's questions were used; otherwise why the whole answer
    fell back to `rule_question` (the raw replies are kept for the record).
    """

    questions: list[str]
    fallback_reason: str | None = None
    raw: list[str] = field(default_factory=list)


def changeq_prompt_llama3(facts: Sequence[str]) -> str:
    content = LLAMA3_CHANGEQ_PROMPT
    for fact in facts:
        content += "\n- {}\n".format(fact)
    return content


def question_prompt_project(claims: Sequence[str]) -> str:
    statements = "\n".join(f"{k}. {c}" for k, c in enumerate(claims, 1))
    return PROJECT_QUESTION_PROMPT.format(statements=statements)


def _check_questions(claims: Sequence[str], questions: list[str], numbers: list[int | None]) -> str | None:
    """Why these questions cannot be used for these claims (None if they can)."""
    if not questions:
        return "no questions in the reply"
    if len(questions) != len(claims):
        return f"{len(questions)} questions for {len(claims)} claims"
    if all(n is not None for n in numbers) and numbers != list(range(1, len(claims) + 1)):
        return f"questions numbered {numbers}, expected 1..{len(claims)}"
    for k, (claim, question) in enumerate(zip(claims, questions), 1):
        if has_negation(claim) and not has_negation(question):
            return f"question {k} lost the negation of {claim!r}"
    return None


def rewrite_questions_llm(backend: "Backend", claims: Sequence[str], config: "ClaimsConfig | None" = None,
                          *, seed: int = 0) -> QuestionResult:
    """One answer's claims → one yes/no question each, by an LLM (config.preset picks the
    prompt). Count mismatch, lost negation or an unparsable reply: one retry with another
    seed, then `rule_question` for every claim of this answer (reason recorded)."""
    from ..config import ClaimsConfig

    config = config or ClaimsConfig()
    claims = list(claims)
    if not claims:
        return QuestionResult([], None, [])
    preset = config.preset
    if preset == "rlaifv-llama3":
        content = changeq_prompt_llama3(claims)
    else:
        content = question_prompt_project(claims)
    raw: list[str] = []
    reasons: list[str] = []
    for attempt in range(2):
        try:
            reply = backend.chat([{"role": "user", "content": content}], temperature=config.temperature,
                                 top_p=config.top_p, max_new_tokens=config.max_new_tokens,
                                 seed=mix_seed(seed, "changeq", preset, *claims, attempt, bits=31))
        except PromptTooLong as error:  # no room to answer: the rule-based questions, reason recorded
            return QuestionResult([rule_question(c) for c in claims], f"{PROMPT_TOO_LONG}: {error} → rule-based "
                                  "questions", raw)
        raw.append(reply.text)
        questions, numbers = parse_list(reply.text, require_marker=preset != "rlaifv-llama3")
        problem = _check_questions(claims, questions, numbers)
        if problem is None:
            return QuestionResult(questions, None, raw)
        reasons.append(f"attempt {attempt + 1}: {problem}")
    reason = "; ".join(reasons) + " → rule-based questions"
    return QuestionResult([rule_question(c) for c in claims], reason, raw)


def rewrite_questions(claim_lists: Sequence[Sequence[str]], rewriter_spec_or_backend: Any,
                      config: "ClaimsConfig | None" = None, *, seed: int = 0) -> list[QuestionResult]:
    """Questions for many answers' claim lists (a list of claims, or a ClaimResult, per answer).

    rewriter_spec_or_backend: "rules" / None / a ModelSpec with backend="rules" → rule_question;
    a Backend → its chat(); another ModelSpec → loaded with models.load_model (closed after).
    """
    lists = [list(getattr(c, "claims", c)) for c in claim_lists]
    if is_rules(rewriter_spec_or_backend):
        return [QuestionResult([rule_question(c) for c in claims], None, []) for claims in lists]
    backend, owned = text_backend(rewriter_spec_or_backend)
    try:
        return [rewrite_questions_llm(backend, claims, config, seed=seed) for claims in lists]
    finally:
        if owned:
            backend.close()
