"""AMBER: LLM-free hallucination metrics, generative (CHAIR, Cover, Hal, Cog) and discriminative
(accuracy, precision, recall, F1), from AMBER's own annotation files (docs/method.md §8).

    from rlaifv_core.evals.amber import run_amber
    record = run_amber("data/annotations.json", responses="amber_answers.json",
                       relation="data/relation.json", safe_words="data/safe_words.txt")
    # or: run_amber(..., queries="data/query/query_all.json", image_root="AMBER/image", backend=policy)

Files (AMBER's format, user-supplied): queries `[{id, image, query}]`; annotations
`[{id, type: "generative", truth: [...], hallu: [...]} | {id, type: "discriminative-…", truth: "yes"|"no"}]`;
relation.json (object word → associated words); safe_words.txt; responses `[{id, response}]`.

Generative, per response: the object words are found by lemma matching against AMBER's own
vocabulary (relation keys and values ∪ the annotated truth/hallu words) with coco.py's
PhraseVocabulary (spaCy blank English + lookup lemmas; the original used NLTK's tagger and
WordNet). Each occurrence is a mention (as in the original, repeats count). A mention is
- safe when it is a global safe word (counted, never hallucinated);
- correct when it is a truth word or associated with one: it covers that truth object (the
  object itself if it is the word, else the first truth object associated with it);
- otherwise hallucinated; if it is a hallu word (or associated with one) it also covers that
  "hallucinatory target" object (Cog).
CHAIR = hallucinated mentions / mentions; Cover = covered truth objects / truth objects;
Hal = share of responses with ≥ 1 hallucinated mention; Cog = covered hallu objects / hallu
objects. Differences from the original: duplicate truth/hallu entries are counted once; negated
mentions ("there is no dog") are skipped by default; the original's word-vector similarity
fallback (spaCy en_core_web_lg, threshold 0.8) is not available offline and is left out.

Discriminative: the answer is yes/no by its first word (anything else = unparsed: counted wrong,
never as a "no"); "no" is the positive class, as in the original: precision = correct "no" /
answered "no", recall = correct "no" / truth "no", F1 exact (the original rounded first and added
1e-4). Per dimension: existence, attribute (state, number, action), relation.
AMBER score = (1 − CHAIR + F1) / 2.
Record: `metrics` (flat: chair, cover, hal, cog, accuracy, precision, recall, f1,
<dimension>_<metric>, amber_score), `generative` and `discriminative` (counts per part).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..backends.base import Backend, GenerationSettings, VisualPrompt
from .coco import PhraseVocabulary, lemma_key
from .common import EVAL_SETTINGS, generated_record, given_record, load_image, read_rows

DIMENSIONS = {
    "discriminative-hallucination": "existence",
    "discriminative-attribute-state": "attribute",
    "discriminative-attribute-number": "attribute",
    "discriminative-attribute-action": "attribute",
    "discriminative-relation": "relation",
}


def load_relation(path: str | os.PathLike) -> dict[str, list[str]]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {str(k).lower(): [str(v).lower() for v in vs] for k, vs in data.items()}


def load_safe_words(path: str | os.PathLike) -> set[str]:
    return {line.strip().lower() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()}


def load_annotations(path: str | os.PathLike) -> dict[int, dict]:
    return {int(row["id"]): row for row in read_rows(path)}


class AmberVocabulary:
    """AMBER's object words as lemma keys, with associations, for one annotation set."""

    def __init__(self, annotations: Mapping[int, dict], relation: Mapping[str, Sequence[str]] | None = None,
                 safe_words: Iterable[str] = ()):
        relation = {k.lower(): [v.lower() for v in vs] for k, vs in (relation or {}).items()}
        words: dict[str, str] = {}
        for key, values in relation.items():
            words.setdefault(key, key)
            for value in values:
                words.setdefault(value, value)
        for row in annotations.values():
            if row.get("type") == "generative":
                for word in list(row.get("truth", [])) + list(row.get("hallu", [])):
                    words.setdefault(str(word).lower(), str(word).lower())
        for word in safe_words:
            words.setdefault(word.lower(), word.lower())
        self.matcher = PhraseVocabulary(words)
        self.key = {w: lemma_key(w) for w in words}
        self.relation = {self.key[k]: [self.key[v] for v in vs] for k, vs in relation.items()}
        self.safe = {self.key[w.lower()] for w in safe_words}

    def keys(self, words: Iterable[str]) -> list[str]:
        """Lemma keys of annotation words, de-duplicated in order."""
        return list(dict.fromkeys(self.key.get(str(w).lower()) or lemma_key(str(w)) for w in words))

    def mentions(self, text: str, include_negated: bool = False) -> list[str]:
        """Lemma keys of the vocabulary words mentioned, every occurrence ("dogs" → key of "dog")."""
        found = self.matcher.mentions(text, include_negated=include_negated, dedupe=False)
        return [self.key.get(m.label, m.key) for m in found]


