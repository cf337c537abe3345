"""Object HalBench's object extraction as the original RLAIF-V does it (protocol rlaifv), rule for rule.

    from rlaifv_core.evals.chair_rlaifv import OriginalChair
    chair = OriginalChair.from_file("RLAIF-V/eval/data/synonyms_refine.txt")
    chair.caption_words("Two dogs and a toilet seat.")     # [('dog', 'dog'), ('toilet', 'toilet')]
    chair.judge_words(["dogs", "toilet seat", "wooden bench"])
    chair.ground_truth(["instances_val2014.json"], ["captions_val2014.json"], image_ids=[391895])

The rules of the original's `CHAIR` class (eval/eval_gpt_obj_halbench.py), reproduced here:
- synonyms: one line per class, `class, synonym, synonym, …` split on ", "; every entry maps to the
  line's first entry. Double words: every entry of ≥ 2 words plus "home plate", "train track";
  "baby X" / "adult X" → X for the animals, "passenger jet/train" → jet/train, "bow tie" → tie,
  "toilet seat" → toilet, "wine glas" → wine glass.
- free text (`caption_words`, also the captions' ground truth): lower-case, NLTK `word_tokenize`, each
  token lemmatised by NLTK's WordNet lemmatizer as a noun ("men" stays "men"), adjacent pairs found in
  the double words replaced, "seat" dropped when "toilet" is there too, then every token that is a
  synonym is a mention, **every occurrence counted** (no de-duplication).
- judge lists (`judge_words`): each name as "a <name>": if its lemmas contain double words, those;
  else its runs of nouns, lemmatised; the refined strings de-duplicated (so "dog" + "dogs" is one,
  "dog" + "puppy" two), the toilet/seat rule, then the synonyms.
Two parts of the original need resources that cannot be downloaded here, and are stood in for (see
docs/method.md §11): the noun tagging of judge names (the original: spaCy `en_core_web_trf`; used when
installed, else a WordNet rule: a token is a noun if WordNet knows it as one and it is no stop word, a
word with an adjective sense before another noun being an adjective), and Punkt's English model inside
`word_tokenize` (used when installed, else Punkt without its abbreviation list).
WordNet itself is the real one: NLTK's `wordnet` corpus if installed, else Debian's `wordnet-base` and
`wordnet-sense-index` files (/usr/share/wordnet), copied into NLTK's corpus layout under the cache.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Iterable

from ..store import cache_root

_ANIMALS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub")
_WORDNET_FILES = ("data.noun", "index.noun", "noun.exc", "data.verb", "index.verb", "verb.exc", "data.adj",
                  "index.adj", "adj.exc", "data.adv", "index.adv", "adv.exc", "index.sense")
# WordNet 3.0's lexicographer files (the `lexnames` file NLTK reads; Debian ships it only as a man page).
_LEXNAMES = ("adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
             "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
             "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
             "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
             "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
             "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather "
             "adj.ppl").split()
_LOCK = threading.Lock()


def _nltk():
    try:
        import nltk
    except ImportError as exc:  # pragma: no cover - nltk is a dependency of the rlaifv-eval and test extras
        raise RuntimeError("protocol rlaifv needs NLTK: pip install 'rlaifv-flows[rlaifv-eval]'") from exc
    return nltk


@functools.lru_cache(maxsize=1)
def ensure_wordnet() -> str:
    """Make NLTK's `wordnet` corpus loadable; returns where it comes from."""
    nltk = _nltk()
    try:
        nltk.data.find("corpora/wordnet")
        return "nltk_data"
    except LookupError:
        pass
    source = Path(os.environ.get("RLAIFV_WORDNET_DIR", "/usr/share/wordnet"))
    missing = [f for f in _WORDNET_FILES if not (source / f).is_file()]
    if missing:
        raise RuntimeError(f"protocol rlaifv lemmatises with NLTK's WordNet: {source} lacks {', '.join(missing)}; "
                           f"install Debian's wordnet-base and wordnet-sense-index (apt-get install wordnet-base "
                           f"wordnet-sense-index), NLTK's wordnet corpus, or set RLAIFV_WORDNET_DIR")
    root = cache_root() / "nltk_data"
    dest = root / "corpora" / "wordnet"
    dest.mkdir(parents=True, exist_ok=True)
    for name in _WORDNET_FILES:  # copies: NLTK refuses symlinks and hard links out of its corpus root
        target = dest / name
        if not target.is_file() or target.stat().st_size != (source / name).stat().st_size:
            shutil.copyfile(source / name, target)
    lexnames = "".join(f"{i:02d}\t{n}\t{ {'adj': 3, 'adv': 4, 'noun': 1, 'verb': 2}[n.split('.')[0]] }\n"
                       for i, n in enumerate(_LEXNAMES))
    if not (dest / "lexnames").is_file() or (dest / "lexnames").read_text() != lexnames:
        (dest / "lexnames").write_text(lexnames)
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    return str(source)


