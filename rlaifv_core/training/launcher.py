"""Start a training run as `dpo.launcher` says: in this process, or under `accelerate launch`.

    from rlaifv_core.training import launch
    result = launch(job)                                  # dpo.launcher: inprocess | accelerate
    python -m rlaifv_core.training.launcher JOB.json       # the entry point accelerate runs, per rank

`accelerate launch --config_file <shipped config> -m rlaifv_core.training.launcher JOB.json` runs in
a subprocess whose output is streamed line by line; the main process writes the result JSON. The
shipped accelerate configs (cpu, ddp, zero2, zero3, fsdp) are in `accelerate_configs/`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

from . import run
from .model_setup import has_cuda
from .run import TrainJob, TrainResult, _is_main_process

CONFIG_DIR = Path(__file__).resolve().parent / "accelerate_configs"


def accelerate_config_path(name: str | None) -> Path:
    """A shipped config (cpu, ddp, zero2, zero3, fsdp) or a path; default cpu without a GPU, else ddp."""
    name = name or ("ddp" if has_cuda() else "cpu")
    shipped = CONFIG_DIR / f"{name}.yaml"
    if shipped.exists():
        return shipped
    path = Path(name)
    if path.exists():
        return path
    raise FileNotFoundError(f"accelerate config {name!r}: not one of "
                            f"{sorted(p.stem for p in CONFIG_DIR.glob('*.yaml'))} and not a file")


def launch(job: TrainJob, *, log_fn: Callable[[str], None] | None = None, **kwargs) -> TrainResult:
    """Train as `job.dpo.launcher` says: in this process, or under `accelerate launch`."""
    if job.dpo.launcher == "accelerate":
        return launch_accelerate(job, log_fn=log_fn)
    return run.train(job, log_fn=log_fn, **kwargs)


def launch_accelerate(job: TrainJob, *, config: str | None = None, num_processes: int | None = None,
                      log_fn: Callable[[str], None] | None = None, timeout_s: float | None = None) -> TrainResult:
    """`accelerate launch --config_file <config> -m rlaifv_core.training.launcher JOB.json` in a subprocess; every
    output line goes to `log_fn` as it comes; the main process writes the result JSON."""
    say = log_fn or (lambda line: print(line, flush=True))
    output_dir = Path(job.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    result_path = output_dir / "result.json"
    result_path.unlink(missing_ok=True)
    job = job.model_copy(update={"result_path": str(result_path)})
    job_file = output_dir / "launch-job.json"
    job_file.write_text(job.model_dump_json(indent=1))
    config_file = accelerate_config_path(config or job.dpo.accelerate_config)
    processes = num_processes or job.dpo.num_processes
    if processes is None and not has_cuda():
        processes = 1
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file)]
    if processes:
        command += ["--num_processes", str(processes)]
    command += ["-m", "rlaifv_core.training.launcher", str(job_file)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    root = str(Path(__file__).resolve().parents[2])  # the checkout, so the ranks import this code
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    say(f"$ {' '.join(command)}")
    tail: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                          env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            say(line)
            tail = (tail + [line])[-40:]
        code = proc.wait(timeout=timeout_s)
    if code != 0 or not result_path.exists():
        raise RuntimeError(f"accelerate launch exited with {code}:\n" + "\n".join(tail))
    return TrainResult.model_validate_json(result_path.read_text())


def main(argv: list[str] | None = None) -> None:
    """`python -m rlaifv_core.training.launcher JOB.json`: train one job (one rank under `accelerate launch`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        raise SystemExit("usage: python -m rlaifv_core.training.launcher JOB.json")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    job = TrainJob.model_validate_json(Path(argv[0]).read_text())
    result = run.train(job, log_fn=lambda line: print(line, flush=True))
    if _is_main_process():
        print(f"trained {result.global_step} steps; checkpoints: {[c.step for c in result.checkpoints]}", flush=True)


if __name__ == "__main__":
    main()
