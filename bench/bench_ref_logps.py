"""Cached reference log-probs vs. a live reference model: DPO steps/s, peak memory, resident parameters.

    python bench/bench_ref_logps.py                       # ModelSize() defaults (~1.6 M params), 8 pairs/step
    python bench/bench_ref_logps.py --steps 40 --repeats 3 --out bench/results/ref_logps.json

Same model, same pairs, same seed and the same TRL trainer class (`RLAIFVDPOTrainer`) in both modes:

* cached: reference log-probs computed once (`compute_reference_logps`, its own subprocess and
  timed as the one-off cost), training holds the policy only;
* live:   an explicit `ref_model` (TRL computes the reference forward every step).

Every run is a fresh subprocess, so its peak RSS (ru_maxrss) is its own; runs alternate cached/live
`--repeats` times and the medians are compared. Prints the ratios and machine info and writes JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# -- workers (one per subprocess) ----------------------------------------------------------------------------
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _threads(job: dict) -> None:
    import torch

    if job.get("threads"):
        torch.set_num_threads(job["threads"])


def worker_reference(job: dict) -> dict:
    import pandas as pd

    from rlaifv_core import training as D
    from rlaifv_core.config import DPOConfig

    _threads(job)
    pairs = pd.read_parquet(job["pairs"])
    start = time.perf_counter()
    frame = D.compute_reference_logps(job["model_dir"], pairs, dpo=DPOConfig(**job["dpo"]),
                                      batch_size=job["dpo"]["batch_size"])
    seconds = time.perf_counter() - start
    frame.to_parquet(job["ref_out"], index=False)
    return {"seconds": seconds, "pairs": len(pairs), "peak_rss_mb": _peak_rss_mb()}


def worker_train(job: dict) -> dict:
    import pandas as pd
    import torch
    from transformers import PrinterCallback, TrainerCallback

    from rlaifv_core import training as D
    from rlaifv_core.config import DPOConfig

    _threads(job)
    dpo = DPOConfig(**job["dpo"])
    pairs = pd.read_parquet(job["pairs"])
    cached = job["mode"] == "cached"
    ref_frame = pd.read_parquet(job["ref"]) if cached else None
    dataset = D.to_trl_dataset(pairs, ref_logps=ref_frame)
    rss_before_models = _rss_mb()
    model, processor = D.load_training_model(job["model_dir"], dpo)
    D.freeze_vision_tower(model)
    ref_model = None if cached else D.load_training_model(job["model_dir"], dpo)[0]
    args = D.build_trl_config(dpo, job["out"], len(pairs), overrides={"save_strategy": "no", "logging_steps": 10_000})
    trainer = D.RLAIFVDPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=dataset,
                                 processing_class=processor)
    modules = {name: type(value).__name__ for name, value in vars(trainer).items()
               if isinstance(value, torch.nn.Module)}
    held = D.held_parameters(trainer)
    times: list[float] = []

    class _Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter())

    trainer.add_callback(_Clock())
    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    trainer.train()
    warmup = job["warmup"]
    timed = len(times) - warmup
    steps_per_s = timed / (times[-1] - times[warmup - 1]) if warmup else len(times) / (times[-1] - start)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {"mode": job["mode"], "steps": len(times), "timed_steps": timed, "steps_per_s": steps_per_s,
            "seconds_per_step": 1.0 / steps_per_s, "peak_rss_mb": _peak_rss_mb(),
            "rss_before_models_mb": rss_before_models, "held_parameters": held, "modules_held": modules,
            "ref_model_is_none": trainer.ref_model is None, "torch_threads": torch.get_num_threads(),
            "final_train_loss": trainer.state.log_history[-1].get("train_loss"), "losses": losses}


# -- driver ------------------------------------------------------------------------------------------------
def machine_info() -> dict:
    import torch
    import transformers
    import trl

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "load_average": os.getloadavg(), "torch": torch.__version__, "transformers": transformers.__version__,
            "trl": trl.__version__, "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return info


def build_inputs(folder: Path, num_pairs: int) -> tuple[Path, Path, int]:
    import pandas as pd

    from rlaifv_core.shapes.models import ModelSize, build_model, build_processor
    from rlaifv_core.shapes.world import ShapesWorld

    processor = build_processor()
    model = build_model(processor, ModelSize(), seed=0)
    params = sum(p.numel() for p in model.parameters())
    model_dir = folder / "model"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    world, rng = ShapesWorld(), random.Random(0)
    rows = []
    for i in range(num_pairs):
        scene = world.scene(i)
        buffer = io.BytesIO()
        scene.render().save(buffer, format="PNG")
        chosen = world.caption(scene)
        rejected = world.caption(scene, rng, noisy=True)
        if rejected == chosen:
            rejected = chosen.replace(" .", " and a red circle .", 1)
        rows.append({"image": {"bytes": buffer.getvalue(), "path": None}, "question": "describe the image in detail .",
                     "chosen": chosen, "rejected": rejected, "idx": str(i)})
    pairs = folder / "pairs.parquet"
    pd.DataFrame(rows).to_parquet(pairs, index=False)
    return model_dir, pairs, params


def run_worker(kind: str, job: dict, folder: Path) -> dict:
    job_file = folder / f"job-{kind}-{time.monotonic_ns()}.json"
    out_file = job_file.with_suffix(".out.json")
    job_file.write_text(json.dumps(job))
    subprocess.run([sys.executable, __file__, "--worker", kind, "--job", str(job_file), "--result", str(out_file)],
                   check=True, cwd=ROOT)
    return json.loads(out_file.read_text())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="timed optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps")
    parser.add_argument("--batch", type=int, default=8, help="pairs per step")
    parser.add_argument("--pairs", type=int, default=64, help="distinct pairs (cycled through)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating cached/live runs per mode")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per run (1: steadier on a shared machine; 0: torch's default)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "ref_logps.json"))
    parser.add_argument("--worker", choices=["reference", "train"], help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        job = json.loads(Path(args.job).read_text())
        result = worker_reference(job) if args.worker == "reference" else worker_train(job)
        Path(args.result).write_text(json.dumps(result))
        return result

    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="bench-ref-logps-") as tmp:
        folder = Path(tmp)
        model_dir, pairs, params = build_inputs(folder, args.pairs)
        dpo = {"batch_size": args.batch, "max_steps": args.warmup + args.steps, "learning_rate": 1e-4,
               "warmup_ratio": 0.0, "beta": 0.1, "loss_type": ["sigmoid"], "seed": 42}
        common = {"model_dir": str(model_dir), "pairs": str(pairs), "dpo": dpo, "warmup": args.warmup,
                  "threads": args.threads}
        reference = run_worker("reference", {**common, "ref_out": str(folder / "ref.parquet")}, folder)
        runs: dict[str, list[dict]] = {"cached": [], "live": []}
        for repeat in range(args.repeats):
            for mode in ("cached", "live"):
                result = run_worker("train", {**common, "mode": mode, "ref": str(folder / "ref.parquet"),
                                              "out": str(folder / f"out-{mode}-{repeat}")}, folder)
                runs[mode].append(result)
                print(f"  {mode:6s} run {repeat + 1}: {result['steps_per_s']:.2f} steps/s, "
                      f"peak RSS {result['peak_rss_mb']:.0f} MB, {result['held_parameters']:,} params held",
                      flush=True)
    summary = {mode: {"steps_per_s": statistics.median(r["steps_per_s"] for r in rs),
                      "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rs),
                      "held_parameters": rs[0]["held_parameters"], "modules_held": rs[0]["modules_held"],
                      "ref_model_is_none": rs[0]["ref_model_is_none"]}
               for mode, rs in runs.items()}
    cached, live = summary["cached"], summary["live"]
    same_losses = all(abs(a - b) < 1e-4 for a, b in zip(runs["cached"][0]["losses"], runs["live"][0]["losses"]))
    ratios = {"steps_per_s_cached_over_live": cached["steps_per_s"] / live["steps_per_s"],
              "peak_rss_live_over_cached": live["peak_rss_mb"] / cached["peak_rss_mb"],
              "held_parameters_live_over_cached": live["held_parameters"] / cached["held_parameters"]}
    # the one-off reference pass, amortised: per-step cost of cached training including it
    total_steps = args.warmup + args.steps
    amortised = 1.0 / (1.0 / cached["steps_per_s"] + reference["seconds"] / total_steps)
    result = {"benchmark": "ref_logps", "model_parameters": params, "pairs_per_step": args.batch,
              "timed_steps": args.steps, "warmup_steps": args.warmup, "repeats": args.repeats,
              "torch_threads": runs["cached"][0]["torch_threads"],
              "machine": info | {"load_average_end": os.getloadavg()}, "reference_pass": reference,
              "summary": summary, "ratios": ratios, "target_steps_ratio": 1.25,
              "meets_target": ratios["steps_per_s_cached_over_live"] >= 1.25,
              "cached_steps_per_s_including_reference_pass": amortised,
              "loss_trajectories_match": same_losses, "runs": runs}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nmachine: {info['cpu']} ({info['usable_cpus']} usable CPUs, load {info['load_average'][0]:.2f}), "
          f"torch {info['torch']}, transformers {info['transformers']}, trl {info['trl']}")
    print(f"model: {params:,} parameters; {args.batch} pairs/step; {args.steps} timed steps × {args.repeats} runs "
          f"per mode; {result['torch_threads']} torch thread(s)")
    print(f"reference pass (once): {reference['seconds']:.2f} s for {reference['pairs']} pairs, "
          f"peak RSS {reference['peak_rss_mb']:.0f} MB")
    for mode in ("cached", "live"):
        s = summary[mode]
        print(f"{mode:6s}: {s['steps_per_s']:.2f} steps/s, peak RSS {s['peak_rss_mb']:.0f} MB, "
              f"{s['held_parameters']:,} parameters held in {sorted(s['modules_held'])}")
    print(f"ratios: steps/s cached/live = {ratios['steps_per_s_cached_over_live']:.2f}× (target ≥ 1.25×: "
          f"{'met' if result['meets_target'] else 'NOT met'}), peak RSS live/cached = "
          f"{ratios['peak_rss_live_over_cached']:.2f}×, parameters held live/cached = "
          f"{ratios['held_parameters_live_over_cached']:.2f}×")
    print(f"cached incl. the one-off reference pass over {total_steps} steps: {amortised:.2f} steps/s; "
          f"loss trajectories equal: {same_losses}")
    print(f"written: {out}")
    return result


if __name__ == "__main__":
    main()
