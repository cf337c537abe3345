"""Labeler throughput through a server that models a batching engine: one image at a time (the labeler
before issue 15) vs images overlapped, questions/s as a ratio in one run, verdicts compared.

    python bench/bench_labeler_server.py                  # writes bench/results/labeler_server.json
    python bench/bench_labeler_server.py --images 12 --step-s 1.0 --repeats 3

The modelled latencies are a slow GPU's (a 1 s batch, 0.2 s per uncached image): long against the
Python client's own cost per request on a shared 2-CPU machine (up to ~5 ms under load), so that the engine, not the client, is what
is measured (on a real GPU both are shorter; a client that cannot keep up shows as part-full batches,
counted in the JSON).

The server (tests/servers/batching_engine.py, in its own process so its CPU time is not the client's)
serves up to `--capacity` requests per batch; a batch takes `--step-s`, plus `--image-prefill-s` per
distinct image not in its prefix cache; a batch takes the burst of requests that arrive less than
`--gather-s` apart; requests arriving during a batch wait for the next one. Both
arms send the same questions through the project's own path, `judge_candidates` over `OpenAIBackend`,
to the same server:

* one_image_at_a_time: `max_concurrency=8`, `in_flight=1`: an image's questions with 8 requests in
  flight, the next image once the last answer is back (what the labeler did before);
* overlapped: `max_concurrency=64` (the default) and the default window: images overlap, each
  image's questions sent together.

Every arm is timed the same way: an untimed warm-up on three images (the client's connections
opened), then the median of `--repeats` runs (the server's counters and prefix cache
reset before each). Verdicts (accepted, p_yes, p_no per claim) must be identical across arms and runs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from rlaifv_core.backends.openai_api import OpenAIBackend  # noqa: E402
from rlaifv_core.config import JudgeConfig, ModelSpec  # noqa: E402
from rlaifv_core.feedback.judge import judge_candidates  # noqa: E402
from rlaifv_core.feedback.questions import rule_question  # noqa: E402
from rlaifv_core.shapes.world import OBJECT_TYPES, ShapesWorld  # noqa: E402
from tests.helpers import free_port  # noqa: E402


def workload(images: int, answers: int, claims: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Shapes-world images, `answers` answers per image with `claims` claim questions each."""
    world = ShapesWorld()
    pngs = []
    for i in range(images):
        buffer = io.BytesIO()
        world.scene(i).render().save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    prompts = pd.DataFrame({"prompt_id": [f"p{i:04d}" for i in range(images)], "image": pngs,
                            "question": ["describe the image ."] * images})
    kinds = OBJECT_TYPES * (1 + answers * claims // len(OBJECT_TYPES))
    rows = [{"prompt_id": f"p{i:04d}", "sample_idx": j,
             "questions": [rule_question(f"there is a {c} {s}") for c, s in kinds[j * claims:(j + 1) * claims]]}
            for i in range(images) for j in range(answers)]
    return prompts, pd.DataFrame(rows)


def _get(url: str, data: bytes | None = None) -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as reply:
        return json.loads(reply.read())


def start_engine(args) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.servers.batching_engine", "--port", str(port),
                             "--capacity", str(args.capacity), "--step-s", str(args.step_s),
                             "--image-prefill-s", str(args.image_prefill_s), "--gather-s", str(args.gather_s)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            _get(f"{root}/engine/stats")
            return proc, root
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the batching-engine server did not start") from None
            time.sleep(0.2)


def run_arm(root: str, prompts, claims, max_concurrency: int, in_flight: int | None, repeats: int) -> dict:
    spec = ModelSpec(backend="openai", name_or_path="engine", base_url=f"{root}/v1", max_concurrency=max_concurrency,
                     timeout_s=120)
    backend = OpenAIBackend.from_spec(spec)
    times, verdicts, engine = [], [], []
    try:  # warm-up, untimed: the client's connections to the server opened
        judge_candidates(backend, prompts.iloc[:3], claims[claims["prompt_id"].isin(prompts["prompt_id"][:3])],
                         JudgeConfig(), in_flight=in_flight)
        for _ in range(repeats):
            _get(f"{root}/engine/reset", data=b"")
            started = time.perf_counter()
            frame = judge_candidates(backend, prompts, claims, JudgeConfig(), in_flight=in_flight)
            times.append(time.perf_counter() - started)
            verdicts.append(frame[["prompt_id", "sample_idx", "accepted", "p_yes", "p_no"]])
            engine.append(_get(f"{root}/engine/stats"))
    finally:
        backend.close()
    questions = int(claims["questions"].map(len).sum())
    median = statistics.median(times)
    return {"max_concurrency": max_concurrency, "in_flight": in_flight or max_concurrency, "questions": questions,
            "times_s": times, "median_s": median, "questions_per_s": questions / median,
            "engine": engine[times.index(median)]["stats"],
            "batch_sizes_median_run": engine[times.index(median)]["sizes"]}, verdicts


def machine_info() -> dict:
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)), "load_average": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--answers", type=int, default=10, help="answers per image (sampling.n)")
    parser.add_argument("--claims", type=int, default=3, help="claims per answer")
    parser.add_argument("--capacity", type=int, default=64, help="requests the engine serves per batch")
    parser.add_argument("--step-s", type=float, default=1.0, help="latency of one batch")
    parser.add_argument("--image-prefill-s", type=float, default=0.2, help="extra per uncached image in a batch")
    parser.add_argument("--gather-s", type=float, default=0.1,
                        help="a batch takes the burst of requests arriving less than this apart")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "labeler_server.json"))
    args = parser.parse_args()
    prompts, claims = workload(args.images, args.answers, args.claims)
    proc, root = start_engine(args)
    try:
        model = _get(f"{root}/engine/stats")["model"]
        before, before_verdicts = run_arm(root, prompts, claims, 8, 1, args.repeats)
        after, after_verdicts = run_arm(root, prompts, claims, 64, None, args.repeats)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    reference = before_verdicts[0]
    identical = all(frame.equals(reference) for frame in before_verdicts + after_verdicts)
    result = {"benchmark": "labeler_server", "engine_model": model,
              "workload": {"images": args.images, "answers_per_image": args.answers, "claims_per_answer": args.claims},
              "one_image_at_a_time": before, "overlapped": after,
              "throughput_ratio": after["questions_per_s"] / before["questions_per_s"],
              "verdicts_identical": identical, "machine": machine_info()}
    for name in ("one_image_at_a_time", "overlapped"):
        arm = result[name]
        print(f"{name:>20}: {arm['questions_per_s']:.1f} questions/s (median of {args.repeats}: "
              f"{arm['median_s']:.2f} s), {arm['engine']['batches']} batches, mean batch "
              f"{arm['engine']['mean_batch']:.1f} of {args.capacity}")
    print(f"ratio {result['throughput_ratio']:.2f}x, verdicts identical: {identical}")
    print(f"engine model: {model}\nmachine: {result['machine']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"written: {args.out}")
    if not identical:
        raise SystemExit("verdicts differ between arms")


if __name__ == "__main__":
    main()
