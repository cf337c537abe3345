"""Exact hallucination metrics in the shapes world (no judge needed: the truth is known).

    from rlaifv_core.shapes.benchmark import evaluate_policy, run_shapes_benchmark
    record = evaluate_policy(backend, scenes=300, seed=10_000, settings=GenerationSettings(temperature=1.0))
    record = run_benchmark("shapes", backend, config.eval)   # the same, through rlaifv_core.evals.registry

CHAIRi = hallucinated mentions / mentions; CHAIRs = answers with ≥ 1 hallucinated mention /
answers; recall = correctly named objects / objects present; f1 = the harmonic mean of object
precision (1 − CHAIRi) and recall; plus words, mentions, hallucinated and correct mentions per
answer, the share of hallucinations that are absent partners (prior-driven), and
question-answering accuracy on "is there a …?" prompts.

Two benchmarks on disjoint held-out scenes: `shapes` (`eval.shapes_scenes` from `eval.shapes_seed`)
is what selection minimises; `shapes_report` (`eval.shapes_report_scenes` from
`eval.shapes_report_seed`) is the report split, run only on each iteration's selected policy
(`eval.report_benchmarks`), so the headline carries no winner's-curse bias.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Iterable, Sequence

from ..backends.base import Backend, GenerationSettings, VisualPrompt
from .world import COLOURS, PARTNER, PLURALS, SHAPES, DETAIL_QUESTIONS, ObjectType, Scene, ShapesWorld

_SHAPE_OF = {s: s for s in SHAPES} | {p: s for s, p in PLURALS.items()}
_NEGATORS = {"no", "not"}


def mentioned_objects(answer: str) -> list[tuple[ObjectType, bool]]:
    """(object, negated) for every colour+shape mention, in order, first occurrence only."""
    words = answer.lower().replace(",", " , ").replace(".", " . ").split()
    seen: dict[ObjectType, bool] = {}
    for i in range(len(words) - 1):
        colour, shape = words[i], _SHAPE_OF.get(words[i + 1])
        if colour in COLOURS and shape:
            negated = any(w in _NEGATORS for w in words[max(0, i - 2):i])
            seen.setdefault((colour, shape), negated)
    return list(seen.items())


def positive_mentions(answer: str) -> list[ObjectType]:
    return [obj for obj, negated in mentioned_objects(answer) if not negated]


@dataclass
class ChairCounts:
    answers: int = 0
    answers_with_mention: int = 0
    answers_hallucinating: int = 0
    mentions: int = 0
    hallucinated: int = 0
    prior_hallucinated: int = 0
    correct: int = 0
    truth: int = 0
    words: int = 0

    def add(self, truth: Iterable[ObjectType], answer: str) -> None:
        truth = frozenset(truth)
        named = positive_mentions(answer)
        wrong = [o for o in named if o not in truth]
        self.answers += 1
        self.answers_with_mention += bool(named)
        self.answers_hallucinating += bool(wrong)
        self.mentions += len(named)
        self.hallucinated += len(wrong)
        self.prior_hallucinated += sum(1 for o in wrong if PARTNER[o] in truth)
        self.correct += len(named) - len(wrong)
        self.truth += len(truth)
        self.words += len(answer.split())

    def metrics(self) -> dict[str, float]:
        n = max(self.answers, 1)
        precision, recall = 1 - self.hallucinated / max(self.mentions, 1), self.correct / max(self.truth, 1)
        return {
            "chair_i": 1 - precision,
            "chair_s": self.answers_hallucinating / n,
            "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "words_per_answer": self.words / n,
            "mentions_per_answer": self.mentions / n,
            "hallucinated_per_answer": self.hallucinated / n,
            "correct_per_answer": self.correct / n,
            "prior_share": self.prior_hallucinated / max(self.hallucinated, 1),
            "answers": self.answers,
        }


def chair(truths: Sequence[Iterable[ObjectType]], answers: Sequence[str]) -> dict[str, float]:
    counts = ChairCounts()
    for truth, answer in zip(truths, answers, strict=True):
        counts.add(truth, answer)
    return counts.metrics()


def chair_against_truth(truths: Sequence[str], answers: Sequence[str]) -> dict[str, float]:
    """`chair` of answers to prompts whose `truth` column holds the scene's objects as a JSON list
    of "colour shape" strings (the shapes prompt source's truth; registered as a truth metric)."""
    return chair([{tuple(o.split(" ", 1)) for o in json.loads(t)} for t in truths], answers)


def qa_correct(answer: str, scene: Scene, obj: ObjectType) -> bool:
    words = answer.lower().split()
    said_yes = bool(words) and words[0] == "yes"
    said_no = bool(words) and words[0] == "no"
    return said_yes if obj in scene.objects else said_no


def evaluate_policy(backend: Backend, *, scenes: int = 300, seed: int = 10_000,
                    settings: GenerationSettings = GenerationSettings(n=1, temperature=1.0, max_new_tokens=40),
                    world: ShapesWorld | None = None, qa: bool = True) -> dict:
    """Describe `scenes` held-out scenes (and answer one presence question each) and score exactly."""
    world = world or ShapesWorld()
    held_out = world.scenes(seed, scenes)
    rng = random.Random(seed)
    prompts = [VisualPrompt(s.render(), DETAIL_QUESTIONS[i % len(DETAIL_QUESTIONS)]) for i, s in enumerate(held_out)]
    seeds = [seed * 1000 + i for i in range(len(prompts))]
    answers = backend.generate(prompts, settings, seeds=seeds)
    counts = ChairCounts()
    for scene, samples in zip(held_out, answers):
        for answer in samples:
            counts.add(scene.objects, answer)
    record = counts.metrics()
    if qa:
        questions = [world.qa_prompt(s, rng) for s in held_out]
        qa_answers = backend.generate([VisualPrompt(s.render(), q) for s, (q, _) in zip(held_out, questions)],
                                      settings, seeds=[seeds[i] + 7 for i in range(len(held_out))])
        hits = [qa_correct(a, s, obj) for s, (_, obj), samples in zip(held_out, questions, qa_answers) for a in samples]
        record["qa_accuracy"] = sum(hits) / max(len(hits), 1)
    record["settings"] = {"temperature": settings.temperature, "n": settings.n, "num_beams": settings.num_beams,
                          "max_new_tokens": settings.max_new_tokens, "scenes": scenes, "seed": seed}
    record["model"] = backend.identity
    record["examples"] = [{"truth": sorted(" ".join(o) for o in s.objects), "answer": a[0]}
                          for s, a in list(zip(held_out, answers))[:5]]
    return record


# -- labeler audit ---------------------------------------------------------------------------------
def run_shapes_benchmark(backend: Backend, eval_config, settings: GenerationSettings, report: bool = False) -> dict:
    """The benchmark `shapes` (registered by plugin.py): `evaluate_policy` on `eval.shapes_scenes`
    held-out scenes from `eval.shapes_seed`, as a benchmark record; with `report`, the report split
    `shapes_report` on `eval.shapes_report_scenes` scenes from `eval.shapes_report_seed`."""
    name = "shapes_report" if report else "shapes"
    scenes, seed = eval_config.shapes_scenes, eval_config.shapes_seed
    if report:
        scenes, seed = eval_config.shapes_report_scenes or scenes, eval_config.shapes_report_seed
    raw = evaluate_policy(backend, scenes=scenes, seed=seed, settings=settings)
    metrics = {k: float(v) for k, v in raw.items() if isinstance(v, (int, float)) and k != "answers"}
    return {"benchmark": name, "metrics": metrics, "n": raw["answers"], "judge": "exact (ground truth)",
            "generation": raw["settings"], "model": backend.identity, "examples": raw["examples"]}


def claim_kind(obj: ObjectType, scene: Scene) -> str:
    """Which kind of claim this is relative to the scene (for per-kind accuracy)."""
    if obj in scene.objects:
        return "present"
    if PARTNER[obj] in scene.objects:
        return "absent_partner"
    if any(obj[0] == o[0] for o in scene.objects):
        return "same_colour"
    if any(obj[1] == o[1] for o in scene.objects):
        return "same_shape"
    return "other_absent"


def binary_scores(truth: Sequence[bool], predicted: Sequence[bool]) -> dict[str, float]:
    tp = sum(t and p for t, p in zip(truth, predicted))
    tn = sum((not t) and (not p) for t, p in zip(truth, predicted))
    fp = sum((not t) and p for t, p in zip(truth, predicted))
    fn = sum(t and (not p) for t, p in zip(truth, predicted))
    tpr = tp / max(tp + fn, 1)
    tnr = tn / max(tn + fp, 1)
    return {"n": len(truth), "accuracy": (tp + tn) / max(len(truth), 1), "precision": tp / max(tp + fp, 1),
            "recall": tpr, "specificity": tnr, "balanced_accuracy": (tpr + tnr) / 2,
            "false_rejections": fn, "false_acceptances": fp}


def audit_labeler(items: Sequence[tuple[Scene, ObjectType, bool]]) -> dict:
    """items: (scene, object claimed present, labeler accepted?). Scores overall and per kind;
    'accepted' is the positive class (a true object should be accepted)."""
    truth = [obj in scene.objects for scene, obj, _ in items]
    predicted = [accepted for _, _, accepted in items]
    report = {"overall": binary_scores(truth, predicted), "per_kind": {}}
    kinds: dict[str, list[int]] = {}
    for i, (scene, obj, _) in enumerate(items):
        kinds.setdefault(claim_kind(obj, scene), []).append(i)
    for kind, idx in sorted(kinds.items()):
        correct = sum(truth[i] == predicted[i] for i in idx)
        report["per_kind"][kind] = {"n": len(idx), "accuracy": correct / len(idx)}
    return report
