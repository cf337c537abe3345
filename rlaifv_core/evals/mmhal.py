"""MMHal-Bench: 96 questions scored 0–6 by an LLM judge (docs/method.md §8).

    from rlaifv_core.evals.mmhal import run_mmhal
    record = run_mmhal("mmhal-bench_with_image.jsonl", judge=JudgeClient(judge_backend, cache_path=...),
                       backend=policy)              # or answers="answers.jsonl"; or model_answer filled in

Questions come from a user-supplied file in the answer-template format (`question_type`,
`question_topic`, `image_id`, `image_src`, `image_content` (list), `question`, `gt_answer`,
`model_answer`; plus `image` base64 / `image_path` when answers are to be generated). Answers
are merged by question id when both sides carry one, by position only when the counts match,
otherwise an error (the original merged blindly by position).

The judge sees the image contents, the question, the human answer and the model's answer (never
the image), with the 0–6 rubric (written here from the standard MMHal-Bench description). The
score is the unique s ∈ 0..6 such that "rating: s" appears in the lower-cased reply; no match or
several different matches = unparsed: recorded, retried (bounded), counted, excluded from means
(the original turned it into a 0). Metrics: mean score, hallucination rate (share < 3, as a
fraction and a percent), per-type means, informativeness = mean(s − 3 if s ≥ 3 else s) / 3 · 100.
Record: `metrics` (flat numbers, `score_<type>` per type), `per_type` (means and counts),
`n`, `n_unparsed`, `unparsed_items`, `judge` (identity + settings + counts), `generation`, `items`.

`protocol="rlaifv"`: the judge template is the user's (the original's eval_gpt_mmhal.py or a text file),
every reply is kept as the original keeps it (no retry for an unparsable rating), and the headline
numbers use the original's parser (`parse_rating_rlaifv`: "rating: s" as a substring for s = 0..6,
exactly one found, else 0) with question types by index mod 8. Under either protocol the other
parser's aggregates on the same replies are in `parsers`, and in `metrics` (suffix `_strict_parser` /
`_rlaifv_parser`) when they differ. `protocol` and `scoring` (judge, prompt sha256, parser) are recorded.
"""

from __future__ import annotations

import os
import re
import statistics
from typing import Any, Sequence

from ..backends.base import Backend, GenerationSettings
from .common import EVAL_SETTINGS, align_answers, generate_answers, generated_record, given_record, read_rows
from .judge import JudgeClient, JudgeRequest, summarise_answers
from .original import Template, judge_comparability, original_file, read_template

#: The order of question types in the 96-item file (type of item i = TYPES[i % 8]).
QUESTION_TYPES = ("attribute", "adversarial", "comparison", "counting", "relation", "environment",
                  "holistic", "other")

JUDGE_SETTINGS = {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 512}

RUBRIC = """You are an impartial and careful judge. Evaluate the response that a Large Multimodal Model (LMM) gave to a user's question about an image. Judge two things: how informative the response is, and whether it contains hallucination. A hallucination is any statement that is not supported by the image or by the conversation: a wrong or invented object, attribute, count, position, action, text, emotion or any other detail that the image does not show.

You cannot see the image. Instead you get a list of the image contents, the question, and an answer written by a human who saw the image. Treat the human answer as correct but possibly incomplete: it may omit details that are really in the image, so do not call a detail hallucinated only because the human answer leaves it out, unless it contradicts the image contents or the human answer. Detailed analysis and sound reasoning by the LMM deserve credit.

Examples:

### Example 1
- Image Contents: Dog, Frisbee, Lawn
- Question: What is the dog holding?
- Standard Human-Generated Answer: The dog is holding a red frisbee in its mouth.
- LMM Response to Evaluate: The dog is holding a tennis ball.
- Analysis: The response names a tennis ball, which is not in the image; the dog holds a frisbee.
- Hallucination: Yes.

### Example 2
- Image Contents: Bus, Street, Person
- Question: What color is the bus?
- Standard Human-Generated Answer: The bus is yellow.
- LMM Response to Evaluate: The bus is yellow, which is typical of school buses in North America, and it appears to be parked at the side of the street.
- Analysis: The colour is right and the extra remarks are reasonable inferences that do not contradict the image.
- Hallucination: No.

### Example 3
- Image Contents: Apple, Banana, Table
- Question: How many apples are on the table?
- Standard Human-Generated Answer: There are three apples on the table.
- LMM Response to Evaluate: There are two apples and a banana on the table.
- Analysis: The count of apples is wrong (two instead of three), so the response contains a hallucination even though the banana is real.
- Hallucination: Yes.

### Example 4
- Image Contents: Mountain, Lake, Tree
- Question: Is this a good place for swimming?
- Standard Human-Generated Answer: The lake looks calm, so it may be suitable for swimming, but the water could be cold.
- LMM Response to Evaluate: I cannot tell from the image.
- Analysis: The response makes no false claim, but it gives the user no useful information.
- Hallucination: No.

### Example 5
- Image Contents: Cat, Sofa, Window
- Question: Where is the cat sitting?
- Standard Human-Generated Answer: The cat is sitting on the sofa.
- LMM Response to Evaluate: The cat is sitting on the windowsill, looking at the birds outside.
- Analysis: The cat is on the sofa, not on the windowsill, and no birds are listed in the image contents.
- Hallucination: Yes.

With these examples in mind, evaluate the LMM response below by comparing it with the image contents, the question and the standard human-generated answer. First give a short explanation. Then rate the response with exactly one of the following options, written as "Rating: N":
- Rating: 6, very informative with good analysis or reasoning, no hallucination
- Rating: 5, very informative, no hallucination
- Rating: 4, somewhat informative, no hallucination
- Rating: 3, not informative, no hallucination
- Rating: 2, very informative, with hallucination
- Rating: 1, somewhat informative, with hallucination
- Rating: 0, not informative, with hallucination

### Image Contents
{image_content}

### Question
{question}

### Standard Human-Generated Answer
{gt_answer}

### LMM Response to Evaluate
{answer}
"""

