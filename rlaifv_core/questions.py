"""Claim → yes/no question.

    from rlaifv_core.questions import rule_question, rewrite_questions
    rule_question("there is no red circle")      # 'is there no red circle ?'
    rule_question("The dog holds a ball.")       # 'Does the dog hold a ball?'
    rewrite_questions([["there is a red circle"]], "rules", config.claims)

Rule-based path (no downloaded model): spaCy `blank("en")` tokens, the lookup lemmatizer and a
small part-of-speech lexicon built from `spacy-lookups-data` (which word forms *can* be a noun
or a verb, and in which inflection). Rules:

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
silent zip-truncation (the original's defect, method.md §2).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from .backends.base import Backend
    from .config import ClaimsConfig

# --------------------------------------------------------------------------------------------
# word classes
# --------------------------------------------------------------------------------------------

BE_FORMS = {"is": "is", "are": "are", "was": "was", "were": "were", "am": "am", "'re": "are", "'m": "am"}
MODALS = {"can": "can", "ca": "can", "could": "could", "will": "will", "wo": "will", "would": "would",
          "shall": "shall", "should": "should", "may": "may", "might": "might", "must": "must",
          "'ll": "will", "cannot": "can"}
HAVE_FORMS = {"has": "has", "have": "have", "had": "had", "'ve": "have"}
DO_FORMS = {"does": "does", "do": "do", "did": "did"}
NEGATIONS = {"not", "n't", "never", "no", "none", "nothing", "nobody", "neither", "nor", "without",
             "cannot", "nowhere", "noone", "no-one"}
DETERMINERS = {"a", "an", "the", "this", "that", "these", "those", "my", "your", "his", "her", "its",
               "our", "their", "some", "any", "no", "every", "each", "all", "both", "several", "many",
               "few", "another", "much", "most", "more", "one", "two", "three", "four", "five", "six",
               "seven", "eight", "nine", "ten", "eleven", "twelve", "multiple", "various", "numerous",
               "a few", "lots", "plenty"}
SINGULAR_DETS = {"a", "an", "one", "this", "that", "another", "each", "every", "single"}
PLURAL_DETS = {"these", "those", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
               "eleven", "twelve", "many", "several", "few", "both", "multiple", "various", "numerous"}
SUBJECT_PRONOUNS = {"i", "you", "he", "she", "it", "we", "they", "someone", "somebody", "something",
                    "everyone", "everybody", "everything", "nobody", "nothing", "none", "one", "this",
                    "that", "these", "those", "there", "anyone", "anybody", "anything"}
PLURAL_PRONOUNS = {"i", "you", "we", "they", "these", "those"}
PREPOSITIONS = {"in", "on", "at", "of", "with", "by", "near", "under", "over", "behind", "beside",
                "besides", "next", "between", "among", "amongst", "above", "below", "across", "along",
                "around", "against", "inside", "outside", "into", "onto", "through", "toward",
                "towards", "from", "to", "for", "about", "beneath", "underneath", "atop", "upon",
                "without", "like", "during", "after", "before", "within", "throughout", "via",
                "up", "down", "off", "out", "than", "as"}
CONJUNCTIONS = {"and", "or", "but", "nor", "while", "whereas", "yet", "so", "because", "although",
                "though", "if", "when", "where", "whether"}
RELATIVES = {"who", "which", "whose", "whom"}
PREVERBAL_ADVERBS = {"never", "always", "often", "also", "still", "usually", "sometimes", "just",
                     "only", "even", "clearly", "really", "actually", "now", "currently", "already",
                     "probably", "possibly", "apparently", "seemingly", "then", "again", "too",
                     "all", "both", "each"}
IRREGULAR_PLURALS = {"people", "children", "men", "women", "police", "cattle", "mice", "geese", "feet",
                     "teeth", "oxen", "persons", "folks", "clothes", "pants", "jeans", "trousers",
                     "scissors", "glasses", "sunglasses", "shorts"}
FUNCTION_WORDS = (set(BE_FORMS) | set(MODALS) | set(HAVE_FORMS) | set(DO_FORMS) | DETERMINERS
                  | SUBJECT_PRONOUNS | PREPOSITIONS | CONJUNCTIONS | RELATIVES | NEGATIONS
                  | {"'s", "be", "been", "being", "there", "here", "very", "what", "how", "why", "than"})
# irregular verbs whose past tense is the base form: with a singular subject, "cut" is past
SAME_PAST = {"cut", "put", "hit", "set", "read", "let", "shut", "spread", "cost", "hurt", "cast", "burst",
             "quit", "split", "shed", "bet", "bid", "broadcast", "fit", "knit", "slit", "thrust", "upset",
             "wet", "beat"}
_NOT_VERBS = FUNCTION_WORDS - set(HAVE_FORMS) - set(DO_FORMS)
_NUMBER = re.compile(r"^\d+([.,]\d+)?$")


# --------------------------------------------------------------------------------------------
# the spaCy pipeline and a small part-of-speech lexicon (both lazy, cached)
# --------------------------------------------------------------------------------------------

_NLP = None
_LEXICON = None
_LOCK = threading.Lock()


def nlp():
    """The cached spaCy pipeline: blank English + sentencizer + lookup lemmatizer."""
    global _NLP
    if _NLP is None:
        with _LOCK:
            if _NLP is None:
                import spacy

                pipeline = spacy.blank("en")
                pipeline.add_pipe("sentencizer")
                pipeline.add_pipe("lemmatizer", config={"mode": "lookup"})
                pipeline.initialize()  # loads lemma_lookup from spacy-lookups-data (no download)
                _NLP = pipeline
    return _NLP


class _Lexicon:
    """Which parts of speech a lower-case word form can have, and its verb inflections.

    Built from spacy-lookups-data's English lemma index (base forms per part of speech),
    exceptions (irregular forms) and suffix rules: a form can be a verb if it is a verb lemma,
    an irregular verb form, or a suffix rule maps it to a verb lemma. No context is used; the
    rules in `find_predicate` supply it from word order.
    """

    def __init__(self) -> None:
        import spacy_lookups_data

        root = Path(spacy_lookups_data.__file__).resolve().parent / "data"

        def load(name: str) -> dict:
            with gzip.open(root / f"en_{name}.json.gz", "rt", encoding="utf-8") as handle:
                return json.load(handle)

        self.index = {pos: set(words) for pos, words in load("lemma_index").items()}
        self.exc = load("lemma_exc")
        self.rules = load("lemma_rules")
        self.lookup = load("lemma_lookup")
        self._cache: dict[str, frozenset[str]] = {}

    def _lemmas(self, word: str, pos: str) -> list[str]:
        out = list(self.exc.get(pos, {}).get(word, []))
        if word in self.index.get(pos, ()):
            out.append(word)
        for old, new in self.rules.get(pos, []):
            if old and word.endswith(old):
                base = word[: len(word) - len(old)] + new
                if base in self.index.get(pos, ()):
                    out.append(base)
        return out

    def pos(self, word: str) -> frozenset[str]:
        word = word.lower()
        hit = self._cache.get(word)
        if hit is None:
            hit = frozenset(p for p in ("noun", "verb", "adj", "adv") if self._lemmas(word, p))
            self._cache[word] = hit
        return hit

    def verb_lemma(self, word: str) -> str:
        word = word.lower()
        candidates = self._lemmas(word, "verb")
        looked_up = self.lookup.get(word)
        if looked_up in candidates:
            return looked_up
        return candidates[0] if candidates else (looked_up or word)

    def verb_forms(self, word: str) -> set[str]:
        """Subset of {base, 3sg, past, ing} that `word` can be (past includes participles)."""
        word = word.lower()
        if word in ("has", "does", "is", "goes"):
            return {"3sg"}
        index = self.index["verb"]
        forms = set()
        if word in index:
            forms.add("base")
        for lemma in self.exc["verb"].get(word, []):
            if lemma != word:
                forms.add("ing" if word.endswith("ing") else "past")
        for old, new in self.rules["verb"]:
            if old and word.endswith(old) and word[: len(word) - len(old)] + new in index:
                forms.add({"s": "3sg", "ies": "3sg", "es": "3sg", "ed": "past", "ing": "ing"}[old])
        return forms

    def is_plural_noun(self, word: str) -> bool:
        word = word.lower()
        if word in IRREGULAR_PLURALS:
            return True
        if word in SINGULAR_DETS or word in FUNCTION_WORDS:
            return word in PLURAL_PRONOUNS
        if any(lemma != word for lemma in self.exc["noun"].get(word, [])):
            return True
        if word.endswith("s") and not word.endswith("ss") and word not in self.index["noun"]:
            return any(word.endswith(old) and word[: len(word) - len(old)] + new in self.index["noun"]
                       for old, new in self.rules["noun"] if old)
        return False


def lexicon() -> _Lexicon:
    global _LEXICON
    if _LEXICON is None:
        with _LOCK:
            if _LEXICON is None:
                _LEXICON = _Lexicon()
    return _LEXICON


class Tok(NamedTuple):
    text: str
    ws: str  # trailing whitespace as in the source

    @property
    def lower(self) -> str:
        return self.text.lower()


def tokens_of(text_or_span) -> list[Tok]:
    """Tokens (text + trailing whitespace) of a string or a spaCy span."""
    span = nlp()(text_or_span) if isinstance(text_or_span, str) else text_or_span
    return [Tok(t.text, t.whitespace_) for t in span]


def render(toks: Sequence[Tok]) -> str:
    return "".join(t.text + t.ws for t in toks).strip()


# --------------------------------------------------------------------------------------------
# predicate finding (shared with the rule-based claim splitter)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Predicate:
    index: int  # position of the auxiliary / finite verb
    kind: str  # "aux" (be/modal/have/do auxiliary) or "verb" (lexical verb, needs do-support)
    form: str  # aux: its normalised form; verb: base | 3sg | past


def _is_word(text: str) -> bool:
    return any(ch.isalpha() for ch in text)


def _noun_like(tok: Tok, position: int) -> bool:
    """Can this token end a subject noun phrase?"""
    low = tok.lower
    if low in SUBJECT_PRONOUNS:
        return True
    if low in FUNCTION_WORDS or not _is_word(tok.text):
        return False
    if position > 0 and tok.text[:1].isupper():  # a name mid-sentence
        return True
    return "noun" in lexicon().pos(low) or low in IRREGULAR_PLURALS


def _subject_head(toks: Sequence[Tok], end: int) -> int:
    """The head of the subject toks[:end+1]: the word before its first preposition (after the
    first word), e.g. "a group of people" → "group"; else the last word."""
    for k in range(1, end + 1):
        if toks[k].lower in PREPOSITIONS and k > 0:
            return k - 1
    return end


def _subject_is_plural(toks: Sequence[Tok], end: int) -> bool:
    head = _subject_head(toks, end)
    subject = [t.lower for t in toks[: head + 1]]
    if "and" in subject:
        return True
    head_word = subject[head]
    if head_word in PLURAL_PRONOUNS:
        return True
    if head_word in SUBJECT_PRONOUNS:
        return False
    return lexicon().is_plural_noun(head_word)


def _det_number(toks: Sequence[Tok], head: int) -> str | None:
    """'sg' / 'pl' if the subject's determiner fixes its number."""
    first = toks[0].lower if toks else ""
    if head == 0:
        return None
    if first in SINGULAR_DETS:
        return "sg"
    if first in PLURAL_DETS or (_NUMBER.match(first) and first not in ("1", "0")):
        return "pl"
    return None


