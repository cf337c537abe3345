"""Object HalBench: CHAIR metrics of detailed descriptions of 300 COCO-2014 images (docs/method.md §8).

    from rlaifv_core.evals.object_halbench import run_object_halbench
    record = run_object_halbench("obj_halbench_300_with_image.jsonl",
                                 instances=["instances_val2014.json", "instances_train2014.json"],
                                 captions=["captions_val2014.json", "captions_train2014.json"],
                                 backend=policy)                    # or answers="answers.jsonl"
    record = run_object_halbench(..., judge=JudgeClient(judge_backend, cache_path=...))  # LLM extraction

Inputs are user-supplied files: the benchmark jsonl (`image_id`, `question`, and `image` as base64
or `image_path`), COCO 2014 instances and captions json files. Ground truth per image = the
instance categories ∪ the COCO classes named in the GT captions (project extractor, coco.py).

Object mentions of an answer come either from the LLM judge (the original extraction prompt,
through JudgeClient; its JSON list mapped to classes with coco.py's table and head-noun fallback;
an unparsable reply is recorded and the answer left out of the metrics) or from the LLM-free
extractor (`extractor="llm-free"`, the default when no judge is given).

Metrics (over the scored answers): chair_s = answers with ≥ 1 hallucinated mention / answers;
chair_s_refine ("Response Hall" /100) = same / answers with ≥ 1 COCO mention; chair_i ("Object
Hall" /100) = hallucinated mentions / mentions (mentions de-duplicated by lemma per answer; two
synonyms of one class count twice); recall = Σ distinct correctly named classes / Σ GT classes;
words_per_answer. Generation settings default to the original: beam 3, temperature 0, 1024 tokens.

The helpers every benchmark shares (rows, images, answer alignment, records) are in common.py.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..backends.base import Backend, GenerationSettings
from .coco import coco_classes_in, coco_phrase_mentions, canonical_class, extract_coco_mentions
from .common import EVAL_SETTINGS, align_answers, generate_answers, generated_record, given_record, read_rows
from .judge import JudgeClient, JudgeRequest, summarise_answers

# The original extraction prompt (eval_gpt_obj_halbench.py), one system-role message. The only
# change: the original asks for an "empty JSON list ()"; it is "[]" here (both are parsed).
EXTRACTION_PROMPT = """You are an expert in image objects extraction according to a question answer pair. We asked an examiner to answer a question about a picture.

[Start of Question]

<image> {question}

[End of Question]

