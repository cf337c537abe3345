"""The shapes-world loop under its variants: seeds, pair builders, oracle feedback, best-of-N SFT.

    python bench/shapes_variants.py --only headline       # 5 seeds of the default + best-of-N SFT + oracle
    python bench/shapes_variants.py                       # every variant (≈ 4 min each on 2 cores)
    python bench/shapes_variants.py --only default-s0 oracle --out runs/bench/variants
    python bench/shapes_variants.py --only headline --jobs 2   # two runs at a time, one thread each
    python bench/shapes_variants.py --only builders --jobs 2   # the pair builders and the loss, 5 seeds each + controls
    python bench/shapes_variants.py --only builders --collect   # tabulate those finished runs again, running nothing

Each variant is a full `flows/iterate.py` run (4 iterations, the default shapes config plus the
variant's overrides) in its own store folder. Every number printed is measured on the report split
(`shapes_report`: scenes that neither the prompts nor checkpoint selection ever see); selection's own
scores stay in each run's summary.json. Prints the per-iteration table of each run, the final
hallucination vs recall of every variant (the frontier), mean ± sd over each seeded family's seeds
(the selection split's beside it; how often iterations 3–4 kept the previous policy and how many
checkpoints the recall guard excluded), and writes variants.json and frontier.png.

`--jobs N` runs N variants at a time with `RLAIFV_TORCH_THREADS` = cpus / N each: the numbers are
the same (a run's results do not depend on its thread count: bench/results/shapes_variants_threads1.json),
only each variant's `seconds` then counts time shared with the others.
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
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SEEDS = range(5)
#: seeded families: `<family>-s<seed>` for every seed; "default" is the shapes config as it stands
FAMILIES: dict[str, list[str]] = {
    "default": [],
    # on-policy corrections (k continuations of each flawed answer's prefix), every correction kept
    "resample": ["pairs.builder=resample", "pairs.resample_k=8", "pairs.per_prompt=4", "pairs.length_balance=false"],
    # and each correction paired ≻ the policy's most likely failed continuation of the same prefix too
    "minimal-edit": ["pairs.builder=minimal_edit_anchor"],
    "sigmoid-only": ["dpo.loss_type=[sigmoid]"],  # the paper's loss alone: no SFT term on the chosen side
}
# and each correction paired ≻ the policy's most likely failed continuation of the same prefix too
FAMILIES["resample-failed"] = [*FAMILIES["resample"], "pairs.resample_failed_continuations=true"]
VARIANTS: dict[str, list[str]] = {
    **{f"{family}-s{seed}": [*overrides, f"iteration.seed={seed}"]
       for family, overrides in FAMILIES.items() for seed in SEEDS},
    "omission-anchor": ["pairs.anchor=omission"],
    "swap-anchor-no-length-balance": ["pairs.anchor=swap", "pairs.length_balance=false"],
    "paper-rule": ["pairs.builder=paper"],
    "paper-rule-no-length-balance": ["pairs.builder=paper", "pairs.length_balance=false"],
    "minimal-edit-no-anchor": ["pairs.anchors_per_prompt=0", "pairs.length_balance=false"],
    "oracle": ["models.labeler.backend=oracle"],
    "oracle-resample": ["models.labeler.backend=oracle", *FAMILIES["resample"]],
    "best-of-n-sft": ["pairs.builder=best_of_n", "dpo.loss_type=[sft]", "pairs.length_balance=false"],
    "recall-guard-3": ["selection.max_recall_drop=0.03"],  # selection held to the recall target
}
GROUPS = {
    "headline": [*(f"default-s{seed}" for seed in SEEDS), "best-of-n-sft", "oracle"],
    # the builders and the loss side by side, 5 seeds each, with both controls
    "builders": [*(f"{family}-s{seed}" for family in ("minimal-edit", "resample", "sigmoid-only") for seed in SEEDS),
                 "best-of-n-sft", "oracle", "oracle-resample",
                 *(f"resample-failed-s{seed}" for seed in SEEDS), "recall-guard-3"],
}
METRICS = ("chair_i", "chair_s", "recall", "f1", "words_per_answer", "mentions_per_answer",
           "hallucinated_per_answer", "correct_per_answer")
KEYS = tuple(f"shapes.{m}" for m in METRICS)  # the report split's metrics, renamed to the shapes names


def run_variant(name: str, overrides: list[str], out: Path, threads: int | None = None) -> dict:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "HF_HUB_OFFLINE": "1"}
    if threads:  # runs side by side: each its threads and its own Prefect home (temporary server, database)
        home = out / ".prefect" / name
        home.mkdir(parents=True, exist_ok=True)  # Prefect makes its home's last folder only
        env.update(RLAIFV_TORCH_THREADS=str(threads), PREFECT_HOME=str(home))
    command = [sys.executable, str(ROOT / "flows" / "iterate.py"), f"store.url={out}", f"store.run_name={name}",
               *overrides]
    started = time.time()
    log = out / f"{name}.log"
    out.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        code = subprocess.call(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    if code != 0:
        raise SystemExit(f"variant {name} failed (exit {code}); see {log}")
    seconds = round(time.time() - started, 1)
    (out / name / "bench.json").write_text(json.dumps({"seconds": seconds, "threads": threads}))
    return collect_variant(name, overrides, out / name, seconds)


def collect_variant(name: str, overrides: list[str], folder: Path, seconds: float | None) -> dict:
    """One finished run's numbers: report split per iteration, selection's split beside it, the pairs'
    audit, and how many of each iteration's checkpoints the recall guard excluded."""
    summary = json.loads((folder / "summary.json").read_text())
    config = json.loads((folder / "config.json").read_text())  # what ran, whatever the default is later
    guard = {}
    for r in summary["iterations"][1:]:
        decision = json.loads((folder / f"iter-{r['iteration']}" / "selection.json").read_text())
        guard[r["iteration"]] = {"checkpoints": len(decision["scores"]) - ("start" in decision["scores"]),
                                 "excluded_by_recall_guard": len(decision["excluded"])}
    return {"name": name, "overrides": overrides, "seconds": seconds,
            "pairs_config": config["pairs"], "dpo_loss_type": config["dpo"]["loss_type"],
            "pair_audit": audit_variant_pairs(folder),
            "iterations": [{"iteration": r["iteration"], "selected": r["selected"], "pairs": r["pairs"],
                            "dpo_reward_accuracy": (r.get("dpo") or {}).get("rewards/accuracies"),
                            **guard.get(r["iteration"], {}),
                            **{f"shapes.{m}": r["report"][f"shapes_report.{m}"] for m in METRICS},
                            "selection": {f"shapes.{m}": r["metrics"][f"shapes.{m}"] for m in METRICS}}
                           for r in summary["iterations"]]}


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
    print("iter | selected | guarded out | pairs | DPO acc. | CHAIRi | CHAIRs | recall | F1 | words | halluc./ans | "
          "correct/ans")
    for r in result["iterations"]:
        accuracy = "" if r["dpo_reward_accuracy"] is None else f"{r['dpo_reward_accuracy']:.2f}"
        guarded = f"{r['excluded_by_recall_guard']}/{r['checkpoints']}" if "checkpoints" in r else ""
        print(f"{r['iteration']:>4} | {r['selected']:>8} | {guarded:>11} | {r['pairs']:>5} | {accuracy:>8} | "
              f"{r['shapes.chair_i']:.3f} | {r['shapes.chair_s']:.3f} | {r['shapes.recall']:.3f} | "
              f"{r['shapes.f1']:.3f} | {r['shapes.words_per_answer']:.1f} | "
              f"{r['shapes.hallucinated_per_answer']:.3f} | {r['shapes.correct_per_answer']:.3f}")