_RATING = re.compile(r"rating\s*:\s*\**\s*([0-9]+)")


def parse_rating(text: str) -> int | None:
    """The unique s ∈ 0..6 with "rating: s" in the lower-cased reply; None if none or several
    different ones appear (e.g. the judge echoed the whole rubric)."""
    if text is None:
        return None
    found = {int(m) for m in _RATING.findall(text.lower())}
    found = {s for s in found if 0 <= s <= 6} if all(0 <= s <= 6 for s in found) else set()
    return found.pop() if len(found) == 1 else None


def parse_rating_rlaifv(text: str | None) -> int:
    """The original's rating parser: the s ∈ 0..6 with "rating: s" a substring of the lower-cased reply
    when exactly one is found; none or several: 0 (the original's fallback)."""
    found = [s for s in range(7) if f"rating: {s}" in (text or "").lower()]
    return found[0] if len(found) == 1 else 0


def judge_messages(item: dict, answer: str, template: Template | None = None) -> list[dict]:
    contents = item.get("image_content") or []
    if isinstance(contents, str):
        contents = [contents]
    values = {"image_content": ", ".join(contents), "question": item.get("question", ""),
              "gt_answer": item.get("gt_answer", ""), "answer": answer}
    prompt = RUBRIC.format(**values) if template is None else template.fill(**values)
    return [{"role": "user", "content": prompt}]


def item_type(item: dict, index: int) -> str:
    return str(item.get("question_type") or QUESTION_TYPES[index % len(QUESTION_TYPES)])


def mmhal_metrics(scores: Sequence[int | None], types: Sequence[str]) -> dict:
    """Means over the parsed scores (None = unparsed, excluded and counted)."""
    parsed = [s for s in scores if s is not None]
    n = len(parsed)
    per_type: dict[str, dict] = {}
    for t in dict.fromkeys(types):
        values = [s for s, tt in zip(scores, types) if tt == t and s is not None]
        per_type[t] = {"mean": statistics.fmean(values) if values else None, "n": len(values),
                       "n_unparsed": sum(1 for s, tt in zip(scores, types) if tt == t and s is None)}
    hall = sum(1 for s in parsed if s < 3) / n if n else None
    info = statistics.fmean([(s - 3) if s >= 3 else s for s in parsed]) / 3 * 100 if n else None
    return {
        "score": statistics.fmean(parsed) if n else None,
        "hallucination_rate": hall,
        "hallucination_rate_pct": 100 * hall if hall is not None else None,
        "informativeness": info,
        "per_type": per_type,
        "n_scored": n,
        "n_unparsed": len(scores) - n,
    }


def _flat(summary: dict) -> dict:
    per_type = summary.pop("per_type")
    return {**summary, **{f"score_{t}": v["mean"] for t, v in per_type.items() if v["mean"] is not None}}, per_type


