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

`protocol="rlaifv"` scores as the original does (chair_rlaifv.py: its synonym file, lemmatizer, double
words, both mention-counting paths, answers of ≤ 3 words not sent to the judge, its reply parser; the
extraction prompt from the user's file when given). Every record says `protocol`, and `scoring` names
the judge, the prompt's sha256, the parser and the synonym table. An image whose ground truth is
empty is an error naming the COCO files (never an all-hallucinated score).

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
from .original import Template, judge_comparability, original_file, read_template

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


def check_truth(truth: dict[int, set[str]], image_ids: Iterable, files: Sequence) -> None:
    """Every benchmark image has a non-empty ground truth, else ValueError naming the files read."""
    empty = sorted({coco_image_id(i) for i in image_ids if not truth.get(coco_image_id(i))})
    if empty:
        shown = ", ".join(str(f) for f in files) or "no COCO files given"
        raise ValueError(f"no COCO ground truth for {len(empty)} benchmark images (e.g. {empty[:5]}) in {shown}: "
                         f"wrong files (val2014 and train2014 instances/captions?) or wrong image ids")


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
            if not Path(path).is_file():
                raise FileNotFoundError(f"{path}: no such COCO {kind} file")
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


def extraction_messages(question: str, answer: str, template: Template | None = None) -> list[dict]:
    """One system message: the project's copy of the original prompt, or a user template filled as the
    original fills it ("{question}" then "{answer}" replaced)."""
    if template is None:
        return [{"role": "system", "content": EXTRACTION_PROMPT.format(question=question, answer=answer)}]
    return [{"role": "system", "content": template.text.replace("{question}", question).replace("{answer}", answer)}]


def _scoring(protocol: str, judge: JudgeClient | None, template: Template | None, parser: str, chair,
             skip_short_words: int) -> dict:
    """What a score was computed with: protocol, judge identity, prompt hash, parser, synonym table."""
    import hashlib

    out: dict[str, Any] = {"protocol": protocol, "skip_short_words": skip_short_words}
    if judge is None:
        out.update(judge="llm-free", extractor="free text")
    else:
        text = template.text if template is not None else EXTRACTION_PROMPT
        out.update(judge=judge.identity, extractor="llm judge", parser=parser,
                   prompt_source=template.source if template is not None else "project (the original's, [] for ())",
                   prompt_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest())
    if chair is not None:
        from .chair_rlaifv import tagger_name, tokenizer_name

        out.update(synonyms=chair.source, tokenizer=tokenizer_name(), lemmatizer="nltk WordNetLemmatizer",
                   judge_name_tagger=tagger_name() if judge is not None else None,
                   comparability=judge_comparability("object_halbench", judge.identity if judge else None)
                   if judge is not None else "free-text path: no judge")
    else:
        out.update(synonyms="project (coco_classes.py)", dedupe="by class")
    return out


# -- scoring ------------------------------------------------------------------------------------------
def chair_metrics(truths: Sequence[set[str]], mentions: Sequence[Sequence[tuple[str, str]]],
                  answers: Sequence[str], word_split: str | None = None) -> dict:
    """CHAIR over scored answers. mentions[i] = [(mention key, class), …], each one counted (de-duplicated
    as the protocol does it). Words per answer: `answer.split(word_split)` (the original: split(" "))."""
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
        words += len(answer.strip().split(word_split) if word_split else answer.split())
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
                             judge: JudgeClient | None = None, skip_short_words: int | None = None,
                             generation: dict | None = None, keep_items: bool = True, protocol: str = "project",
                             chair=None, extraction_prompt: Template | None = None) -> dict:
    """Score answers (one per item) against the GT classes of each item's image.

    judge=None: LLM-free extraction. With a judge: the original extraction prompt; answers of
    ≤ skip_short_words words skip the judge with an empty list (default: 0 = never under protocol
    project, 3 under rlaifv, as the original). protocol="rlaifv" needs `chair` (chair_rlaifv.OriginalChair).
    """
    if len(items) != len(answers):
        raise ValueError(f"{len(answers)} answers for {len(items)} items")
    if protocol not in ("project", "rlaifv"):
        raise ValueError(f"unknown protocol {protocol!r} (project, rlaifv)")
    rlaifv = protocol == "rlaifv"
    if rlaifv and chair is None:
        raise ValueError("protocol rlaifv needs the original's synonyms (chair_rlaifv.OriginalChair)")
    if skip_short_words is None:
        skip_short_words = 3 if rlaifv else 0
    if rlaifv:  # the original's answer loader strips "Assistant:"
        answers = [a.replace("Assistant:", "").strip() for a in answers]
    image_ids = [coco_image_id(item["image_id"]) for item in items]
    missing = [i for i in image_ids if i not in truth]
    if missing:
        raise ValueError(f"no COCO ground truth for {len(missing)} images (e.g. {missing[:3]})")
    if rlaifv:
        from .chair_rlaifv import parse_object_list_original

        parse, parser_name = parse_object_list_original, "rlaifv (```json block, else the last line with '[\"')"
    else:
        parse, parser_name = parse_object_list, "project (JSON or Python list, [] and () empty)"
    template = extraction_prompt

    per_item: list[dict] = []
    found: list[list[tuple[str, str]] | None] = []
    judge_answers = []
    if judge is None:
        for answer in answers:
            found.append(chair.caption_words(answer) if rlaifv
                         else [(m.key, m.label) for m in extract_coco_mentions(answer)])
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
            requests.append(JudgeRequest(extraction_messages(item.get("question", ""), answer, template),
                                         parse, tag=i, **JUDGE_SETTINGS))
        judge_answers = judge.ask_many(requests)
        for i, reply in zip(slots, judge_answers):
            per_item[i]["judge"] = {"objects": reply.value, "parsed": reply.parsed, "raw": reply.raw,
                                    "attempts": reply.attempts, "errors": reply.errors,
                                    "served_model": reply.served_model}
            if reply.parsed:
                found[i] = (chair.judge_words(reply.value) if rlaifv
                            else [(key, cls) for _, key, cls in coco_phrase_mentions(reply.value)])

    scored = [i for i, f in enumerate(found) if f is not None]
    metrics = chair_metrics([truth[image_ids[i]] for i in scored], [found[i] for i in scored],
                            [answers[i] for i in scored], word_split=" " if rlaifv else None)
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
        "protocol": protocol,
        "scoring": _scoring(protocol, judge, template, parser_name, chair, skip_short_words),
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
                        skip_short_words: int | None = None, keep_items: bool = True, protocol: str = "project",
                        original=None) -> dict:
    """Load the benchmark and COCO truth (an error before any model runs when a file is missing or an
    image has no truth), get answers (generated or read), score them. protocol="rlaifv" reads the
    original's files through `original` (eval.data: rlaifv_repo / coco_synonyms / objhal_extraction_prompt)."""
    items = read_rows(bench)[:limit] if limit else read_rows(bench)
    if backend is None and answers is None:
        raise ValueError("give a backend to generate answers or an answers file")
    files = [*([instances] if isinstance(instances, (str, os.PathLike)) else list(instances or [])),
             *([captions] if isinstance(captions, (str, os.PathLike)) else list(captions or []))]
    chair, template = None, None
    image_ids = [it["image_id"] for it in items]
    if protocol == "rlaifv":
        from .chair_rlaifv import OriginalChair

        chair = OriginalChair.from_file(original_file(original, "coco_synonyms"))
        if judge is not None and (getattr(original, "objhal_extraction_prompt", None)
                                  or getattr(original, "rlaifv_repo", None)):
            template = read_template(original_file(original, "objhal_extraction_prompt"), "objhal_extraction_prompt")
        for path in files:
            if not Path(path).is_file():
                raise FileNotFoundError(f"{path}: no such COCO file")
        inst = [instances] if isinstance(instances, (str, os.PathLike)) else list(instances or [])
        caps = [captions] if isinstance(captions, (str, os.PathLike)) else list(captions or [])
        truth = chair.ground_truth(inst, caps, [coco_image_id(i) for i in image_ids])
    else:
        truth = load_coco_ground_truth(instances, captions, image_ids)
    check_truth(truth, image_ids, files)
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
    return evaluate_object_halbench(items, texts, truth, judge=judge, skip_short_words=skip_short_words,
                                    generation=generation, keep_items=keep_items, protocol=protocol,
                                    chair=chair, extraction_prompt=template)