def _is_aux_have(toks: Sequence[Tok], i: int) -> bool:
    """has/have/had + (adverb/not)* + past participle or 'been'/'got' → auxiliary."""
    j = i + 1
    while j < len(toks) and (toks[j].lower in NEGATIONS or toks[j].lower in PREVERBAL_ADVERBS):
        j += 1
    if j >= len(toks):
        return False
    nxt = toks[j].lower
    if nxt in ("been", "got", "gotten"):
        return True
    return "past" in lexicon().verb_forms(nxt) and nxt not in FUNCTION_WORDS


def _aux_at(toks: Sequence[Tok], i: int) -> str | None:
    """The normalised auxiliary at position i, or None."""
    low = toks[i].lower
    if low in BE_FORMS:
        return BE_FORMS[low]
    if low in MODALS:
        return MODALS[low]
    if low == "'s" and i > 0 and toks[i - 1].lower in {"he", "she", "it", "that", "there", "this", "what",
                                                         "who", "here"}:
        return "is"
    if low in HAVE_FORMS and i > 0 and _is_aux_have(toks, i):
        return HAVE_FORMS[low]
    if low in DO_FORMS and i + 1 < len(toks) and toks[i + 1].lower in ("not", "n't", "never"):
        return DO_FORMS[low]
    return None


