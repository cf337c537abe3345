"""An LLM-free object-mention extractor over the 80 COCO classes and the project's synonym table.

    from rlaifv_core.evals.coco import extract_coco_objects, extract_coco_mentions, coco_class
    extract_coco_objects("Two dogs chase a teddy bear past some people.")
    # ['dogs', 'teddy bear', 'people']
    [m.cls for m in extract_coco_mentions("A man eats a hot dog next to his dog.")]
    # ['person', 'hot dog', 'dog']
    coco_class("wooden park bench")   # 'bench'  (a phrase an LLM judge extracted; head-noun fallback)

How it works (no downloaded model; see docs/method.md §12, "NLP without downloaded models"): the text is
lower-cased, tokenised by `spacy.blank("en")` and lemmatised by the lookup lemmatizer
(`spacy-lookups-data`), with two fixes: words ending in -ing/-ed keep their surface form ("skiing"
is not "ski", "potted" stays "potted") and a few lemmas are overridden. Every synonym in the
table (and its regular plural) goes through the same pipeline and becomes a `PhraseMatcher`
pattern on LEMMA, so "mice" → mouse, "knives" → knife, "two dogs" → dog. Overlapping matches are
resolved by `filter_spans` (longest first), so "hot dog" (food) beats "dog", "teddy bear" beats
"bear", "baby elephant" is an elephant and not a person, and "toilet paper" is nothing.

Three light heuristics stand in for a part-of-speech tagger:
- "orange" is the fruit only when plural or not followed by a noun ("an orange cat" is a colour);
- a match right after a subject pronoun or a modal ("he ties", "you can") is a verb;
- a mention after "no / not / without / never / n't" in the same clause is *negated* and not
  counted as a mention by default ("there are no people").

`PhraseVocabulary` is the reusable part: AMBER builds one from its own object vocabulary.
"""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass
from typing import Iterable, Mapping

from .coco_classes import IGNORE, IGNORED_PHRASES, SYNONYMS

_SPORTS = ("football", "soccer", "basketball", "volleyball", "baseball", "tennis", "softball", "rugby")
_SPORT_PLACES = ("field", "court", "game", "match", "team", "stadium", "net", "hoop", "pitch",
                 "uniform", "cap", "jersey", "shirt", "helmet", "goal", "practice")
_ANIMALS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe")
_ANIMAL_MODIFIERS = ("baby", "adult", "mother", "young", "little", "father")

NEGATORS = frozenset({"no", "not", "without", "never", "n't", "nor", "neither", "none"})
_CLAUSE_BREAKS = frozenset({".", ",", ";", ":", "!", "?", "(", ")", "but", "while", "although",
                            "though", "however", "whereas", "except", "yet"})
_NEGATION_WINDOW = 5
_VERB_CONTEXT = frozenset({"he", "she", "they", "who", "we", "i", "you", "can", "could", "will",
                           "would", "may", "might", "should", "must", "shall", "does", "did", "do"})
_DETERMINERS = frozenset({"a", "an", "the", "this", "that", "these", "those", "one", "two", "three",
                          "four", "five", "six", "some", "each", "every", "another", "his", "her",
                          "its", "their", "our", "my", "your", "soda", "beer", "tin", "trash",
                          "garbage", "paint", "metal", "aluminum", "empty", "open"})
_NEEDS_DETERMINER = frozenset({"can"})  # "can" is a noun only after a determiner ("a can", "soda can")
_COLOURS = frozenset({"red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black",
                      "white", "gray", "grey", "silver", "gold", "golden", "beige", "tan", "teal",
                      "maroon", "navy", "cream"})
_COLOUR_WORDS = frozenset({"orange"})  # also a colour: fruit only when plural or not before a noun
_FRUIT_FOLLOWERS = frozenset({"slice", "slices", "wedge", "wedges", "peel", "peels", "half", "halves",
                              "segment", "segments"})
_COPULAS = frozenset({"is", "are", "was", "were", "be", "been", "being", "looks", "look", "appears",
                      "bright", "dark", "light", "pale", "deep", "vibrant", "burnt", "neon"})
# Nouns the lookup table reads as verb forms (ground → grind, stove → stave, dryer → dry …).
_LEMMA_OVERRIDES = {"calves": "calf", "leaves": "leaf", "glasses": "glass", "'s": "'s", "skis": "ski",
                    "people": "people", "ground": "ground", "grounds": "ground", "stove": "stove",
                    "stoves": "stove", "dove": "dove", "doves": "dove", "drier": "drier", "driers": "drier",
                    "dryer": "dryer", "dryers": "dryer", "cola": "cola", "colas": "cola"}


def plural(word: str) -> str:
    """Regular English plural of the last word of a phrase (bus → buses, pony → ponies)."""
    head, _, last = word.rpartition(" ")
    if re.search(r"(s|x|z|ch|sh)$", last):
        last += "es"
    elif re.search(r"[^aeiou]y$", last):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}" if head else last


