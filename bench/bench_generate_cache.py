"""A cached re-run of `flows/generate.py` vs. its first run: wall time of the whole command.

    python bench/bench_generate_cache.py                    # the default shapes config, 3 cached re-runs
    python bench/bench_generate_cache.py --reruns 5 prompts.per_iteration=100

Starts a Prefect server on a free local port (as a user with the UI open has one; without it every
command would also pay for starting a temporary server), runs `python flows/generate.py` once on an
empty store, then `--reruns` more times with nothing changed. Each run is a fresh process, timed from
launch to exit. Prints the first run, each re-run, the median ratio, how many task runs the re-runs
found `Cached` (all of them, or it says so), and the machine; writes JSON with `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(env: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                               str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return server, url
        except OSError:
            time.sleep(0.5)
    server.terminate()
    raise SystemExit("the Prefect server did not answer within 120 s")


def timed_run(args: list[str], env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "flows" / "generate.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"flows/generate.py failed (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return seconds, done.stdout + done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reruns", type=int, default=3)
    parser.add_argument("--out", default=None, help="write the measurements as JSON here")
    parser.add_argument("overrides", nargs="*", help="config overrides passed to flows/generate.py")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-generate-cache-"))
    env = {**os.environ, "PREFECT_HOME": str(home / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "HF_HUB_OFFLINE": "1"}
    server, url = start_server(env)
    env["PREFECT_API_URL"] = url
    command = [f"store.url={home / 'runs'}", "store.run_name=bench", *args.overrides]
    try:
        first, _ = timed_run(command, env)
        reruns, states = [], []
        for _ in range(args.reruns):
            seconds, log = timed_run(command, env)
            reruns.append(seconds)
            states.append(re.findall(r"Task run '[^']+' - Finished in state (\w+)", log))
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)

    ratio = statistics.median(reruns) / first
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    print(f"machine: {machine['platform']}, {machine['cpus']} CPUs, Python {machine['python']}")
    print(f"first run (empty store):   {first:6.2f} s")
    for n, (seconds, finished) in enumerate(zip(reruns, states), 1):
        print(f"re-run {n} (nothing changed): {seconds:6.2f} s   {finished.count('Cached')} of {len(finished)} "
              "task runs Cached")
    print(f"median re-run / first run: {ratio:.1%}")
    if any(not finished or set(finished) != {"Cached"} for finished in states):
        print("NOT ALL CACHED: a re-run computed something (see the counts above)")
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine, "first_s": first, "reruns_s": reruns,
                                              "rerun_task_states": states, "ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