def print_family(family: str, seeds: list[dict]) -> None:
    """Mean ± sd of the last iteration over a family's seeds, on the report split and on selection's."""
    print(f"\n## {family} over {len(seeds)} seeds (mean ± sd; selection split in brackets)")
    for key in KEYS:
        finals = [r["iterations"][-1][key] for r in seeds]
        chosen_on = [r["iterations"][-1]["selection"][key] for r in seeds]
        print(f"{key}: {statistics.mean(finals):.3f} ± {statistics.stdev(finals):.3f} (start "
              f"{statistics.mean(r['iterations'][0][key] for r in seeds):.3f}) "
              f"[{statistics.mean(chosen_on):.3f} ± {statistics.stdev(chosen_on):.3f}]")
    f1_rises = sum(all(b["shapes.f1"] > a["shapes.f1"] for a, b in zip(r["iterations"], r["iterations"][1:]))
                   for r in seeds)
    print(f"runs whose every iteration's selected policy is better in F1 than the previous: {f1_rises}/{len(seeds)}")
    late = [r for run in seeds for r in run["iterations"][3:] if "checkpoints" in r]  # iterations 3 and 4
    if late:
        print(f"iterations 3-4: kept the previous policy in {sum(r['selected'] == 'start' for r in late)}/{len(late)}; "
              f"checkpoints excluded by the recall guard {sum(r['excluded_by_recall_guard'] for r in late)}/"
              f"{sum(r['checkpoints'] for r in late)}")


def family_of(name: str) -> str:
    """`resample-s3` → `resample`; a single variant is its own family."""
    head, _, tail = name.rpartition("-s")
    return head if head in FAMILIES and tail.isdigit() else name