# -- the spaCy pipeline (blank English + lookup lemmas) ---------------------------------------------
_NLP_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def english():
    """`spacy.blank("en")` with the lookup lemmatizer (no downloaded model)."""
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("lemmatizer", config={"mode": "lookup"})
    nlp.initialize()
    return nlp


def _fix_lemma(token) -> str:
    lower = token.lower_
    if lower in _LEMMA_OVERRIDES:
        return _LEMMA_OVERRIDES[lower]
    if len(lower) > 4 and (lower.endswith("ing") or lower.endswith("ed")):
        return lower  # "skiing", "potted", "parked": never a noun lemma of the vocabulary
    return (token.lemma_ or lower).lower()


def analyse(text: str):
    """Lower-cased spaCy Doc whose `lemma_` follows the project's fixes (thread-safe)."""
    with _NLP_LOCK:
        doc = english()(text.lower())
        for token in doc:
            token.lemma_ = _fix_lemma(token)
    return doc


def lemma_key(text: str) -> str:
    """The lemma string a phrase is matched by: "Two Dogs" → "two dog"."""
    return " ".join(t.lemma_ for t in analyse(text) if not t.is_space)


@dataclass(frozen=True)
class Mention:
    text: str  # surface form as written (lower-cased)
    key: str  # lemma string ("dog" for "dogs")
    label: str  # canonical class / vocabulary word
    start: int  # character offsets in the input text
    end: int
    negated: bool = False


class PhraseVocabulary:
    """Lemma-level phrase matching of a vocabulary: phrase → label (IGNORE hides a phrase).

    Every phrase and its regular plural are lemmatised with `analyse`; matching runs a spaCy
    PhraseMatcher on LEMMA and keeps the longest non-overlapping spans (`filter_spans`).
    """

    def __init__(self, phrases: Mapping[str, str], *, add_plurals: bool = True):
        from spacy.matcher import PhraseMatcher

        self._labels: dict[str, str] = {}
        patterns = []
        for phrase, label in phrases.items():
            forms = [phrase.lower().strip()]
            if add_plurals and label != IGNORE:
                forms.append(plural(forms[0]))
            for form in forms:
                doc = analyse(form)
                key = " ".join(t.lemma_ for t in doc if not t.is_space)
                if key and key not in self._labels:
                    self._labels[key] = label
                    patterns.append(doc)
        self.matcher = PhraseMatcher(english().vocab, attr="LEMMA")
        # one pattern id; the label comes from the lemma key of the matched span
        self.matcher.add("PHRASE", patterns)

    def label_of(self, key: str) -> str | None:
        return self._labels.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._labels

    def mentions(self, text: str, *, include_negated: bool = False, dedupe: bool = True,
                 heuristics: bool = True, dedupe_by: str = "key") -> list[Mention]:
        """Mentions of the vocabulary in free text, in order of appearance; with `dedupe`, the first
        of each lemma key (`dedupe_by="key"`) or of each label (`"label"`: one object, one mention)."""
        from spacy.util import filter_spans

        if not text or not text.strip():
            return []
        doc = analyse(text)
        with _NLP_LOCK:
            matches = self.matcher(doc)
        spans = filter_spans([doc[s:e] for _, s, e in matches])
        out: list[Mention] = []
        seen: set[str] = set()
        for span in spans:
            key = " ".join(t.lemma_ for t in span)
            label = self._labels.get(key)
            if label is None or label == IGNORE:
                continue
            if heuristics and not _is_object_use(doc, span):
                continue
            negated = _negated(doc, span.start)
            if negated and not include_negated:
                continue
            ident = label if dedupe_by == "label" else key
            if dedupe and ident in seen:
                continue
            seen.add(ident)
            out.append(Mention(span.text, key, label, span.start_char, span.end_char, negated))
        return out

    def phrase_label(self, phrase: str) -> tuple[str, str] | None:
        """(lemma key, label) of a short noun phrase (an LLM-extracted object name): the whole
        phrase if it is in the vocabulary, else its longest vocabulary suffix (the head noun:
        "wooden park bench" → bench), else the same for the part before a preposition
        ("cup of coffee" → cup). None when nothing matches or the phrase is IGNORE."""
        words = [t.lemma_ for t in analyse(phrase) if not t.is_space and not t.is_punct]
        while words and (words[0] in _DETERMINERS or words[0].isdigit() or words[0] in _NUMBER_WORDS
                         or words[0] == "of"):
            words = words[1:]
        if not words:
            return None
        candidates = [words]
        for prep in ("of", "with", "on", "in", "at", "for", "from", "near", "by"):
            if prep in words[1:]:
                candidates.append(words[:words.index(prep, 1)])
        for cand in candidates:
            for i in range(len(cand)):
                key = " ".join(cand[i:])
                label = self._labels.get(key)
                if label == IGNORE:
                    return None
                if label is not None:
                    return key, label
        return None