[Start of Examiner's Answer]

{answer}

[End of Examiner's Answer]


Assume that the answer is correct, please identify all visible objects that are directly shown in the image. Please following the instructions in below:

1. You should only mention objects that are explicitly mentioned in the examiner's answer.
2. You should only extract the object names without the attributes of the objects.
3. You should not include the properties of the object, like the color, material, etc. as part of the object name in your result.
4. Make your answer precise. Present the results in a JSON list format: ["object_1", ..., "object_n"].
5. You should return an empty JSON list [] if no visible objects can be found."""

JUDGE_SETTINGS = {"temperature": 0.2, "top_p": 1.0, "max_new_tokens": 512}


def coco_image_id(value: Any) -> int:
    """COCO image id from an int, "391895", or "COCO_val2014_000000391895.jpg"."""
    if isinstance(value, int):
        return value
    digits = re.findall(r"\d+", str(value))
    if not digits:
        raise ValueError(f"not a COCO image id: {value!r}")
    return int(digits[-1])


# -- ground truth -----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _classes_by_image(kind: str, path: str, mtime_ns: int) -> dict[int, frozenset[str]]:
    """image id → COCO classes of one instances or captions file, parsed once per process (every
    checkpoint's evaluation reads the same files; `mtime_ns` re-reads a file that changed)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    table: dict[int, set[str]] = {}
    if kind == "instances":
        names = {c["id"]: c["name"] for c in data.get("categories", [])}
        for ann in data.get("annotations", []):
            cls = canonical_class(names.get(ann["category_id"], ""))
            if cls:
                table.setdefault(ann["image_id"], set()).add(cls)
    else:
        for ann in data.get("annotations", []):
            table.setdefault(ann["image_id"], set()).update(coco_classes_in(ann.get("caption", "")))
    return {image_id: frozenset(classes) for image_id, classes in table.items()}


def load_coco_ground_truth(instances: str | os.PathLike | Iterable[str | os.PathLike] = (),
                           captions: str | os.PathLike | Iterable[str | os.PathLike] = (),
                           image_ids: Iterable[int] | None = None) -> dict[int, set[str]]:
    """image id → canonical COCO classes: instance categories ∪ classes named in the captions."""
    def paths(value):
        if isinstance(value, (str, os.PathLike)):
            return [value]
        return list(value or [])

    wanted = {coco_image_id(i) for i in image_ids} if image_ids is not None else None
    truth: dict[int, set[str]] = {i: set() for i in wanted} if wanted is not None else {}
    for kind, files in (("instances", paths(instances)), ("captions", paths(captions))):
        for path in files:
            table = _classes_by_image(kind, str(Path(path).resolve()), Path(path).stat().st_mtime_ns)
            for image_id, classes in table.items():
                if wanted is None or image_id in wanted:
                    truth.setdefault(image_id, set()).update(classes)
    return truth


# -- judge extraction -------------------------------------------------------------------------------
def parse_object_list(text: str) -> list[str] | None:
    """The judge's JSON list of object names; None when no list can be read. Accepts a bare
    JSON list, a list inside a code fence or after prose (the last line holding '["' in the
    original), a Python-style list, and the "()" / "[]" empty list."""
    if text is None:
        return None
    candidates = [text.strip()]
    fenced = re.findall(r"```(?:json)?\s*(.*?)```", text, flags=re.S)
    candidates += [f.strip() for f in fenced]
    candidates += [line.strip() for line in reversed(text.splitlines()) if "[" in line]
    candidates += re.findall(r"\[[^\[\]]*\]", text)[::-1]
    for cand in candidates:
        if cand in ("()", "[]", "[ ]"):
            return []
        start, end = cand.find("["), cand.rfind("]")
        if start < 0 or end <= start:
            continue
        blob = cand[start:end + 1]
        for loader in (json.loads, ast.literal_eval):
            try:
                value = loader(blob)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return [v.strip() for v in value if v.strip()]
    stripped = text.strip().rstrip(".")
    if stripped.endswith("()") or stripped.lower() in ("none", "empty", "empty list"):
        return []
    return None


def extraction_messages(question: str, answer: str) -> list[dict]:
    return [{"role": "system", "content": EXTRACTION_PROMPT.format(question=question, answer=answer)}]


# -- scoring ------------------------------------------------------------------------------------------
def chair_metrics(truths: Sequence[set[str]], mentions: Sequence[Sequence[tuple[str, str]]],
                  answers: Sequence[str]) -> dict:
    """CHAIR over scored answers. mentions[i] = [(mention key, class), …] (already de-duplicated)."""
    n = len(truths)
    hallucinating = with_mention = total = hallucinated = correct = gt_total = words = 0
    for truth, found, answer in zip(truths, mentions, answers, strict=True):
        wrong = [cls for _, cls in found if cls not in truth]
        hallucinating += bool(wrong)
        with_mention += bool(found)
        total += len(found)
        hallucinated += len(wrong)
        correct += len({cls for _, cls in found if cls in truth})
        gt_total += len(truth)
        words += len(answer.split())
    chair_s_refine = hallucinating / max(with_mention, 1)
    chair_i = hallucinated / max(total, 1)
    return {
        "chair_s": hallucinating / max(n, 1),
        "chair_s_refine": chair_s_refine,
        "chair_i": chair_i,
        "recall": correct / max(gt_total, 1),
        "response_hall": 100 * chair_s_refine,
        "object_hall": 100 * chair_i,
        "words_per_answer": words / max(n, 1),
        "mentions_per_answer": total / max(n, 1),
        "answers": n,
        "answers_with_mention": with_mention,
        "answers_hallucinating": hallucinating,
        "mentions": total,
        "hallucinated_mentions": hallucinated,
    }


def evaluate_object_halbench(items: Sequence[dict], answers: Sequence[str], truth: dict[int, set[str]], *,
                             judge: JudgeClient | None = None, skip_short_words: int = 0,
                             generation: dict | None = None, keep_items: bool = True) -> dict:
    """Score answers (one per item) against the GT classes of each item's image.

    judge=None: LLM-free extraction. With a judge: the original extraction prompt; answers of
    ≤ skip_short_words words skip the judge with an empty list (the original used 3; 0 = never).
    """
    if len(items) != len(answers):
        raise ValueError(f"{len(answers)} answers for {len(items)} items")
    image_ids = [coco_image_id(item["image_id"]) for item in items]
    missing = [i for i in image_ids if i not in truth]
    if missing:
        raise ValueError(f"no COCO ground truth for {len(missing)} images (e.g. {missing[:3]})")

    per_item: list[dict] = []
    found: list[list[tuple[str, str]] | None] = []
    judge_answers = []
    if judge is None:
        for answer in answers:
            found.append([(m.key, m.label) for m in extract_coco_mentions(answer)])
            per_item.append({})
    else:
        requests, slots = [], []
        for i, (item, answer) in enumerate(zip(items, answers)):
            if skip_short_words and len(answer.split()) <= skip_short_words:
                found.append([])
                per_item.append({"judge": "skipped (short answer)"})
                continue
            found.append(None)
            per_item.append({})
            slots.append(i)
            requests.append(JudgeRequest(extraction_messages(item.get("question", ""), answer),
                                         parse_object_list, tag=i, **JUDGE_SETTINGS))
        judge_answers = judge.ask_many(requests)
        for i, reply in zip(slots, judge_answers):
            per_item[i]["judge"] = {"objects": reply.value, "parsed": reply.parsed, "raw": reply.raw,
                                    "attempts": reply.attempts, "errors": reply.errors,
                                    "served_model": reply.served_model}
            if reply.parsed:
                found[i] = [(key, cls) for _, key, cls in coco_phrase_mentions(reply.value)]

    scored = [i for i, f in enumerate(found) if f is not None]
    metrics = chair_metrics([truth[image_ids[i]] for i in scored], [found[i] for i in scored],
                            [answers[i] for i in scored])
    record: dict[str, Any] = {
        "benchmark": "object_halbench",
        "metrics": metrics,
        "n": len(scored),
        "n_items": len(items),
        "n_unparsed": len(items) - len(scored),
        "unparsed_items": [i for i, f in enumerate(found) if f is None],
        "extractor": "llm-judge" if judge is not None else "llm-free",
        "judge": (judge.describe(prompt="object_halbench_extraction", **JUDGE_SETTINGS,
                                 skip_short_words=skip_short_words, **summarise_answers(judge_answers))
                  if judge is not None else "llm-free"),
        "generation": generation,
    }
    if keep_items:
        rows = []
        for i, item in enumerate(items):
            gt = truth[image_ids[i]]
            row = {"image_id": item["image_id"], "question": item.get("question"), "answer": answers[i],
                   "gt": sorted(gt), **per_item[i]}
            if found[i] is not None:
                row["mentions"] = [{"mention": key, "class": cls, "hallucinated": cls not in gt}
                                   for key, cls in found[i]]
            rows.append(row)
        record["items"] = rows
    return record


def run_object_halbench(bench: str | os.PathLike, instances: str | os.PathLike | Iterable = (),
                        captions: str | os.PathLike | Iterable = (), *, backend: Backend | None = None,
                        answers: str | os.PathLike | Sequence[dict] | None = None,
                        judge: JudgeClient | None = None, settings: GenerationSettings = EVAL_SETTINGS,
                        data_root: str | os.PathLike | None = None, limit: int | None = None,
                        skip_short_words: int = 0, keep_items: bool = True) -> dict:
    """Load the benchmark and COCO truth, get answers (generated or read), score them."""
    items = read_rows(bench)[:limit] if limit else read_rows(bench)
    if backend is None and answers is None:
        raise ValueError("give a backend to generate answers or an answers file")
    if backend is not None:
        texts = generate_answers(backend, items, settings, data_root)
        generation = generated_record(backend, settings)
    else:
        rows = read_rows(answers) if isinstance(answers, (str, os.PathLike)) else list(answers)
        keys = {}
        if all("question_id" in it for it in items):
            keys["question_id"] = [it["question_id"] for it in items]
        keys["image_id"] = [it["image_id"] for it in items]
        texts = align_answers(len(items), keys, rows, "object_halbench answers")
        generation = given_record(answers)
    truth = load_coco_ground_truth(instances, captions, [it["image_id"] for it in items])
    return evaluate_object_halbench(items, texts, truth, judge=judge, skip_short_words=skip_short_words,
                                    generation=generation, keep_items=keep_items)
