"""Throughput of the feedback stages: the fast paths vs the ways they replace, every arm in one run.

    python bench/bench_feedback.py            # prints ratios, writes bench/results/feedback.json

Every arm is timed the same way: one untimed warm-up call, then the median of `--repeats` (>= 3)
timed calls, taken in rounds that run every arm of a case in turn (a shared machine's load drifts;
interleaving spreads it over the arms alike). The load average is recorded.

1. Labeler scoring, three arms on the same questions: `shared_prefix`: all of an image's questions
   on one encoded image+prompt prefix (its key/value cache copied per question, one batched forward
   of the question suffixes: HFBackend.yes_no); `batched_no_prefix`: the same questions as one
   padded batch of full prompts, each re-encoding the image (batching without prefix sharing);
   `original`: one greedy one-token `generate` per question, batch of one (the original's way).
   So batching (original -> batched_no_prefix) and prefix sharing (batched_no_prefix ->
   shared_prefix) are measured apart. On the shapes labeler (9 image tokens) and on a tiny LLaVA
   shaped like LLaVA-1.5's prompt (336-px image, patch 14: 576 image tokens). Verdicts must match.
2. n samples per prompt, three arms over the same P prompts and n: `separate_calls`: n generate
   calls of P prompts x 1 sample (decode batch width P, P prefills per call, n x P in all);
   `wide_no_shared_prefill`: one call of the P prompts each repeated n times, 1 sample each (decode
   width P x n, P x n prefills); `shared_prefill`: one call of P prompts x n samples (decode width
   P x n, P prefills whose cache the n samples share: HFBackend.generate). separate ->
   wide measures the decode batch width, wide -> shared the shared prefill. Answers differ between
   arms (other seeds); their mean length in tokens is reported beside each time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from rlaifv_core.backends.base import GenerationSettings, VisualPrompt
from rlaifv_core.backends.hf import HFBackend
from rlaifv_core.models import load_model
from rlaifv_core.config import ModelSpec
from rlaifv_core.feedback.questions import rule_question
from rlaifv_core.shapes.models import ModelSize, build_model, build_processor
from rlaifv_core.shapes.world import OBJECT_TYPES, ShapesWorld

SUFFIX = " Please answer yes or no."


def questions_for(n: int) -> list[str]:
    return [rule_question(f"there is a {c} {s}") + SUFFIX for c, s in (OBJECT_TYPES * 10)[:n]]


def timed_arms(arms: dict, repeat: int = 3) -> tuple[dict, dict]:
    """Every arm timed the same way: one untimed warm-up call each, then `repeat` rounds that time one
    call of every arm in turn (interleaved, so a change in the machine's load hits every arm alike);
    ({arm: median seconds}, {arm: last result})."""
    results = {name: fn() for name, fn in arms.items()}
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(repeat):
        for name, fn in arms.items():
            started = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}, results


def labeler_case(backend: HFBackend, images, questions_per_image: int, repeat: int) -> dict:
    questions = questions_for(questions_per_image)
    arms = {"shared_prefix": lambda: [backend.yes_no(img, questions) for img in images],
            "batched_no_prefix": lambda: [backend.yes_no_reference(img, questions, batched=True) for img in images],
            "original": lambda: [backend.yes_no_reference(img, questions) for img in images]}
    seconds, answers = timed_arms(arms, repeat)
    flat = {name: [p for per_image in got for p in per_image] for name, got in answers.items()}
    n = len(images) * len(questions)
    case = {"questions": n, "repeats": repeat}
    for name in arms:
        case[f"{name}_s"] = seconds[name]
        case[f"{name}_questions_per_s"] = n / seconds[name]
        case[f"{name}_verdicts_identical_to_original"] = all(
            a.accepted() == b.accepted() for a, b in zip(flat[name], flat["original"]))
        case[f"{name}_max_abs_p_yes_diff"] = max(abs(a.p_yes - b.p_yes) for a, b in zip(flat[name], flat["original"]))
    case["batching_speedup"] = seconds["original"] / seconds["batched_no_prefix"]
    case["prefix_sharing_speedup"] = seconds["batched_no_prefix"] / seconds["shared_prefix"]
    case["total_speedup"] = seconds["original"] / seconds["shared_prefix"]
    return case


def _mean_tokens(backend: HFBackend, answers: list[list[str]]) -> float:
    texts = [a for per_prompt in answers for a in per_prompt]
    return sum(len(backend.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts) / max(1, len(texts))


def sampling_case(backend: HFBackend, images, n: int, max_new_tokens: int, repeat: int) -> dict:
    prompts = [VisualPrompt(img, "describe the image .") for img in images]
    settings = GenerationSettings(n=n, temperature=1.0, top_k=None, max_new_tokens=max_new_tokens)
    one = GenerationSettings(n=1, temperature=1.0, top_k=None, max_new_tokens=max_new_tokens)
    backend.batch_size = len(prompts) * n  # every arm in one forward batch per call
    repeated = [p for p in prompts for _ in range(n)]
    arms = {
        "separate_calls": lambda: [a for j in range(n) for a in backend.generate(
            prompts, one, seeds=[j * 1000 + i for i in range(len(prompts))])],
        "wide_no_shared_prefill": lambda: backend.generate(repeated, one, seeds=list(range(len(repeated)))),
        "shared_prefill": lambda: backend.generate(prompts, settings, seeds=list(range(len(prompts)))),
    }
    case = {"prompts": len(prompts), "n": n, "max_new_tokens": max_new_tokens, "repeats": repeat}
    seconds, answers = timed_arms(arms, repeat)
    for name in arms:
        case[f"{name}_s"] = seconds[name]
        case[f"{name}_samples_per_s"] = len(prompts) * n / seconds[name]
        case[f"{name}_mean_answer_tokens"] = _mean_tokens(backend, answers[name])
    case["decode_width_speedup"] = seconds["separate_calls"] / seconds["wide_no_shared_prefill"]
    case["shared_prefill_speedup"] = seconds["wide_no_shared_prefill"] / seconds["shared_prefill"]
    case["total_speedup"] = seconds["separate_calls"] / seconds["shared_prefill"]
    return case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--questions", type=int, default=30, help="questions per image (10 answers x ~3 claims)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: tiny models gain nothing from more, and it keeps noise down)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per arm (median), after a warm-up")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "feedback.json"))
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats must be at least 3 (every arm is a median of >= 3)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    world = ShapesWorld()
    images48 = [world.scene(i).render() for i in range(args.images)]
    results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                           "torch": torch.__version__, "load_average": os.getloadavg()}}

    labeler = load_model(ModelSpec(name_or_path="shapes:labeler", batch_size=64))
    results["labeler_shapes"] = labeler_case(labeler, images48, args.questions, args.repeats)

    processor = build_processor(image_size=336, patch_size=14)
    tiny = build_model(processor, ModelSize(text_hidden=64, text_layers=2, vision_hidden=64, vision_layers=2),
                       image_size=336, patch_size=14)
    # the shapes tokenizer says 256 tokens (its own 48-px scenes); this model's positions hold the 576 image tokens
    processor.tokenizer.model_max_length = tiny.config.get_text_config().max_position_embeddings
    wide = HFBackend(tiny, processor, name="tiny-llava-576", fingerprint="bench", is_vlm=True, batch_size=64)
    images336 = [img.resize((336, 336)) for img in images48[:4]]
    results["labeler_576_image_tokens"] = labeler_case(wide, images336, args.questions, args.repeats)

    policy = load_model(ModelSpec(name_or_path="shapes:policy", batch_size=64))
    results["sampling_shapes"] = sampling_case(policy, images48, n=10, max_new_tokens=40, repeat=args.repeats)

    for name, case in results.items():
        if name != "machine":
            print(f"{name}: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in case.items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"machine: {results['machine']}\nwritten: {args.out}")


if __name__ == "__main__":
    main()
