"""The shapes-world loop under its variants: seeds, pair builders, oracle feedback, best-of-N SFT.

    python bench/shapes_variants.py                       # all variants (≈ 3 min each on 2 cores)
    python bench/shapes_variants.py --only default-s0 oracle --out runs/bench/variants

Each variant is a full `flows/iterate.py` run (4 iterations, the default shapes config plus the
variant's overrides) in its own store folder. Prints the per-iteration table of each run, the
final hallucination vs recall of every variant (the frontier), mean ± spread over the seeds of
the default, and writes variants.json and frontier.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

VARIANTS: dict[str, list[str]] = {
    "default-s0": ["iteration.seed=0"],
    "default-s1": ["iteration.seed=1"],
    "default-s2": ["iteration.seed=2"],
    "omission-anchor": ["pairs.anchor=omission"],
    "swap-anchor-no-length-balance": ["pairs.anchor=swap", "pairs.length_balance=false"],
    "paper-rule": ["pairs.builder=paper"],
    "paper-rule-no-length-balance": ["pairs.builder=paper", "pairs.length_balance=false"],
    "minimal-edit-no-anchor": ["pairs.anchors_per_prompt=0", "pairs.length_balance=false"],
    "oracle": ["models.labeler.backend=oracle"],
    "best-of-n-sft": ["pairs.builder=best_of_n", "dpo.loss_type=[sft]", "pairs.length_balance=false"],
}
KEYS = ("shapes.chair_i", "shapes.chair_s", "shapes.recall", "shapes.mentions_per_answer",
        "shapes.hallucinated_per_answer", "shapes.correct_per_answer")


def run_variant(name: str, overrides: list[str], out: Path) -> dict:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(ROOT / "flows" / "iterate.py"), f"store.url={out}", f"store.run_name={name}",
               *overrides]
    started = time.time()
    log = out / f"{name}.log"
    out.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        code = subprocess.call(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    if code != 0:
        raise SystemExit(f"variant {name} failed (exit {code}); see {log}")
    summary = json.loads((out / name / "summary.json").read_text())
    return {"name": name, "overrides": overrides, "seconds": round(time.time() - started, 1),
            "pair_audit": audit_variant_pairs(out / name),
            "iterations": [{"iteration": r["iteration"], "selected": r["selected"], "pairs": r["pairs"],
                            **{k: r["metrics"].get(k) for k in KEYS}} for r in summary["iterations"]]}


def audit_variant_pairs(folder: Path) -> dict:
    """Pair quality of every iteration's pairs against the truth (rlaifv_core.shapes.pair_audit)."""
    import pandas as pd

    from rlaifv_core.shapes.pair_audit import audit_pairs

    frame = pd.concat([pd.read_parquet(p) for p in sorted(folder.glob("iter-*/pairs.parquet"))], ignore_index=True)
    report = audit_pairs(frame)
    return {k: report[k] for k in ("pairs", "chosen_fewer_hallucinations", "chosen_more_hallucinations",
                                   "labeler_claim_precision")}


def relative(first: dict, last: dict, key: str) -> float:
    return (last[key] - first[key]) / first[key] if first[key] else float("nan")


def print_run(result: dict) -> None:
    audit = result["pair_audit"]
    print(f"\n## {result['name']} ({' '.join(result['overrides'])}; {result['seconds']} s)")
    print(f"pairs of all iterations: {audit['pairs']}; chosen has fewer true hallucinated objects in "
          f"{audit['chosen_fewer_hallucinations']:.1%}, more in {audit['chosen_more_hallucinations']:.1%} "
          f"(labeler claim precision {audit['labeler_claim_precision']:.3f})")
    print("iter | selected | pairs | CHAIRi | CHAIRs | recall | mentions | halluc./ans | correct/ans")
    for r in result["iterations"]:
        print(f"{r['iteration']:>4} | {r['selected']:>8} | {r['pairs']:>5} | {r['shapes.chair_i']:.3f} | "
              f"{r['shapes.chair_s']:.3f} | {r['shapes.recall']:.3f} | {r['shapes.mentions_per_answer']:.2f} | "
              f"{r['shapes.hallucinated_per_answer']:.3f} | {r['shapes.correct_per_answer']:.3f}")


def frontier_plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    start = results[0]["iterations"][0]
    ax.scatter([start["shapes.recall"]], [start["shapes.chair_i"]], marker="*", s=160, color="black",
               label="bootstrapped policy")
    for result in results:
        path_x = [r["shapes.recall"] for r in result["iterations"]]
        path_y = [r["shapes.chair_i"] for r in result["iterations"]]
        ax.plot(path_x, path_y, marker="o", ms=3, alpha=0.8, label=result["name"])
    ax.axvline(start["shapes.recall"] - 0.10, color="grey", ls="--", lw=0.8, label="recall bar (−10 points)")
    ax.axhline(start["shapes.chair_i"] * 0.5, color="grey", ls=":", lw=0.8, label="CHAIRi bar (−50 %)")
    ax.set(xlabel="object recall (higher is better)", ylabel="CHAIRi (lower is better)",
           title="shapes world: 4 iterations per variant")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run")
    parser.add_argument("--out", default="runs/bench/variants")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    names = args.only or list(VARIANTS)
    results = []
    for name in names:
        result = run_variant(name, VARIANTS[name], out)
        print_run(result)
        results.append(result)
    print("\n## final (selected policy after the last iteration) vs the bootstrapped policy")
    print("variant | CHAIRi | ΔCHAIRi | CHAIRs | ΔCHAIRs | recall | Δrecall (points) | pairs: chosen fewer / more")
    for result in results:
        first, last = result["iterations"][0], result["iterations"][-1]
        print(f"{result['name']} | {last['shapes.chair_i']:.3f} | {relative(first, last, 'shapes.chair_i'):+.0%} | "
              f"{last['shapes.chair_s']:.3f} | {relative(first, last, 'shapes.chair_s'):+.0%} | "
              f"{last['shapes.recall']:.3f} | {100 * (last['shapes.recall'] - first['shapes.recall']):+.1f} | "
              f"{result['pair_audit']['chosen_fewer_hallucinations']:.1%} / "
              f"{result['pair_audit']['chosen_more_hallucinations']:.1%}")
    seeds = [r for r in results if r["name"].startswith("default-s")]
    if len(seeds) > 1:
        print(f"\n## default over {len(seeds)} seeds (mean ± sd)")
        for key in KEYS:
            finals = [r["iterations"][-1][key] for r in seeds]
            print(f"{key}: {statistics.mean(finals):.3f} ± {statistics.stdev(finals):.3f} (start "
                  f"{statistics.mean(r['iterations'][0][key] for r in seeds):.3f})")
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    (out / "variants.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    frontier_plot(results, out / "frontier.png")
    print(f"\nwritten: {out / 'variants.json'}, {out / 'frontier.png'}")


if __name__ == "__main__":
    main()