def _verb_at(toks: Sequence[Tok], i: int) -> str | None:
    """The finite form (base / 3sg / past) if position i can be the clause's lexical verb."""
    if i == 0:
        return None
    tok = toks[i]
    low = tok.lower
    if not tok.text.isalpha() and "-" not in tok.text:
        return None
    if tok.text[:1].isupper():
        return None
    if low in _NOT_VERBS:
        return None
    forms = lexicon().verb_forms(low) - {"ing"}
    if low in HAVE_FORMS:
        forms = {"has": {"3sg"}, "have": {"base"}, "had": {"past"}}.get(low, set())
    if low in DO_FORMS:
        forms = {"does": {"3sg"}, "do": {"base"}, "did": {"past"}}[low]
    if not forms:
        return None
    j = i - 1
    while j >= 0 and (toks[j].lower in PREVERBAL_ADVERBS or
                      (toks[j].lower.endswith("ly") and "adv" in lexicon().pos(toks[j].lower))):
        j -= 1
    if j < 0:
        return None
    if i + 1 < len(toks) and toks[i + 1].lower in ("of", "'s"):
        return None
    if toks[j].lower in RELATIVES or toks[j].lower == "that":  # "who rides", "that holds"
        return next((f for f in ("3sg", "past", "base") if f in forms), None)
    if not _noun_like(toks[j], j):
        return None
    plural = _subject_is_plural(toks, j)
    fixed = _det_number(toks, j)
    if fixed == "pl" and not plural:
        return None  # "two men ride(s)…": the head of a plural subject must be plural
    if fixed == "sg" and plural and toks[j].lower not in PLURAL_PRONOUNS:
        return None
    if "3sg" in forms and not plural:
        return "3sg"
    if "base" in forms and plural:
        return "base"
    if "past" in forms:
        return "past"
    if "base" in forms and low in SAME_PAST:
        return "past"
    return None


