"""English grammar helpers for the rule-based claim splitter and question rewriter (no model).

    from rlaifv_core.feedback.grammar import tokens_of, find_predicate, lexicon
    toks = tokens_of("The dog holds a ball.")
    find_predicate(toks)                 # Predicate(index=2, kind='verb', form='3sg')
    lexicon().pos("holds")               # frozenset({'noun', 'verb'})

spaCy's `blank("en")` tokens and sentencizer, its lookup lemmatizer, and a small part-of-speech
lexicon built from `spacy-lookups-data` (which word forms *can* be a noun or a verb, and in which
inflection); word order supplies the context. Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

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
NUMBER = re.compile(r"^\d+([.,]\d+)?$")


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


def noun_like(tok: Tok, position: int) -> bool:
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
    if first in PLURAL_DETS or (NUMBER.match(first) and first not in ("1", "0")):
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
    if not noun_like(toks[j], j):
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
        if low in RELATIVES or (low == "that" and i > 0 and noun_like(toks[i - 1], i - 1)
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


def has_negation(text: str) -> bool:
    words = re.findall(r"[a-z']+|n't", text.lower())
    return any(w in NEGATIONS or w.endswith("n't") for w in words)