def frontier_plot(results: list[dict], path: Path) -> None:
    """CHAIRi vs recall per iteration: each family's mean path over its seeds (its seeds faint)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    start = results[0]["iterations"][0]
    ax.scatter([start["shapes.recall"]], [start["shapes.chair_i"]], marker="*", s=160, color="black",
               label="bootstrapped policy")
    families: dict[str, list[dict]] = {}
    for result in results:
        families.setdefault(family_of(result["name"]), []).append(result)
    for family, runs in families.items():
        mean_x = [statistics.mean(r["iterations"][i]["shapes.recall"] for r in runs) for i in range(len(runs[0]["iterations"]))]
        mean_y = [statistics.mean(r["iterations"][i]["shapes.chair_i"] for r in runs) for i in range(len(runs[0]["iterations"]))]
        line, = ax.plot(mean_x, mean_y, marker="o", ms=3, label=family + (f" (mean of {len(runs)})" if len(runs) > 1 else ""))
        for run in runs if len(runs) > 1 else []:
            ax.plot([r["shapes.recall"] for r in run["iterations"]], [r["shapes.chair_i"] for r in run["iterations"]],
                    color=line.get_color(), alpha=0.2, lw=0.8)
    ax.axvline(start["shapes.recall"] - 0.03, color="grey", ls="--", lw=0.8, label="recall target (−3 points)")
    ax.axhline(start["shapes.chair_i"] * 0.3, color="grey", ls=":", lw=0.8, label="CHAIRi target (−70 %)")
    ax.set(xlabel="object recall (higher is better)", ylabel="CHAIRi (lower is better)",
           title="shapes world, report split: 4 iterations per variant")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run")
    parser.add_argument("--out", default="runs/bench/variants")
    parser.add_argument("--jobs", type=int, default=1, help="variants run at a time (each with cpus/jobs threads)")
    parser.add_argument("--collect", action="store_true",
                        help="run nothing: tabulate the finished runs under --out again")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    names = [n for name in (args.only or list(VARIANTS)) for n in GROUPS.get(name, [name])]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {sorted(VARIANTS)} and groups {sorted(GROUPS)}")
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None
    started = time.time()
    missing = [n for n in names if args.collect and not (out / n / "summary.json").exists()]
    if missing:
        parser.error(f"--collect: no finished run of {missing} under {out}")
    if args.collect:
        results = [collect_variant(name, VARIANTS[name], out / name, recorded_seconds(out, name)) for name in names]
    else:
        results = run_all(names, out, args.jobs, threads)
    report(results, out, {"jobs": args.jobs, "wall_s": round(time.time() - started, 1), "collected": args.collect})


def recorded_seconds(out: Path, name: str) -> float | None:
    """A finished variant's wall time: its bench.json, else the earlier variants.json's entry."""
    mine, earlier = out / name / "bench.json", out / "variants.json"
    if mine.exists():
        return json.loads(mine.read_text())["seconds"]
    entries = json.loads(earlier.read_text())["results"] if earlier.exists() else []
    return next((r["seconds"] for r in entries if r["name"] == name), None)


def run_all(names: list[str], out: Path, jobs: int, threads: int | None) -> list[dict]:
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # each variant is a subprocess: threads only wait
        futures = [pool.submit(run_variant, name, VARIANTS[name], out, threads) for name in names]
        wait(futures, return_when=FIRST_EXCEPTION)  # a failed variant (SystemExit naming its log) stops the bench:
        pool.shutdown(wait=False, cancel_futures=True)  # no other starts, the running ones finish
        return [future.result() for future in futures]


def report(results: list[dict], out: Path, how: dict) -> None:
    for result in results:
        print_run(result)
    print("\n## final (selected policy after the last iteration) vs the bootstrapped policy")
    print("variant | CHAIRi | ΔCHAIRi | CHAIRs | ΔCHAIRs | F1 | recall | Δrecall (points) | pairs: chosen fewer / more")
    for result in results:
        first, last = result["iterations"][0], result["iterations"][-1]
        print(f"{result['name']} | {last['shapes.chair_i']:.3f} | {relative(first, last, 'shapes.chair_i'):+.0%} | "
              f"{last['shapes.chair_s']:.3f} | {relative(first, last, 'shapes.chair_s'):+.0%} | {last['shapes.f1']:.3f} | "
              f"{last['shapes.recall']:.3f} | {100 * (last['shapes.recall'] - first['shapes.recall']):+.1f} | "
              f"{result['pair_audit']['chosen_fewer_hallucinations']:.1%} / "
              f"{result['pair_audit']['chosen_more_hallucinations']:.1%}")
    for family in FAMILIES:
        seeds = [r for r in results if family_of(r["name"]) == family]
        if len(seeds) > 1:
            print_family(family, seeds)
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(), **how}
    (out / "variants.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    frontier_plot(results, out / "frontier.png")
    print(f"\nwritten: {out / 'variants.json'}, {out / 'frontier.png'}")


if __name__ == "__main__":
    main()
