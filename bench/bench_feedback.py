"""Throughput of the feedback stages, fast path vs the original's way, measured in one run.

    python bench/bench_feedback.py            # prints ratios, writes runs/bench/feedback.json

1. Labeler scoring: all of an image's questions on one shared image+prompt prefix (batched
   forward over the key/value cache) vs. the original: one greedy one-token `generate` per
   question, batch of one. On the shapes labeler (9 image tokens) and on a tiny LLaVA configured
   with LLaVA-1.5's prompt shape (336-px image, patch 14: 576 image tokens). Verdicts must match.
2. n samples per prompt: one prefill per prompt whose cache the n samples share vs. n separate
   generate calls of one sample each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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


def timed(fn, repeat: int = 3):
    """Median of `repeat` timed calls after a warm-up (tiny models: scheduler noise matters)."""
    result = fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2], result


def labeler_case(backend: HFBackend, images, questions_per_image: int) -> dict:
    questions = questions_for(questions_per_image)
    fast_s, fast = timed(lambda: [backend.yes_no(img, questions) for img in images])
    slow_s, slow = timed(lambda: [backend.yes_no_reference(img, questions) for img in images], repeat=1)
    same = all(a.accepted() == b.accepted() for fa, sa in zip(fast, slow) for a, b in zip(fa, sa))
    max_diff = max(abs(a.p_yes - b.p_yes) for fa, sa in zip(fast, slow) for a, b in zip(fa, sa))
    n = len(images) * len(questions)
    return {"questions": n, "fast_s": fast_s, "original_s": slow_s, "speedup": slow_s / fast_s,
            "fast_questions_per_s": n / fast_s, "verdicts_identical": same, "max_abs_p_yes_diff": max_diff}


def sampling_case(backend: HFBackend, images, n: int, max_new_tokens: int) -> dict:
    prompts = [VisualPrompt(img, "describe the image .") for img in images]
    settings = GenerationSettings(n=n, temperature=1.0, top_k=None, max_new_tokens=max_new_tokens)
    one = GenerationSettings(n=1, temperature=1.0, top_k=None, max_new_tokens=max_new_tokens)
    backend.batch_size = len(prompts) * n
    shared_s, _ = timed(lambda: backend.generate(prompts, settings, seeds=list(range(len(prompts)))))
    separate_s, _ = timed(lambda: [backend.generate(prompts, one, seeds=[j * 1000 + i for i in range(len(prompts))])
                                   for j in range(n)])
    return {"prompts": len(prompts), "n": n, "shared_prefill_s": shared_s, "separate_calls_s": separate_s,
            "speedup": separate_s / shared_s, "samples_per_s": len(prompts) * n / shared_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--questions", type=int, default=30, help="questions per image (10 answers x ~3 claims)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: tiny models gain nothing from more, and it keeps noise down)")
    parser.add_argument("--out", default="runs/bench/feedback.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    world = ShapesWorld()
    images48 = [world.scene(i).render() for i in range(args.images)]
    results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                           "torch": torch.__version__}}

    labeler = load_model(ModelSpec(name_or_path="shapes:labeler", batch_size=64))
    results["labeler_shapes"] = labeler_case(labeler, images48, args.questions)

    processor = build_processor(image_size=336, patch_size=14)
    tiny = build_model(processor, ModelSize(text_hidden=64, text_layers=2, vision_hidden=64, vision_layers=2),
                       image_size=336, patch_size=14)
    wide = HFBackend(tiny, processor, name="tiny-llava-576", fingerprint="bench", is_vlm=True, batch_size=64)
    images336 = [img.resize((336, 336)) for img in images48[:4]]
    results["labeler_576_image_tokens"] = labeler_case(wide, images336, args.questions)

    policy = load_model(ModelSpec(name_or_path="shapes:policy", batch_size=64))
    results["sampling_shapes"] = sampling_case(policy, images48, n=10, max_new_tokens=40)

    for name, case in results.items():
        if name != "machine":
            print(f"{name}: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in case.items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"machine: {results['machine']}\nwritten: {args.out}")


if __name__ == "__main__":
    main()