def find_predicate(toks: Sequence[Tok]) -> Predicate | None:
    """The main clause's auxiliary or finite lexical verb (left to right; a relative clause's
    own verb, after who/which/that, is skipped)."""
    in_relative = False
    for i, tok in enumerate(toks):
        low = tok.lower
        if low in RELATIVES or (low == "that" and i > 0 and _noun_like(toks[i - 1], i - 1)
                                and toks[i - 1].lower not in SUBJECT_PRONOUNS - {"one"}):
            in_relative = True
            continue
        aux = _aux_at(toks, i)
        if aux is not None:
            if i == 0:
                return Predicate(0, "aux", aux)  # already a question (or an imperative)
            if in_relative:
                in_relative = False
                continue
            return Predicate(i, "aux", aux)
        form = _verb_at(toks, i)
        if form is not None:
            if in_relative:
                in_relative = False
                continue
            return Predicate(i, "verb", form)
    return None


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
    if first in DETERMINERS or _NUMBER.match(first) or _noun_like(toks[0], 0):
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


_MARKER = re.compile(r"^\s*(?:[-*•]\s+|[-•](?=[A-Za-z])|(\d{1,3})[.)]\s+)")
_TEMPLATE_ECHO = re.compile(r"^\{.*\}$|^\.\.\.$|^…$")


