"""`python flows/iterate.py` with the policy, the labeler and the splitter each behind a managed server
(`models.<role>.serve`, rlaifv_core/models/served.py) on tiny models, killed with SIGKILL while its
first server is up and run again: the server's watchdog stops it after the kill; the re-run completes
with the same summary.json as the in-process run (every role's requests having reached its server) and
leaves no server process. (One served run, killed before any served stage finished, and its re-run,
rather than an uninterrupted served run and a second one to kill: each run costs half a minute.)

The servers are the test server (tests/servers/serve_folder.py) started by the mechanism that starts
vLLM, with `--in-process-seeds`: a test device that answers a sampling request as the in-process
backend does for the client's prompt seed (vLLM seeds sample j with seed + j, so a vLLM run's samples
are other, equally valid ones). The run is not vacuous: the splitter writes claims (the released split
model's prompt and parsing, `claims.preset=rlaifv-llama3`: every line of the reply is a fact), the
labeler accepts some and rejects others, pairs are built and DPO takes steps."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import _save_tiny
from tests.test_iterate import _run_iterate

#: summary.json numbers: both runs compute the same things on the same CPU; only the labeler's yes/no
#: probabilities take another route (the server's float32 log-softmax, exp'd by the client)
TOLERANCE = 1e-6


def _lean_towards_yes_no(model, processor) -> None:
    """A labeler whose first answer token is "yes" or "no" on every judge prompt, the choice varying
    with the image and question: a random tiny model spreads its mass over the vocabulary, so "yes" and
    "no" often fall outside a server's top 20 alternatives (where the in-process tally still counts them).
    Their lm_head rows become s·m̂ ± t·v: m̂ the mean direction of the last hidden state on judge prompts
    (shapes scenes, questions of random words with the judge's suffix), v the direction of its largest
    spread made orthogonal to m̂, s large enough that both words outrank every other token."""
    import io
    import random

    import torch
    from PIL import Image

    from rlaifv_core.backends.hf import HFBackend
    from tests.reliability.conftest import png_bytes

    backend = HFBackend(model.eval(), processor, name="labeler", fingerprint="test:labeler", is_vlm=True)
    words = [w for w in processor.tokenizer.get_vocab() if not w.startswith("<")]
    rng = random.Random(0)
    caught = []
    hook = model.lm_head.register_forward_hook(lambda _m, inputs, _o: caught.append(inputs[0][:, -1].detach()))
    with torch.no_grad():
        for i in range(48):  # one unpadded forward per judge prompt: its last position is the answer's
            image = Image.open(io.BytesIO(png_bytes(i // 8))).convert("RGB")
            question = f"is there {' '.join(rng.choices(words, k=rng.randint(2, 8)))} ? Please answer yes or no."
            model(**backend.encode([backend.render(question)], [image]))
    hook.remove()
    hidden = torch.cat(caught)
    mean = hidden.mean(0)
    along = mean / mean.norm()
    spread = torch.linalg.svd(hidden - mean, full_matrices=False).Vh[0]
    spread = spread - (spread @ along) * along
    yes, no = processor.tokenizer.convert_tokens_to_ids(["yes", "no"])
    weight = model.lm_head.weight.data
    weight[[yes, no]] = 0
    t = 1.5 / (hidden @ spread).abs().median()
    s = ((hidden @ weight.T).max(1).values + 1 + t * (hidden @ spread).abs()).div(hidden @ along).max()
    weight[yes], weight[no] = s * along + t * spread, s * along - t * spread


@pytest.fixture(scope="module")
def leaning_labeler_dir(tmp_path_factory):
    return _save_tiny(tmp_path_factory.mktemp("tiny-labeler"), seed=3, edit=_lean_towards_yes_no)


def test_in_process_seeds_server_answers_as_the_in_process_backend(tiny_backend):
    """The test device the comparison rests on: with `in_process_seeds` the server's n samples of a
    prompt are the in-process backend's for the client's prompt seed (a 63-bit one included, whose
    R = s·n wraps); the default, vLLM's seed + j, gives other samples; an even n is refused."""
    import io

    from PIL import Image

    from rlaifv_core.backends.base import GenerationSettings, VisualPrompt
    from tests.reliability.conftest import png_bytes
    from tests.servers.openai_vlm import OpenAIVLMServer, backend_factory, serve_in_thread

    prompts = [VisualPrompt(Image.open(io.BytesIO(png_bytes(i))).convert("RGB"), "describe the image .") for i in (0, 1)]
    settings = GenerationSettings(n=3, temperature=1.0, max_new_tokens=8)
    seeds = [12345, 2 ** 62 + 2 ** 61 + 7]
    expected = tiny_backend.generate(prompts, settings, seeds=seeds)
    for in_process in (True, False):
        server = OpenAIVLMServer(tiny_backend, model_name="m", in_process_seeds=in_process)
        base_url, stop = serve_in_thread(server.app)
        try:
            with backend_factory(base_url, "m", "RLAIFV_UNSET_TEST_KEY") as make:
                assert (make().generate(prompts, settings, seeds=seeds) == expected) is in_process
            if in_process:
                with pytest.raises(ValueError, match="odd n"):
                    server._choices({"messages": [{"role": "user", "content": "describe ."}], "n": 2, "seed": 4})
        finally:
            stop()


def _overrides(labeler: Path, splitter: Path) -> list[str]:
    return ["prompts.per_iteration=6", "sampling.n=3", "sampling.shard_size=6", "dpo.checkpoints_per_epoch=1",
            f"models.labeler.name_or_path={labeler}", f"models.splitter={{backend: hf, name_or_path: {splitter}}}",
            "claims.preset=rlaifv-llama3", "claims.max_new_tokens=8"]


def _served(requests: Path, roles=("policy", "labeler", "splitter")) -> list[str]:
    command = (f"{sys.executable} -m tests.servers.serve_folder {{model}} --port {{port}} --served-model-name {{name}} "
               f"--in-process-seeds --request-log {requests}/{{port}}.jsonl")
    return [f'models.{role}.serve={{command: "{command}", ready_timeout_s: 120, stop_grace_s: 5}}' for role in roles]


def _env(tmp: Path) -> dict:
    """The flow's environment: its own TMPDIR, where the managed servers' logs and pid files go."""
    tmp.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TMPDIR": str(tmp)}
    env.pop("PREFECT_API_URL", None)
    return env


def _finish(proc, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def _servers_running(tmp: Path) -> list[int]:
    """Live test-server processes whose environment has this TMPDIR (zombies are not running)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"tests.servers.serve_folder" in cmdline and f"TMPDIR={tmp}".encode() in environ.split(b"\0") \
                and state != "Z":
            found.append(int(entry.name))
    return found


def _requests(folder: Path) -> list[dict]:
    return [json.loads(line) for log in sorted(folder.glob("*.jsonl")) for line in log.read_text().splitlines()]


def _rows(store: Path) -> list[dict]:
    return json.loads((store / "t" / "summary.json").read_text())["iterations"]


def _numbers(row: dict, prefix: str = "") -> dict[str, float]:
    """Every number of a summary row, flattened (bools and strings, e.g. `selected`, compared apart)."""
    out = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out |= _numbers(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix + key] = float(value)
    return out


def _claims_and_verdicts(store: Path) -> tuple[int, int, int]:
    import pandas as pd

    claims = pd.read_parquet(store / "t" / "iter-1" / "claims.parquet")
    verdicts = pd.read_parquet(store / "t" / "iter-1" / "verdicts.parquet")
    accepted = [ok for row in verdicts["accepted"] for ok in row]
    return int(claims["claims"].map(len).sum()), sum(accepted), len(accepted) - sum(accepted)


@pytest.fixture(scope="module")
def in_process_run(tmp_path_factory, tiny_model_dir, other_model_dir, leaning_labeler_dir) -> Path:
    """The run store of the run with every role in-process."""
    store = tmp_path_factory.mktemp("in-process")
    _finish(_run_iterate(store, tiny_model_dir, _env(store / "tmp"), *_overrides(leaning_labeler_dir, other_model_dir)))
    return store


def _wait_for_a_ready_server(tmp: Path, proc, timeout: float = 120) -> int:
    """The pid of the first managed server once it answers /health (its port is in its log's name)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for pidfile in (tmp / "rlaifv-servers").glob("*.pid"):
            for log in tmp.glob("rlaifv-serve-*.log"):
                try:
                    if urllib.request.urlopen(f"http://127.0.0.1:{log.stem.rsplit('-', 1)[1]}/health",
                                              timeout=1).status == 200:
                        return int(pidfile.stem)
                except OSError:
                    continue
        time.sleep(0.2)
    raise AssertionError("no managed server became ready:\n" + (proc.stdout.read()[-3000:] if proc.poll() else ""))


@pytest.fixture(scope="module")
def served_run(tmp_path_factory, tiny_model_dir, other_model_dir, leaning_labeler_dir) -> dict:
    """The run with the policy, the labeler and the splitter each behind a managed server, killed with
    SIGKILL (the flow's process group: the flow and its temporary Prefect server) as soon as its first
    server, the policy's in the sampling stage, answers /health; then run again on the same store to the
    end. The kill comes before any served stage has finished, so every served stage runs in the re-run
    (what it finds finished is the in-process evaluation of the starting policy). What is running after
    the kill and after the re-run is recorded."""
    base = tmp_path_factory.mktemp("served")
    tmp, requests, store = base / "tmp", base / "requests", base / "runs"
    requests.mkdir()
    extra = [*_overrides(leaning_labeler_dir, other_model_dir), *_served(requests)]
    killed = _run_iterate(store, tiny_model_dir, _env(tmp), *extra)
    server_pid = _wait_for_a_ready_server(tmp, killed)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    killed_at, deadline = time.monotonic(), time.monotonic() + 30
    while (_servers_running(tmp) or list((tmp / "rlaifv-servers").glob("*"))) and time.monotonic() < deadline:
        time.sleep(0.2)  # the server's watchdog stops it (served.WATCHDOG)
    after_kill = {"running": _servers_running(tmp), "pidfiles": sorted(p.name for p in (tmp / "rlaifv-servers").glob("*")),
                  "seconds": time.monotonic() - killed_at}
    for log in requests.glob("*.jsonl"):  # the re-run's requests only
        log.unlink()
    _finish(_run_iterate(store, tiny_model_dir, _env(tmp), *extra))
    return {"store": store, "requests": requests, "server_pid": server_pid, "after_kill": after_kill,
            "after_rerun": {"running": _servers_running(tmp),
                            "pidfiles": sorted(p.name for p in (tmp / "rlaifv-servers").glob("*"))}}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_flow_killed_while_a_server_is_up_then_rerun_leaves_no_server(served_run):
    """kill -9 runs no atexit and no signal handler, and the server runs in a session of its own (so that
    its workers go with it): before, it outlived the flow until the next run's first start reaped it (a
    GPU held meanwhile). Its watchdog (served.WATCHDOG, a session of its own) now stops it within
    seconds of the flow's death and removes its pid file; the re-run completes and leaves nothing."""
    after_kill = served_run["after_kill"]
    assert (after_kill["running"], after_kill["pidfiles"]) == ([], []) and after_kill["seconds"] < 20
    assert (served_run["store"] / "t" / "summary.json").exists()
    assert served_run["after_rerun"] == {"running": [], "pidfiles": []}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_served_roles_give_the_in_process_summary(served_run, in_process_run, tiny_model_dir, other_model_dir,
                                                  leaning_labeler_dir):
    # every role went through its server: sampling (n = 3, with the image), yes/no, text-only splits
    asked = _requests(served_run["requests"])
    assert {r["model"] for r in asked} == {str(tiny_model_dir), str(leaning_labeler_dir), str(other_model_dir)}
    policy, labeler, splitter = ([r for r in asked if r["model"] == str(d)]
                                 for d in (tiny_model_dir, leaning_labeler_dir, other_model_dir))
    assert len(policy) == 6 and all(r["n"] == 3 and r["image"] and not r["logprobs"] for r in policy)
    assert labeler and all(r["logprobs"] and r["image"] for r in labeler)
    assert splitter and all(r["n"] == 1 and not r["image"] and not r["logprobs"] for r in splitter)
    assert all(r["status"] == 200 for r in asked)

    # not vacuous: claims, verdicts both ways, pairs and DPO steps, in both runs, and the same ones
    stores = (in_process_run, served_run["store"])
    counts = [_claims_and_verdicts(store) for store in stores]
    assert counts[0] == counts[1] and min(counts[0]) > 0, counts
    for store in stores:
        assert _rows(store)[1]["pairs"] > 0
        train_log = json.loads((store / "t" / "iter-1" / "train_log.json").read_text())
        assert [e["step"] for e in train_log if "loss" in e][0] >= 1

    a, b = _rows(in_process_run), _rows(served_run["store"])
    assert [r["selected"] for r in a] == [r["selected"] for r in b]
    numbers_a, numbers_b = [_numbers(r) for r in a], [_numbers(r) for r in b]
    assert [sorted(r) for r in numbers_a] == [sorted(r) for r in numbers_b]
    worst = max(abs(x[k] - y[k]) for x, y in zip(numbers_a, numbers_b) for k in x)
    print(f"summary.json: {sum(map(len, numbers_a))} numbers, max |served - in-process| = {worst:.3g}")
    assert worst <= TOLERANCE