def _covers(word: str, objects: Sequence[str], relation: Mapping[str, Sequence[str]]) -> str | None:
    """The annotated object a mention refers to: itself, else the first whose associations hold it."""
    if word in objects:
        return word
    for obj in objects:
        if word in relation.get(obj, ()):
            return obj
    return None


def generative_item(response: str, truth: Sequence[str], hallu: Sequence[str], vocab: AmberVocabulary,
                    include_negated: bool = False) -> dict:
    mentions = vocab.mentions(response, include_negated=include_negated)
    covered_truth: set[str] = set()
    covered_hallu: set[str] = set()
    hallucinated: list[str] = []
    for word in mentions:
        if word in vocab.safe:
            continue
        obj = _covers(word, truth, vocab.relation)
        if obj is not None:
            covered_truth.add(obj)
            continue
        target = _covers(word, hallu, vocab.relation)
        if target is not None:
            covered_hallu.add(target)
        hallucinated.append(word)
    return {"mentions": mentions, "hallucinated": hallucinated, "covered_truth": sorted(covered_truth),
            "covered_hallu": sorted(covered_hallu), "n_truth": len(truth), "n_hallu": len(hallu)}


def parse_yes_no(response: str) -> str | None:
    words = re.findall(r"[a-z']+", (response or "").lower())
    return words[0] if words and words[0] in ("yes", "no") else None


def _prf(rows: Sequence[tuple[str, str | None]]) -> dict:
    """rows: (truth, predicted or None). 'no' is the positive class."""
    n = len(rows)
    correct = sum(t == p for t, p in rows)
    answered_no = sum(p == "no" for _, p in rows)
    truth_no = sum(t == "no" for t, _ in rows)
    true_no = sum(t == "no" and p == "no" for t, p in rows)
    precision = true_no / answered_no if answered_no else 0.0
    recall = true_no / truth_no if truth_no else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": correct / n if n else None, "precision": precision, "recall": recall, "f1": f1,
            "n": n, "n_unparsed": sum(p is None for _, p in rows)}


