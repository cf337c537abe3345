"""Best-of-N with self-feedback in the shapes world (the paper's Figure 5, exactly scored).

    python bench/bench_best_of_n.py runs/shapes/iter-1/checkpoints/step-40            # 300 scenes, N ≤ 32
    python bench/bench_best_of_n.py CKPT --reference shapes:policy --scenes 20 --max-n 8   # quick check
    python bench/bench_best_of_n.py LORA_DIR --base-model shapes:policy

Held-out scenes (eval seed, never used for training) are described by the bootstrapped policy
(`--policy`, default shapes:policy) at temperature 1: `--max-n` candidates per scene, sampled once.
Best-of-N for N = 1, 2, 4, … is evaluated on disjoint blocks of N of those candidates (max_n / N
blocks, metrics averaged over blocks, so N=1 is the policy's mean over every sample). Selectors:

* reward      — length-normalised DPO implicit reward of the reward model (the aligned checkpoint,
                positional argument) relative to `--reference` (default shapes:policy), β/T Σ Δlog π
* reward_sum  — the same, un-normalised (β Σ Δlog π; favours short answers)
* aligned_ppl — the aligned model's own mean token log-likelihood ("RLAIF-V PPL")
* reference_ppl — the reference's mean token log-likelihood ("Reference PPL")
* oracle      — fewest hallucinated objects, then most correct ones (a lower bound, needs the truth)

Prints a table, writes `<out>/best_of_n.json` and `<out>/best_of_n.png` (CHAIRi and CHAIRs vs N).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlaifv_core.backends.base import GenerationSettings, VisualPrompt  # noqa: E402
from rlaifv_core.models import open_backend  # noqa: E402
from rlaifv_core.shapes.benchmark import chair, positive_mentions  # noqa: E402
from rlaifv_core.rewards import (best_of_n, flatten, likelihood_from_logprobs, reward_from_logprobs,  # noqa: E402
                                  token_logprobs, unflatten)
from rlaifv_core.shapes.world import DETAIL_QUESTIONS, ShapesWorld  # noqa: E402

SELECTORS = ("reward", "reward_sum", "aligned_ppl", "reference_ppl", "oracle")
LABELS = {"reward": "RLAIF-V reward (β/T Σ Δlogπ)", "reward_sum": "reward, un-normalised", "aligned_ppl": "aligned PPL",
          "reference_ppl": "reference PPL", "oracle": "oracle (truth)"}


def n_values(max_n: int) -> list[int]:
    values, n = [], 1
    while n <= max_n:
        values.append(n)
        n *= 2
    return values + ([max_n] if values[-1] != max_n else [])


def oracle_scores(truth, answers: list[str]) -> list[float]:
    scores = []
    for answer in answers:
        named = positive_mentions(answer)
        wrong = sum(1 for o in named if o not in truth)
        scores.append(-1000.0 * wrong + (len(named) - wrong))
    return scores


def evaluate_selection(truths, candidates, scores, n: int) -> dict:
    """Metrics of best-of-n on each disjoint block of n candidates, averaged over blocks."""
    blocks = len(candidates[0]) // n
    per_block = []
    for b in range(blocks):
        cands = [c[b * n:(b + 1) * n] for c in candidates]
        picked = best_of_n(cands, [s[b * n:(b + 1) * n] for s in scores])
        answers = [c[j] for c, j in zip(cands, picked)]
        metrics = chair(truths, answers)
        metrics["words"] = sum(len(a.split()) for a in answers) / max(len(answers), 1)
        per_block.append(metrics)
    keys = ("chair_i", "chair_s", "recall", "words", "mentions_per_answer")
    out = {k: sum(m[k] for m in per_block) / blocks for k in keys}
    if blocks > 1:
        out["chair_i_sem"] = math.sqrt(sum((m["chair_i"] - out["chair_i"]) ** 2 for m in per_block)
                                       / (blocks - 1) / blocks)
    out["blocks"] = blocks
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reward_model", help="aligned checkpoint folder (or LoRA adapter folder, hub id)")
    parser.add_argument("--reference", default="shapes:policy", help="the reward model's reference (default shapes:policy)")
    parser.add_argument("--base-model", default=None, help="base of a LoRA reward model (default: its adapter config's)")
    parser.add_argument("--policy", default="shapes:policy", help="the model whose samples are ranked")
    parser.add_argument("--scenes", type=int, default=300)
    parser.add_argument("--seed", type=int, default=10_000, help="held-out scene seed (eval.shapes_seed)")
    parser.add_argument("--max-n", type=int, default=32)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "runs" / "bench" / "best_of_n"))
    args = parser.parse_args(argv)
    timings: dict[str, float] = {}

    world = ShapesWorld()
    scenes = world.scenes(args.seed, args.scenes)
    truths = [s.objects for s in scenes]
    prompts = [VisualPrompt(s.render(), DETAIL_QUESTIONS[i % len(DETAIL_QUESTIONS)]) for i, s in enumerate(scenes)]

    started = time.time()
    policy = open_backend(args.policy, device=args.device)
    settings = GenerationSettings(n=args.max_n, temperature=args.temperature, top_k=None, top_p=1.0,
                                  max_new_tokens=args.max_new_tokens, seed=args.seed)
    candidates = policy.generate(prompts, settings, seeds=[args.seed * 1000 + i for i in range(len(prompts))])
    timings["sample_s"] = time.time() - started
    flat_prompts, flat_answers = flatten(prompts, candidates)

    started = time.time()
    reference = policy if args.reference == args.policy else open_backend(args.reference, device=args.device)
    ref_logps = token_logprobs(reference, flat_prompts, flat_answers)
    del reference, policy
    aligned = open_backend(args.reward_model, base_model=args.base_model, device=args.device)
    aligned_logps = token_logprobs(aligned, flat_prompts, flat_answers)
    timings["score_s"] = time.time() - started

    def per_prompt(values):
        return unflatten(values, candidates)

    scores = {
        "reward": per_prompt(reward_from_logprobs(aligned_logps, ref_logps, beta=args.beta)),
        "reward_sum": per_prompt(reward_from_logprobs(aligned_logps, ref_logps, beta=args.beta, normalise=False)),
        "aligned_ppl": per_prompt(likelihood_from_logprobs(aligned_logps)),
        "reference_ppl": per_prompt(likelihood_from_logprobs(ref_logps)),
        "oracle": [oracle_scores(t, c) for t, c in zip(truths, candidates)],
    }
    results = {sel: {n: evaluate_selection(truths, candidates, scores[sel], n) for n in n_values(args.max_n)}
               for sel in SELECTORS}

    # -- report ------------------------------------------------------------------------------------
    ns = n_values(args.max_n)
    print(f"\nbest-of-N on {args.scenes} held-out shapes scenes (seed {args.seed}), candidates from {args.policy} "
          f"at T={args.temperature}\nreward model {args.reward_model}, reference {args.reference}, β={args.beta}\n")
    for metric, title in (("chair_i", "CHAIRi (lower is better)"), ("chair_s", "CHAIRs"), ("recall", "recall"),
                          ("words", "words per answer")):
        print(title)
        print(f"{'N':>4} | " + " | ".join(f"{s:>13}" for s in SELECTORS))
        for n in ns:
            print(f"{n:>4} | " + " | ".join(f"{results[s][n][metric]:>13.4f}" for s in SELECTORS))
        print()
    print(f"sampling {timings['sample_s']:.1f}s, scoring {timings['score_s']:.1f}s")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "settings": {k: v for k, v in vars(args).items() if k != "out"} | {"n_values": ns, "top_k": None},
        "models": {"reward": aligned.identity, "reference": args.reference, "policy": args.policy},
        "results": {s: {str(n): m for n, m in r.items()} for s, r in results.items()},
        "timings": timings,
        "examples": [{"truth": sorted(" ".join(o) for o in t), "candidates": c[:4],
                      "reward": [round(x, 4) for x in scores["reward"][i][:4]]}
                     for i, (t, c) in enumerate(list(zip(truths, candidates))[:5])],
    }
    (out / "best_of_n.json").write_text(json.dumps(record, indent=1, default=str))
    plot(results, ns, out / "best_of_n.png", title=f"best-of-N, {args.scenes} shapes scenes")
    print(f"wrote {out / 'best_of_n.json'} and {out / 'best_of_n.png'}")
    return record


def plot(results: dict, ns: list[int], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, name in ((axes[0], "chair_i", "CHAIRi"), (axes[1], "chair_s", "CHAIRs")):
        for sel in SELECTORS:
            ax.plot(ns, [results[sel][n][metric] for n in ns], marker="o", label=LABELS[sel],
                    linestyle="--" if sel == "oracle" else "-")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_xlabel("N (candidates)")
        ax.set_ylabel(f"{name} (lower is better)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
