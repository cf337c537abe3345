"""The managed-server lifecycle (rlaifv_core/models/served.py) with stdlib servers as the command:
ready when /v1/models answers, an early exit is an error with the log's tail, the whole process group
is gone after the block, also when the block raises."""

from __future__ import annotations

import os
import sys

import pytest

from rlaifv_core.models.served import ServerError, managed_server, render_command

SERVER = f"{sys.executable} -m http.server {{port}} --bind 127.0.0.1 --directory {{model}}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_server_is_ready_then_gone_after_the_block(tmp_path):
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "models").write_text("{}")
    import urllib.request

    from rlaifv_core.models import served

    with managed_server(SERVER, model=str(tmp_path), name="policy", ready_timeout_s=20) as url:
        assert urllib.request.urlopen(url + "/models", timeout=2).status == 200
        (pid,) = list(served._RUNNING)
    assert not _alive(pid)  # stopped and reaped
    assert served._RUNNING == {}


def test_block_that_raises_still_stops_the_server(tmp_path):
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "models").write_text("{}")
    from rlaifv_core.models import served

    with pytest.raises(KeyError):
        with managed_server(SERVER, model=str(tmp_path), name="labeler", ready_timeout_s=20):
            (pid,) = list(served._RUNNING)
            raise KeyError("task failed")
    assert served._RUNNING == {}
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


def test_server_that_exits_early_is_an_error_with_its_log(tmp_path):
    command = f"{sys.executable} -c \"import sys; print('no such model {{model}}'); sys.exit(3)\""
    with pytest.raises(ServerError, match=r"exited with code 3[\s\S]*no such model /nowhere"):
        with managed_server(command, model="/nowhere", name="policy", ready_timeout_s=20, log_dir=tmp_path):
            pass


def test_unknown_template_field_is_named():
    with pytest.raises(ServerError, match=r"\{gpu\}"):
        render_command("vllm serve {model} --port {port} --gpu {gpu}", model="m", port=1, name="n")


def test_serve_section_is_validated_at_load():
    from pydantic import ValidationError

    from rlaifv_core.config import ModelSpec

    spec = ModelSpec(serve={"command": "vllm serve {model} --port {port} --served-model-name {name}"})
    assert spec.serve.ready_timeout_s == 600
    with pytest.raises(ValidationError, match=r"\{port\}"):
        ModelSpec(serve={"command": "vllm serve {model}"})
    with pytest.raises(ValidationError, match=r"\{gpu\}"):
        ModelSpec(serve={"command": "vllm serve {model} --port {port} --gpu {gpu}"})


def test_serving_points_an_openai_spec_at_the_checkpoint_server_and_stops_it(tmp_path):
    from rlaifv_core.config import ModelSpec
    from rlaifv_core.models import served

    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "models").write_text("{}")
    policy = ModelSpec(serve={"command": SERVER, "ready_timeout_s": 20})
    with served.serving(policy, checkpoint_dir=tmp_path) as (spec, checkpoint):
        assert (spec.backend, spec.serve, checkpoint) == ("openai", None, None)
        assert spec.base_url.startswith("http://127.0.0.1:") and spec.base_url.endswith("/v1")
        assert len(served._RUNNING) == 1
    assert served._RUNNING == {}
    plain = ModelSpec()
    with served.serving(plain, checkpoint_dir=tmp_path) as (spec, checkpoint):
        assert spec is plain and checkpoint == tmp_path


@pytest.mark.timeout(120)
def test_sampling_through_a_managed_test_server_on_a_tiny_llava(tmp_path, tiny_model_dir):
    """The sampling stage's path: a tiny LLaVA folder served by the test server, started by the same
    mechanism as vLLM (`serving`), answers a chat completion, and nothing is left running. (Not the
    shapes policy: building its bootstrap takes minutes on a fresh cache, as in CI.)"""
    import pandas as pd

    from rlaifv_core.config import ModelSpec, SamplingConfig
    from rlaifv_core.feedback.sampling import sample_candidates
    from rlaifv_core.models import forget_models, holding_models, open_model, served
    from tests.reliability.conftest import png_bytes

    command = f"{sys.executable} -m tests.servers.serve_folder {{model}} --port {{port}} --served-model-name {{name}}"
    policy = ModelSpec(name_or_path=str(tiny_model_dir), serve={"command": command, "ready_timeout_s": 90})
    prompts = pd.DataFrame({"prompt_id": ["p0"], "image": [png_bytes(0)], "question": ["describe the image ."]})
    with holding_models("sample"), served.serving(policy) as (spec, checkpoint):
        candidates = sample_candidates(open_model(spec, checkpoint), prompts, SamplingConfig(n=2, max_new_tokens=8))
        pid = next(iter(served._RUNNING))
    forget_models()
    assert len(candidates) == 2 and candidates["answer"].map(len).gt(0).all()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