def evaluate_amber(annotations: Mapping[int, dict], responses: Mapping[int, str] | Sequence[dict], *,
                   relation: Mapping[str, Sequence[str]] | None = None, safe_words: Iterable[str] = (),
                   include_negated: bool = False, generation: dict | None = None, keep_items: bool = False) -> dict:
    """Score responses ({id: text} or [{id, response}]) against AMBER annotations."""
    if not isinstance(responses, Mapping):
        responses = {int(r["id"]): r.get("response", r.get("text", "")) for r in responses}
    unknown = [i for i in responses if int(i) not in annotations]
    if unknown:
        raise ValueError(f"{len(unknown)} responses have ids without annotation (e.g. {unknown[:3]})")
    safe_words = list(safe_words)
    vocab = AmberVocabulary(annotations, relation, safe_words)

    gen_rows, disc_rows, items = [], {}, []
    for item_id in sorted(int(i) for i in responses):
        ann, response = annotations[item_id], responses[item_id]
        if ann.get("type") == "generative":
            row = generative_item(response, vocab.keys(ann.get("truth", [])), vocab.keys(ann.get("hallu", [])),
                                  vocab, include_negated)
            gen_rows.append(row)
            if keep_items:
                items.append({"id": item_id, "type": "generative", **row})
        else:
            kind = ann.get("type", "discriminative")
            dim = DIMENSIONS.get(kind, "relation" if "relation" in kind else "existence" if "halluc" in kind else "other")
            pred = parse_yes_no(response)
            disc_rows.setdefault((dim, kind), []).append((str(ann["truth"]).lower(), pred))
            if keep_items:
                items.append({"id": item_id, "type": kind, "truth": ann["truth"], "predicted": pred})

    metrics: dict[str, Any] = {}
    if gen_rows:
        mentions = sum(len(r["mentions"]) for r in gen_rows)
        hallucinated = sum(len(r["hallucinated"]) for r in gen_rows)
        truth_total = sum(r["n_truth"] for r in gen_rows)
        hallu_total = sum(r["n_hallu"] for r in gen_rows)
        metrics["generative"] = {
            "chair": hallucinated / mentions if mentions else 0.0,
            "cover": sum(len(r["covered_truth"]) for r in gen_rows) / truth_total if truth_total else None,
            "hal": sum(bool(r["hallucinated"]) for r in gen_rows) / len(gen_rows),
            "cog": sum(len(r["covered_hallu"]) for r in gen_rows) / hallu_total if hallu_total else None,
            "n": len(gen_rows), "mentions": mentions, "hallucinated_mentions": hallucinated,
        }
    if disc_rows:
        everything = [row for rows in disc_rows.values() for row in rows]
        disc = {"all": _prf(everything)}
        for dim in dict.fromkeys(d for d, _ in disc_rows):
            disc[dim] = _prf([row for (d, _), rows in disc_rows.items() if d == dim for row in rows])
        for (dim, kind), rows in disc_rows.items():
            if dim == "attribute":
                disc[kind.rsplit("-", 1)[-1]] = _prf(rows)
        metrics["discriminative"] = disc
    if gen_rows and disc_rows:
        metrics["amber_score"] = (1 - metrics["generative"]["chair"] + metrics["discriminative"]["all"]["f1"]) / 2
    flat: dict[str, float] = {}
    if "generative" in metrics:
        flat.update({k: metrics["generative"][k] for k in ("chair", "cover", "hal", "cog")})
    if "discriminative" in metrics:
        flat.update({k: metrics["discriminative"]["all"][k] for k in ("accuracy", "precision", "recall", "f1")})
        for part, values in metrics["discriminative"].items():
            if part != "all":
                flat.update({f"{part}_{k}": values[k] for k in ("accuracy", "precision", "recall", "f1")})
    if "amber_score" in metrics:
        flat["amber_score"] = metrics["amber_score"]
    record: dict[str, Any] = {
        "benchmark": "amber",
        "metrics": {k: v for k, v in flat.items() if v is not None},  # flat numbers
        "generative": metrics.get("generative"),
        "discriminative": metrics.get("discriminative"),
        "n": len(responses),
        "extractor": "llm-free (spaCy lookup lemmas, AMBER vocabulary)",
        "include_negated": include_negated,
        "judge": "llm-free",
        "generation": generation,
    }
    if keep_items:
        record["items"] = items
    return record


def generate_amber_responses(backend: Backend, queries: Sequence[dict], image_root: str | os.PathLike,
                             settings: GenerationSettings = EVAL_SETTINGS) -> list[dict]:
    """[{id, response}] for AMBER queries ({id, image, query}); images under image_root."""
    prompts = [VisualPrompt(load_image({"image_path": q["image"], "id": q["id"]}, image_root), q["query"])
               for q in queries]
    outputs = backend.generate(prompts, settings)
    return [{"id": int(q["id"]), "response": out[0] if out else ""} for q, out in zip(queries, outputs, strict=True)]


def run_amber(annotations: str | os.PathLike, *, responses: str | os.PathLike | Sequence[dict] | None = None,
              relation: str | os.PathLike | None = None, safe_words: str | os.PathLike | None = None,
              queries: str | os.PathLike | None = None, image_root: str | os.PathLike | None = None,
              backend: Backend | None = None, settings: GenerationSettings = EVAL_SETTINGS,
              include_negated: bool = False, keep_items: bool = False) -> dict:
    anns = load_annotations(annotations)
    if responses is not None:
        rows = read_rows(responses) if isinstance(responses, (str, os.PathLike)) else list(responses)
        generation = given_record(responses)
    elif backend is not None and queries is not None and image_root is not None:
        rows = generate_amber_responses(backend, read_rows(queries), image_root, settings)
        generation = generated_record(backend, settings)
    else:
        raise ValueError("give responses, or a backend with queries and image_root")
    return evaluate_amber(anns, rows, relation=load_relation(relation) if relation else None,
                          safe_words=load_safe_words(safe_words) if safe_words else (),
                          include_negated=include_negated, generation=generation, keep_items=keep_items)