def evaluate_mmhal(items: Sequence[dict], answers: Sequence[str], judge: JudgeClient, *,
                   generation: dict | None = None, keep_items: bool = True,
                   judge_settings: dict | None = None, protocol: str = "project",
                   template: Template | None = None) -> dict:
    if len(items) != len(answers):
        raise ValueError(f"{len(answers)} answers for {len(items)} items")
    if protocol not in ("project", "rlaifv"):
        raise ValueError(f"unknown protocol {protocol!r} (project, rlaifv)")
    rlaifv = protocol == "rlaifv"
    if rlaifv and template is None:
        raise ValueError("protocol rlaifv needs the original's MMHal judge template (eval.data.mmhal_judge_prompt)")
    settings = {**JUDGE_SETTINGS, **(judge_settings or {})}
    # rlaifv keeps every reply as it came (the original retries only failed calls); project retries unparsable ones
    parse = (lambda text: text) if rlaifv else parse_rating
    requests = [JudgeRequest(judge_messages(item, answer, template), parse, tag=i, **settings)
                for i, (item, answer) in enumerate(zip(items, answers))]
    replies = judge.ask_many(requests)
    strict = [parse_rating(r.raw) if r.raw is not None else None for r in replies]
    original = [parse_rating_rlaifv(r.raw) if r.raw is not None else None for r in replies]
    if rlaifv:
        types = [QUESTION_TYPES[i % len(QUESTION_TYPES)] for i in range(len(items))]  # the original: i % 8
        scores = original
    else:
        types = [item_type(item, i) for i, item in enumerate(items)]
        scores = [r.value if r.parsed else None for r in replies]
    requested = judge.identity.get("model_requested")
    mismatched = [i for i, r in enumerate(replies) if r.served_model and requested and r.served_model != requested]
    metrics, per_type = _flat(mmhal_metrics(scores, types))
    other_name = "strict" if rlaifv else "rlaifv"
    other, _ = _flat(mmhal_metrics(strict if rlaifv else original, types))
    differ = any(metrics.get(k) != other.get(k) for k in ("score", "hallucination_rate", "informativeness"))
    if differ:
        metrics.update({f"{k}_{other_name}_parser": v for k, v in other.items()
                        if k in ("score", "hallucination_rate", "hallucination_rate_pct", "informativeness")})
    record: dict[str, Any] = {
        "benchmark": "mmhal",
        "metrics": {k: v for k, v in metrics.items() if v is not None},  # flat numbers; per type below
        "per_type": per_type,
        "parsers": {"headline": "rlaifv" if rlaifv else "strict", "differ": differ,
                    other_name: {k: v for k, v in other.items() if v is not None},
                    "strict_unparsed": sum(s is None for s in strict),
                    "rlaifv_fallback_zeros": sum(1 for s, o in zip(strict, original) if s is None and o == 0)},
        "n": sum(s is not None for s in scores),
        "n_items": len(items),
        "n_unparsed": sum(s is None for s in scores),
        "unparsed_items": [i for i, s in enumerate(scores) if s is None],
        "judge": judge.describe(prompt="mmhal_rubric" if template is None else template.source, **settings,
                                **summarise_answers(replies), served_model_mismatch=len(mismatched)),
        "generation": generation,
        "protocol": protocol,
        "scoring": {"protocol": protocol, "judge": judge.identity,
                    "prompt_source": template.source if template is not None else "project rubric (mmhal.RUBRIC)",
                    "prompt_sha256": (template or Template(RUBRIC, "")).sha256,
                    "parser": "rlaifv (substring 'rating: s', else 0)" if rlaifv
                    else "strict (unique 'rating: s', else unparsed and excluded)",
                    "comparability": judge_comparability("mmhal", judge.identity) if rlaifv else "project protocol"},
    }
    if keep_items:
        record["items"] = [{"index": i, "question_type": types[i], "question": item.get("question"),
                            "answer": answers[i], "score": scores[i], "score_strict": strict[i],
                            "score_rlaifv": original[i], "judge": replies[i].record()}
                           for i, item in enumerate(items)]
    return record


def run_mmhal(questions: str | os.PathLike, judge: JudgeClient, *, backend: Backend | None = None,
              answers: str | os.PathLike | Sequence[dict] | None = None,
              settings: GenerationSettings = EVAL_SETTINGS, data_root: str | os.PathLike | None = None,
              keep_items: bool = True, protocol: str = "project", original=None) -> dict:
    """Load the questions, get answers (generated, read, or the template's model_answer), judge.
    protocol="rlaifv" reads the judge template through `original` (eval.data: rlaifv_repo / mmhal_judge_prompt)
    before any answer is generated."""
    items = read_rows(questions)
    template = (read_template(original_file(original, "mmhal_judge_prompt"), "mmhal_judge_prompt")
                if protocol == "rlaifv" else None)
    if backend is not None:
        texts = generate_answers(backend, items, settings, data_root)
        generation = generated_record(backend, settings)
    elif answers is not None:
        rows = read_rows(answers) if isinstance(answers, (str, os.PathLike)) else list(answers)
        keys = {}
        for field_name in ("question_id", "id"):
            if all(field_name in it for it in items):
                keys[field_name] = [it[field_name] for it in items]
        if not keys and all("question_id" in r for r in rows):
            keys["question_id"] = list(range(len(items)))  # the generation output's running index
        texts = align_answers(len(items), keys, rows, "mmhal answers")
        generation = given_record(answers)
    elif all(isinstance(it.get("model_answer"), str) and it["model_answer"] for it in items):
        texts = [it["model_answer"] for it in items]
        generation = {"source": f"{questions} (model_answer)", "settings": None}
    else:
        raise ValueError("give a backend, an answers file, or a template with model_answer filled in")
    return evaluate_mmhal(items, texts, judge, generation=generation, keep_items=keep_items, protocol=protocol,
                          template=template)
