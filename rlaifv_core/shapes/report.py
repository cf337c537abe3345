"""Report on the bootstrapped shapes world: cost, policy hallucination, labeler accuracy.

    python -m rlaifv_core.shapes.report                  # prints a table, writes shapes_report.json
    python -m rlaifv_core.shapes.report --scenes 300 --out runs/shapes_report.json

Bootstraps the policy and labeler if needed (timed, with peak memory), evaluates the policy on
held-out scenes with the loop's sampling settings and greedily, and audits the labeler on the
policy's own claims and on each hard-negative kind.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import time
from pathlib import Path

import torch

from ..backends.base import Backend, GenerationSettings, VisualPrompt
from ..config import ModelSpec, load_config
from ..feedback.questions import rule_question
from ..models import load_model
from .benchmark import audit_labeler, evaluate_policy, positive_mentions
from .bootstrap import YES_NO_SUFFIX, bootstrap
from .world import OBJECT_TYPES, PARTNER, ShapesWorld, canonical_order, DETAIL_QUESTIONS


def labeler_verdicts(labeler: Backend, items, threshold: float = 0.5):
    """items: (scene, object) → (scene, object, accepted) using the pipeline's question format."""
    out = []
    by_scene: dict[int, list] = {}
    for scene, obj in items:
        by_scene.setdefault(scene.seed, []).append((scene, obj))
    for group in by_scene.values():
        scene = group[0][0]
        questions = [rule_question(f"there is a {o[0]} {o[1]}") + YES_NO_SUFFIX for _, o in group]
        for (_, obj), verdict in zip(group, labeler.yes_no(scene.render(), questions)):
            out.append((scene, obj, verdict.accepted(threshold)))
    return out


def policy_claims(policy: Backend, world: ShapesWorld, scenes, settings: GenerationSettings, seed: int):
    prompts = [VisualPrompt(s.render(), DETAIL_QUESTIONS[i % len(DETAIL_QUESTIONS)]) for i, s in enumerate(scenes)]
    answers = policy.generate(prompts, settings, seeds=[seed + i for i in range(len(scenes))])
    return [(scene, obj) for scene, samples in zip(scenes, answers) for a in samples for obj in positive_mentions(a)]


def hard_negatives(world: ShapesWorld, scenes, rng: random.Random):
    """One claim per scene of each hard-negative kind where the scene allows it."""
    kinds = {"absent_partner": [], "same_colour": [], "same_shape": []}
    for scene in scenes:
        present = canonical_order(scene.objects)
        absent = [o for o in OBJECT_TYPES if o not in scene.objects]
        partners = [PARTNER[o] for o in present if PARTNER[o] not in scene.objects]
        colour = [o for o in absent if any(o[0] == p[0] for p in present)]
        shape = [o for o in absent if any(o[1] == p[1] for p in present) and o not in colour]
        for name, pool in (("absent_partner", partners), ("same_colour", colour), ("same_shape", shape)):
            if pool:
                kinds[name].append((scene, rng.choice(pool)))
    return kinds


def build_report(scenes: int = 300, seed: int = 10_000, config_path: str | None = None) -> dict:
    config = load_config(config_path)
    started = time.time()
    boot = bootstrap()
    boot_seconds = time.time() - started
    cached_started = time.time()
    bootstrap()
    cached_seconds = time.time() - cached_started

    torch.manual_seed(0)
    policy = load_model(ModelSpec(name_or_path="shapes:policy", batch_size=64))
    labeler = load_model(ModelSpec(name_or_path="shapes:labeler", batch_size=64))
    world = ShapesWorld()
    loop_settings = GenerationSettings(n=1, temperature=config.sampling.temperature, top_p=config.sampling.top_p,
                                       top_k=config.sampling.top_k, max_new_tokens=config.sampling.max_new_tokens)
    greedy = GenerationSettings(n=1, temperature=0.0, max_new_tokens=config.sampling.max_new_tokens)
    sampled = evaluate_policy(policy, scenes=scenes, seed=seed, settings=loop_settings, world=world)
    greedy_eval = evaluate_policy(policy, scenes=scenes, seed=seed, settings=greedy, world=world)

    audit_scenes = world.scenes(seed + 50_000, scenes)
    own = policy_claims(policy, world, audit_scenes, loop_settings.__class__(**{**loop_settings.__dict__, "n": 4}),
                        seed + 50_000)
    own_audit = audit_labeler(labeler_verdicts(labeler, own, config.judge.threshold))
    negatives = hard_negatives(world, audit_scenes, random.Random(seed))
    per_kind = {}
    for kind, items in negatives.items():
        verdicts = labeler_verdicts(labeler, items, config.judge.threshold)
        per_kind[kind] = {"n": len(verdicts), "accuracy": sum(not a for _, _, a in verdicts) / max(len(verdicts), 1)}
    positives = labeler_verdicts(labeler, [(s, o) for s in audit_scenes for o in canonical_order(s.objects)],
                                 config.judge.threshold)
    per_kind["present"] = {"n": len(positives), "accuracy": sum(a for _, _, a in positives) / max(len(positives), 1)}

    return {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": torch.get_num_threads(), "torch": torch.__version__},
        "bootstrap": {"seconds_first_call": round(boot_seconds, 1), "seconds_cached_call": round(cached_seconds, 2),
                      "trained_now": not boot.get("cached", False), "recorded_training_seconds": boot.get("seconds"),
                      "roles": boot.get("roles"), "dir": boot["dir"],
                      "peak_rss_mb_report_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)},
        "policy_loop_sampling": sampled,
        "policy_greedy": greedy_eval,
        "labeler_on_policy_claims": own_audit,
        "labeler_per_kind": per_kind,
    }


def format_report(report: dict) -> str:
    s, g = report["policy_loop_sampling"], report["policy_greedy"]
    own = report["labeler_on_policy_claims"]["overall"]
    lines = [
        f"bootstrap: {report['bootstrap']['seconds_first_call']}s (cached call {report['bootstrap']['seconds_cached_call']}s)",
        "policy                 CHAIRi  CHAIRs  recall  mentions  prior-share  QA-acc",
    ]
    for name, r in (("loop sampling", s), ("greedy", g)):
        lines.append(f"  {name:<20} {r['chair_i']:.3f}   {r['chair_s']:.3f}   {r['recall']:.3f}   "
                     f"{r['mentions_per_answer']:.2f}      {r['prior_share']:.2f}         {r.get('qa_accuracy', float('nan')):.3f}")
    lines.append(f"labeler on the policy's own claims: balanced accuracy {own['balanced_accuracy']:.3f} "
                 f"(precision {own['precision']:.3f}, recall {own['recall']:.3f}, n={own['n']}, "
                 f"false rejections {own['false_rejections']}, false acceptances {own['false_acceptances']})")
    for kind, r in report["labeler_per_kind"].items():
        lines.append(f"  {kind:<16} accuracy {r['accuracy']:.3f} (n={r['n']})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=300)
    parser.add_argument("--seed", type=int, default=10_000)
    parser.add_argument("--config", default=None)
    parser.add_argument("--out", default="shapes_report.json")
    args = parser.parse_args()
    report = build_report(args.scenes, args.seed, args.config)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    print(format_report(report))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