_NUMBER_WORDS = frozenset({"two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                           "several", "many", "few", "multiple", "various", "numerous", "couple",
                           "group", "pair", "any", "other", "more"})


def _is_object_use(doc, span) -> bool:
    """Cheap part-of-speech stand-ins: colour "orange", verbs after pronouns/modals, modal "can"."""
    first = span[0]
    prev = doc[span.start - 1].lower_ if span.start > 0 else ""
    nxt = doc[span.end] if span.end < len(doc) else None
    if len(span) == 1 and first.lower_ in _NEEDS_DETERMINER:
        return prev in _DETERMINERS
    if len(span) == 1 and prev in _VERB_CONTEXT:
        return False
    if len(span) == 1 and first.lower_ in _COLOUR_WORDS:  # singular "orange" only
        if prev in _COPULAS:
            return False
        if nxt is not None:
            if nxt.text == "-":
                return False
            if nxt.lower_ in ("and", "or", ",", "/") and span.end + 1 < len(doc) \
                    and doc[span.end + 1].lower_ in _COLOURS:
                return False
            if nxt.is_alpha and not nxt.is_stop and nxt.lower_ not in _FRUIT_FOLLOWERS:
                return False
    return True


def _negated(doc, start: int) -> bool:
    for i in range(start - 1, max(-1, start - 1 - _NEGATION_WINDOW), -1):
        word = doc[i].lower_
        if word in _CLAUSE_BREAKS:
            return False
        if word in NEGATORS:
            return True
    return False


# -- the COCO vocabulary ---------------------------------------------------------------------------
def _coco_phrases() -> dict[str, str]:
    phrases: dict[str, str] = {}
    for phrase in IGNORED_PHRASES:
        phrases[phrase] = IGNORE
    for sport in _SPORTS:
        for place in _SPORT_PLACES:
            phrases[f"{sport} {place}"] = IGNORE
        phrases[f"{sport} player"] = "person"
        phrases[f"{sport} fan"] = "person"
    for animal in _ANIMALS:
        for modifier in _ANIMAL_MODIFIERS:
            phrases[f"{modifier} {animal}"] = animal
    phrases["passenger train"] = "train"
    phrases["passenger jet"] = "airplane"
    for cls, synonyms in SYNONYMS.items():
        for synonym in synonyms:
            phrases.setdefault(synonym, cls)
    return phrases


@functools.lru_cache(maxsize=1)
def coco_vocabulary() -> PhraseVocabulary:
    """The COCO synonym table as a PhraseVocabulary (built once, ~0.5 s)."""
    return PhraseVocabulary(_coco_phrases())


def extract_coco_mentions(text: str, *, include_negated: bool = False, dedupe: bool = True) -> list[Mention]:
    """COCO object mentions in free text (label = canonical class), in order, de-duplicated by class:
    "dog" and "dogs", "dog" and "puppy", "toilet" and "toilet seat" are one mention each (one object)."""
    return coco_vocabulary().mentions(text, include_negated=include_negated, dedupe=dedupe, dedupe_by="label")


def extract_coco_objects(text: str) -> list[str]:
    """Surface strings of the (non-negated, de-duplicated) COCO object mentions in `text`."""
    return [m.text for m in extract_coco_mentions(text)]


def coco_classes_in(text: str) -> list[str]:
    """Distinct canonical classes mentioned (non-negated) in `text`, in order of first mention."""
    return list(dict.fromkeys(m.label for m in extract_coco_mentions(text)))


def coco_class(phrase: str) -> str | None:
    """Canonical class of one object name (e.g. from the LLM judge's list), or None: the whole
    phrase, else its head noun ("park bench" → bench, "dog leash" → None)."""
    hit = coco_vocabulary().phrase_label(phrase)
    return hit[1] if hit else None


def coco_phrase_mentions(phrases: Iterable[str]) -> list[tuple[str, str, str]]:
    """(phrase, lemma key, class) for the COCO objects in a list of extracted object names: each
    name is split on "and" / "or" / "," / "&", mapped with `coco_class`'s rules, and the results
    de-duplicated by class in order (unknown names dropped; "baby elephant" + "adult elephant" is one)."""
    out: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    vocab = coco_vocabulary()
    for phrase in phrases:
        if not isinstance(phrase, str):
            continue
        for part in re.split(r",|&|\band\b|\bor\b|/", phrase.lower()):
            part = part.strip()
            if not part:
                continue
            hit = vocab.phrase_label(part)
            if hit and hit[1] not in seen:
                seen.add(hit[1])
                out.append((part, hit[0], hit[1]))
    return out


def canonical_class(name: str) -> str | None:
    """A COCO category name (as in instances_*.json) or synonym → canonical class."""
    name = name.strip().lower()
    if name in SYNONYMS:
        return name
    return coco_class(name)