def _killed_starter(tmp_path, kill_watchdog_first: bool) -> int:
    """A process that starts a server, then dies by SIGKILL (no atexit); the server's pid."""
    import signal
    import subprocess

    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "models").write_text("{}")
    script = (f"from rlaifv_core.models.served import start_server\n"
              f"url, proc, _ = start_server({SERVER!r}, model={str(tmp_path)!r}, name='p', log_dir={str(tmp_path)!r})\n"
              f"print(proc.pid, proc.rlaifv_watchdog.pid, flush=True)\nimport time; time.sleep(60)\n")
    starter = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    server_pid, watchdog_pid = (int(x) for x in starter.stdout.readline().split())
    if kill_watchdog_first:
        os.kill(watchdog_pid, signal.SIGKILL)
    os.kill(starter.pid, signal.SIGKILL)
    starter.wait()
    return server_pid


def _eventually(check, within_s: float) -> bool:
    """Whether `check()` holds within `within_s` seconds (polled every 0.1 s)."""
    import time

    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _gone(pid: int) -> bool:
    """Not running: no such process, or a zombie (exited, not yet reaped)."""
    import subprocess

    return not _alive(pid) or "Z" in subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True,
                                                    text=True).stdout


def _no_pidfiles(tmp_path) -> bool:
    return list((tmp_path / "rlaifv-servers").glob("*.pid")) == []


def test_server_of_a_killed_process_is_stopped_by_its_watchdog(tmp_path):
    """kill -9 of the flow runs no atexit; before, its server (a session of its own) ran on until the next
    start reaped it, holding a GPU meanwhile. The watchdog (a session of its own too) stops it within
    seconds and removes its pid file."""
    server_pid = _killed_starter(tmp_path, kill_watchdog_first=False)
    assert _eventually(lambda: _gone(server_pid), within_s=15)
    assert _eventually(lambda: _no_pidfiles(tmp_path), within_s=5)


def test_server_whose_watchdog_could_not_run_is_reaped_by_the_next_start(tmp_path):
    """The second line: a server orphaned with its watchdog dead is killed by the next start."""
    from rlaifv_core.models import served

    server_pid = _killed_starter(tmp_path, kill_watchdog_first=True)
    assert _alive(server_pid) and not _eventually(lambda: _gone(server_pid), within_s=2)  # orphaned
    assert served.reap_orphans(tmp_path) == 1
    assert _eventually(lambda: _gone(server_pid), within_s=5)
    assert _no_pidfiles(tmp_path)


def test_shards_of_a_stage_share_one_server_stopped_when_the_stage_ends(tmp_path):
    """Before: every shard started (and stopped) its own server, so a stage of 60 shards started vLLM
    60 times, and concurrent shards each claimed the GPU. Inside `shared_servers` (a stage's fan-out,
    flows/runner.py) the shards' `serving` calls meet one server; a different model gets its own."""
    from concurrent.futures import ThreadPoolExecutor

    from rlaifv_core.config import ModelSpec
    from rlaifv_core.models import served

    for folder in ("a", "b"):
        (tmp_path / folder / "v1").mkdir(parents=True)
        (tmp_path / folder / "v1" / "models").write_text("{}")
    policy = ModelSpec(serve={"command": SERVER, "ready_timeout_s": 20})

    def shard(folder: str) -> str:
        with served.serving(policy, checkpoint_dir=tmp_path / folder) as (spec, _):
            return spec.base_url

    with served.shared_servers():
        with ThreadPoolExecutor(4) as pool:
            urls = list(pool.map(shard, ["a", "a", "a", "b"]))
        assert len(set(urls[:3])) == 1 and urls[3] != urls[0]
        pids = list(served._RUNNING)
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)  # still up between the shards
    assert served._RUNNING == {} and not any(_alive(pid) for pid in pids)
