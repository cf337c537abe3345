"""RefoMB under protocol rlaifv: the original's two passes (eval/eval_RefoMB_p0.py, eval/eval_hallucination.py).

    from rlaifv_core.evals.refomb_rlaifv import evaluate_refomb_rlaifv
    record = evaluate_refomb_rlaifv(items, references, answers, judge, judge_template, review_template)
    record["metrics"]["win_rate"], record["metrics"]["trustworthiness"], record["metrics"]["win_rate_pooled"]

The original's protocol: the reference answer (GPT-4V) is always Model A and the evaluated model Model B;
one comparison per item (the user's prompt template, system "You are a helpful and precise assistant
for checking the quality of the answer.", temperature 1e-5, top-p 1, 2048 tokens); the verdict is the
first [[A]] / [[B]] / [[C]] (score −1 / +1 / 0) and `win_rate` = mean((score + 1) / 2). The second pass
sends each first-pass review text to the judge with the review template (system "You are a helpful
and precise assistant.", temperature 0) and asks which model has fewer hallucinations:
`trustworthiness` = mean((score + 1) / 2) of those verdicts. Beside them, the same prompt is asked with
the reference as Model B, and `win_rate_pooled` pools both orders (the project's position-bias fix).
Unlike the original, a reply without a verdict is retried a bounded number of times and then recorded
as unparsed and left out (the original retries forever).
"""

from __future__ import annotations

from typing import Any, Sequence

from .judge import JudgeClient, JudgeRequest, summarise_answers
from .original import Template, judge_comparability
from .original import original_file, read_template
from .refomb import ORDERS, SYSTEM, TRUST_SYSTEM, description_of, load_refomb, model_outcome, parse_verdict

OVERALL_SETTINGS = {"temperature": 1e-5, "top_p": 1.0, "max_new_tokens": 2048}
REVIEW_SETTINGS = {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 2048}


def _rate(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def comparison_messages(template: Template, item: dict, reference: str, answer: str, order: str) -> list[dict]:
    a, b = (reference, answer) if order == "reference_first" else (answer, reference)
    prompt = template.fill(description=description_of(item), question=item.get("question", ""), answer_a=a, answer_b=b)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]


def evaluate_refomb_rlaifv(items: Sequence[dict], references: Sequence[str], answers: Sequence[str],
                           judge: JudgeClient, judge_template: Template, review_template: Template, *,
                           generation: dict | None = None, keep_items: bool = True) -> dict:
    if not (len(items) == len(references) == len(answers)):
        raise ValueError("items, references and answers must have the same length")
    requests = [JudgeRequest(comparison_messages(judge_template, item, references[i], answers[i], order),
                             parse_verdict, tag=(order, i), **OVERALL_SETTINGS)
                for order in ORDERS for i, item in enumerate(items)]
    replies = {r.tag: r for r in judge.ask_many(requests)}
    first = [replies[(ORDERS[0], i)] for i in range(len(items))]
    reviewed = [i for i, r in enumerate(first) if r.parsed]
    review_requests = [JudgeRequest([{"role": "system", "content": TRUST_SYSTEM},
                                     {"role": "user", "content": review_template.fill(review=first[i].raw)}],
                                    parse_verdict, tag=i, **REVIEW_SETTINGS) for i in reviewed]
    reviews = {r.tag: r for r in judge.ask_many(review_requests)}

    by_order = {o: [model_outcome(replies[(o, i)].value, o) for i in range(len(items)) if replies[(o, i)].parsed]
                for o in ORDERS}
    trust = [model_outcome(reviews[i].value, ORDERS[0]) for i in reviewed if reviews[i].parsed]
    per_type: dict[str, list[float]] = {}
    for i, item in enumerate(items):
        if first[i].parsed:
            per_type.setdefault(str(item.get("type", "all")), []).append(model_outcome(first[i].value, ORDERS[0]))
    metrics = {
        "win_rate": _rate(by_order[ORDERS[0]]),
        "trustworthiness": _rate(trust),
        "win_rate_pooled": _rate(by_order[ORDERS[0]] + by_order[ORDERS[1]]),
        "win_rate_reference_second": _rate(by_order[ORDERS[1]]),
    }
    unparsed = ([{"pass": "overall", "order": o, "id": items[i].get("id", i), "raw": replies[(o, i)].raw}
                 for o in ORDERS for i in range(len(items)) if not replies[(o, i)].parsed]
                + [{"pass": "review", "id": items[i].get("id", i), "raw": reviews[i].raw}
                   for i in reviewed if not reviews[i].parsed])
    record: dict[str, Any] = {
        "benchmark": "refomb",
        "metrics": {k: v for k, v in metrics.items() if v is not None},
        "per_type": {t: {"win_rate": _rate(v), "n": len(v)} for t, v in sorted(per_type.items())},
        "n": len(items),
        "repeats": 1,
        "orders": list(ORDERS),
        "n_judgments": len(replies) + len(reviews),
        "n_unparsed": len(unparsed),
        "unparsed": unparsed,
        "judge": judge.describe(prompt=judge_template.source, review_prompt=review_template.source,
                                overall=OVERALL_SETTINGS, review=REVIEW_SETTINGS,
                                overall_counts=summarise_answers(list(replies.values())),
                                review_counts=summarise_answers(list(reviews.values()))),
        "generation": generation,
        "protocol": "rlaifv",
        "scoring": {"protocol": "rlaifv", "judge": judge.identity, "prompt_sha256": judge_template.sha256,
                    "review_prompt_sha256": review_template.sha256,
                    "parser": "first [[A]]/[[B]]/[[C]] (A −1, B +1, C 0; score (s + 1) / 2)",
                    "headline": "reference as Model A, one order; trustworthiness from the review of that reply",
                    "comparability": judge_comparability("refomb", judge.identity)},
    }
    if keep_items:
        record["items"] = [{"id": item.get("id", i), "type": item.get("type"), "question": item.get("question"),
                            "answer": answers[i], "reference": references[i],
                            "overall": {o: replies[(o, i)].value for o in ORDERS},
                            "review": reviews[i].value if i in reviews else None}
                           for i, item in enumerate(items)]
    return record


def run_refomb_rlaifv(items_path, references, judge: JudgeClient, *, original, answers=None, backend=None,
                      settings=None, data_root=None, keep_items: bool = True) -> dict:
    """Read the original's two prompts through `original` (eval.data: rlaifv_repo / refomb_judge_prompt /
    refomb_review_prompt) before any answer is generated, then load and judge as the original does."""
    from .common import EVAL_SETTINGS

    judge_template = read_template(original_file(original, "refomb_judge_prompt"), "refomb_judge_prompt")
    review_template = read_template(original_file(original, "refomb_review_prompt"), "refomb_review_prompt")
    items, refs, texts, generation = load_refomb(items_path, references, answers=answers, backend=backend,
                                                 settings=settings or EVAL_SETTINGS, data_root=data_root)
    return evaluate_refomb_rlaifv(items, refs, texts, judge, judge_template, review_template,
                                  generation=generation, keep_items=keep_items)