@functools.lru_cache(maxsize=1)
def _lemmatizer():
    ensure_wordnet()
    from nltk.stem import WordNetLemmatizer

    return WordNetLemmatizer()


def lemmatize(word: str) -> str:
    """NLTK's WordNet lemmatizer with its default part of speech (noun), as the original calls it."""
    with _LOCK:
        return _lemmatizer().lemmatize(word)


@functools.lru_cache(maxsize=1)
def tokenizer_name() -> str:
    nltk = _nltk()
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return "nltk.word_tokenize"
    except LookupError:
        return "punkt (no English model) + NLTKWordTokenizer"


def word_tokenize(text: str) -> list[str]:
    """NLTK's word_tokenize; without the downloadable Punkt English model, the same sentence split by an
    untrained Punkt tokenizer, then the same NLTKWordTokenizer per sentence."""
    nltk = _nltk()
    if tokenizer_name() == "nltk.word_tokenize":
        return nltk.word_tokenize(text)
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    words = NLTKWordTokenizer()
    return [token for sentence in PunktSentenceTokenizer().tokenize(text) for token in words.tokenize(sentence)]


@functools.lru_cache(maxsize=1)
def _spacy_trf():
    try:
        import spacy

        return spacy.load("en_core_web_trf")
    except Exception:  # noqa: BLE001 - not installed: the WordNet stand-in
        return None


def tagger_name() -> str:
    return "spacy en_core_web_trf" if _spacy_trf() is not None else "wordnet noun rule"


def _wordnet_tags(text: str) -> list[tuple[str, bool]]:
    """(lemma, is_noun) per token: the stand-in for en_core_web_trf's lemmas and NN* tags."""
    ensure_wordnet()
    from nltk.corpus import wordnet as wn
    from spacy.lang.en.stop_words import STOP_WORDS

    tokens = [t.lower() for t in word_tokenize(text)]
    with _LOCK:
        lemmas = [_lemmatizer().lemmatize(t) for t in tokens]
        nounish = [t.isalpha() and t not in STOP_WORDS and bool(wn.synsets(lemma, "n"))
                   for t, lemma in zip(tokens, lemmas)]
        adjective = [bool(wn.synsets(t, "a") or wn.synsets(t, "s")) for t in tokens]
    tags = []
    for i, lemma in enumerate(lemmas):
        prenominal = i + 1 < len(lemmas) and nounish[i + 1]
        tags.append((lemma, nounish[i] and not (adjective[i] and prenominal)))
    return tags


def _tags(text: str) -> list[tuple[str, bool]]:
    nlp = _spacy_trf()
    if nlp is None:
        return _wordnet_tags(text)
    return [(t.lemma_, t.tag_ in ("NNP", "NNPS", "NN", "NNS")) for t in nlp(text)]