def parse_list(text: str, *, require_marker: bool) -> tuple[list[str], list[int | None]]:
    """List items of a model reply: lines with a leading "- ", "* ", "• " or "1." / "1)" marker
    (the marker is stripped, nothing else is). Empty lines, "###" headers and echoes of the
    template ("{Extracted fact 1}", "...") are dropped. With require_marker=False a line without
    a marker is an item too (the original `get_facts`, minus its first-character drop); lines
    ending in ":" (a preamble such as "Here are the facts:") are never items.
    Returns the items and, per item, its number if it was numbered."""
    items: list[str] = []
    numbers: list[int | None] = []
    for line in text.strip().split("\n"):
        line = line.strip()
        if not line or "###" in line:
            continue
        match = _MARKER.match(line)
        if match:
            item = line[match.end():].strip()
            number = int(match.group(1)) if match.group(1) else None
        elif require_marker or line.strip("*_ ").endswith(":"):
            continue  # prose, or a header such as "Here are the facts:" / "**Facts:**"
        else:
            item, number = line, None
        item = item.strip().strip('"').strip()
        if not item or _TEMPLATE_ECHO.match(item):
            continue
        items.append(item)
        numbers.append(number)
    return items, numbers


def derive_seed(base: int, *parts: Any) -> int:
    """A stable 31-bit seed from a base seed and any parts (independent of batch position)."""
    blob = json.dumps([base, *[str(p) for p in parts]]).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "big") & 0x7FFFFFFF


def has_negation(text: str) -> bool:
    words = re.findall(r"[a-z']+|n't", text.lower())
    return any(w in NEGATIONS or w.endswith("n't") for w in words)


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
    from .config import ClaimsConfig

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
        reply = backend.chat([{"role": "user", "content": content}], temperature=config.temperature,
                             top_p=config.top_p, max_new_tokens=config.max_new_tokens,
                             seed=derive_seed(seed, "changeq", preset, *claims, attempt))
        raw.append(reply.text)
        questions, numbers = parse_list(reply.text, require_marker=preset != "rlaifv-llama3")
        problem = _check_questions(claims, questions, numbers)
        if problem is None:
            return QuestionResult(questions, None, raw)
        reasons.append(f"attempt {attempt + 1}: {problem}")
    reason = "; ".join(reasons) + " → rule-based questions"
    return QuestionResult([rule_question(c) for c in claims], reason, raw)


def _is_rules(spec: Any) -> bool:
    if spec is None or (isinstance(spec, str) and spec == "rules"):
        return True
    return getattr(spec, "backend", None) == "rules"


def rewrite_questions(claim_lists: Sequence[Sequence[str]], rewriter_spec_or_backend: Any,
                      config: "ClaimsConfig | None" = None, *, seed: int = 0) -> list[QuestionResult]:
    """Questions for many answers' claim lists (a list of claims, or a ClaimResult, per answer).

    rewriter_spec_or_backend: "rules" / None / a ModelSpec with backend="rules" → rule_question;
    a Backend → its chat(); another ModelSpec → loaded with backends.load_backend (closed after).
    """
    lists = [list(getattr(c, "claims", c)) for c in claim_lists]
    if _is_rules(rewriter_spec_or_backend):
        return [QuestionResult([rule_question(c) for c in claims], None, []) for claims in lists]
    backend, owned = _resolve_backend(rewriter_spec_or_backend)
    try:
        return [rewrite_questions_llm(backend, claims, config, seed=seed) for claims in lists]
    finally:
        if owned:
            backend.close()


def _resolve_backend(spec_or_backend: Any) -> tuple["Backend", bool]:
    """(backend, whether we loaded it and must close it)."""
    from .backends.base import Backend

    if isinstance(spec_or_backend, Backend):
        return spec_or_backend, False
    backend_kind = getattr(spec_or_backend, "backend", None)
    if backend_kind in ("hf", "openai"):
        from . import backends

        load_backend = getattr(backends, "load_backend", None)
        if load_backend is None:
            raise TypeError("rlaifv_core.backends.load_backend is not available; pass a Backend")
        return load_backend(spec_or_backend), True
    raise TypeError(f"not a text model spec or Backend: {spec_or_backend!r}")