class OriginalChair:
    """The original's synonym tables and both extraction paths (see the module docstring)."""

    def __init__(self, lines: Iterable[str], source: str = "<synonyms>"):
        self.source = source
        self.objects: set[str] = set()
        self.inverse: dict[str, str] = {}
        for line in lines:
            if not line.strip():
                continue
            entries = [s.strip() for s in line.strip().split(", ")]
            self.objects.update(entries)
            for s in entries:
                self.inverse[s] = entries[0]
        if not self.inverse:
            raise ValueError(f"{source}: no synonyms (expected lines like 'person, girl, boy, man')")
        doubles = [w for w in self.inverse if len(w.strip().split(" ")) >= 2] + ["home plate", "train track"]
        self.double = {w: w for w in doubles}
        for animal in _ANIMALS:
            self.double[f"baby {animal}"] = animal
            self.double[f"adult {animal}"] = animal
        for vehicle in ("jet", "train"):
            self.double[f"passenger {vehicle}"] = vehicle
        self.double.update({"bow tie": "tie", "toilet seat": "toilet", "wine glas": "wine glass"})

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "OriginalChair":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such synonyms file (eval.data.coco_synonyms, synonyms_refine.txt format)")
        return cls(path.read_text(encoding="utf-8").splitlines(), str(path))

    def _replace_doubles(self, words: list[str], keep_singles: bool) -> list[str]:
        out, i = [], 0
        while i < len(words):
            pair = " ".join(words[i:i + 2])
            if pair in self.double:
                out.append(self.double[pair])
                i += 2
            else:
                if keep_singles:
                    out.append(words[i])
                i += 1
        return out

    def _to_coco(self, words: list[str]) -> list[tuple[str, str]]:
        if "toilet" in words and "seat" in words:
            words = [w for w in words if w != "seat"]
        return [(w, self.inverse[w]) for w in words if w in self.objects]

    def caption_words(self, caption: str) -> list[tuple[str, str]]:
        """(word, class) of every synonym occurrence in free text (the original's caption_to_words)."""
        words = [lemmatize(w) for w in word_tokenize(caption.lower())]
        return self._to_coco(self._replace_doubles(words, keep_singles=True))

    def refine_judge_objects(self, objects: Iterable) -> list[str]:
        """The original's get_pred_objs_match: double words, else noun runs; unique, in order."""
        refined: list[str] = []
        for text in objects:
            tags = _tags(f"a {text}")
            doubles = self._replace_doubles([lemma for lemma, _ in tags], keep_singles=False)
            if doubles:
                refined += doubles
                continue
            run: list[str] = []
            for lemma, noun in tags + [("", False)]:
                if noun:
                    run.append(lemma)
                elif run:
                    refined.append(" ".join(run).strip())
                    run = []
        return list(dict.fromkeys(refined))

    def judge_words(self, objects: Iterable) -> list[tuple[str, str]]:
        """(word, class) of a judge's object list (refined, unique strings; two synonyms count twice)."""
        return self._to_coco(self.refine_judge_objects(objects))

    def ground_truth(self, instances: Iterable[str | os.PathLike], captions: Iterable[str | os.PathLike],
                     image_ids: Iterable[int]) -> dict[int, set[str]]:
        """image id -> classes: instance categories (through the synonyms) ∪ caption_words of the captions."""
        truth: dict[int, set[str]] = {int(i): set() for i in image_ids}
        for path in instances:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            names = {c["id"]: c["name"] for c in data.get("categories", [])}
            for ann in data.get("annotations", []):
                if ann["image_id"] in truth:
                    name = names.get(ann["category_id"])
                    if name not in self.inverse:
                        raise ValueError(f"{path}: category {name!r} (id {ann['category_id']}) is not in the "
                                         f"synonyms file {self.source}")
                    truth[ann["image_id"]].add(self.inverse[name])
        for path in captions:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            for ann in data.get("annotations", []):
                if ann["image_id"] in truth:
                    truth[ann["image_id"]].update(cls for _, cls in self.caption_words(ann.get("caption", "")))
        return truth


def parse_object_list_original(content: str) -> list[str] | None:
    """The original's parse_object_list: a ```json fenced block, else the last line when the reply contains
    '["'; anything else (also "[]" and "()") is unparsable, and the original asks again."""
    import re

    if content is None:
        return None
    match = re.search(r"```json\n(.*?)\n```", content, re.DOTALL)
    try:
        if match:
            value = json.loads(match.group(1))
        elif '["' in content:
            value = json.loads(content.strip().split("\n")[-1])
        else:
            return None
    except (ValueError, TypeError):
        if match and '["' in content:
            try:
                value = json.loads(content.strip().split("\n")[-1])
            except (ValueError, TypeError):
                return None
        else:
            return None
    return [str(v) for v in value] if isinstance(value, list) else None
