"""Scale-out: sampling and labeling shards on the task runner that `config.scale` names give byte-identical
results to the default thread runner (sampling seeds are per prompt); the GPU concurrency guard keeps a task's
cache identity. The Dask runs use README.md's commands ("Running it for real"), on 127.0.0.1."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from prefect import task

from flows.runner import _ray_options, gpu_guarded, task_runner_for
from rlaifv_core.config import ScaleConfig
from tests.helpers import free_port, readme_command

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TABLES = ["prompts", "candidates", "claims", "verdicts", "pairs"]



def _argv(command: str) -> list[str]:
    argv = command.split()
    argv[0] = sys.executable if argv[0] == "python" else str(BIN / argv[0])
    return argv



# -- fast: runner selection and the GPU guard ----------------------------------------------------------
def test_thread_runner_is_the_default():
    from prefect.task_runners import ThreadPoolTaskRunner

    assert ScaleConfig().task_runner == "thread" and ScaleConfig().gpu_concurrency_limit is None
    assert isinstance(task_runner_for(ScaleConfig()), ThreadPoolTaskRunner)


def test_dask_runner_connects_by_address_or_starts_a_local_cluster_on_localhost():
    pytest.importorskip("prefect_dask")
    remote = task_runner_for(ScaleConfig(task_runner="dask", dask_address="tcp://10.0.0.5:8786"))
    assert remote.address == "tcp://10.0.0.5:8786" and not remote.cluster_kwargs
    local = task_runner_for(ScaleConfig(task_runner="dask", dask_workers=3))
    assert local.address is None
    assert local.cluster_kwargs == {"n_workers": 3, "threads_per_worker": 1, "processes": True, "host": "127.0.0.1",
                                    "dashboard_address": None}


def test_ray_runner_and_gpus_per_shard():
    pytest.importorskip("prefect_ray")
    from prefect_ray.context import RemoteOptionsContext

    scale = ScaleConfig(task_runner="ray", ray_address="ray://head:10001", ray_num_gpus_per_shard=0.5)
    runner = task_runner_for(scale)
    assert runner.address == "ray://head:10001"
    with _ray_options(scale):
        assert RemoteOptionsContext.get().current_remote_options == {"num_gpus": 0.5}
    assert RemoteOptionsContext.get().current_remote_options == {}


@task(persist_result=False)
def _add_one(x: int) -> int:
    return x + 1


def test_gpu_guard_takes_the_named_limit_and_keeps_the_cache_identity(monkeypatch):
    import contextlib

    import prefect.concurrency.sync
    from tasks.sample import sample_shard

    assert gpu_guarded(sample_shard, ScaleConfig()) is sample_shard  # default: no limit, the task itself
    guarded = gpu_guarded(sample_shard, ScaleConfig(gpu_concurrency_limit="gpu"))
    assert guarded is not sample_shard and guarded.fn is not sample_shard.fn
    for attribute in ("name", "task_key", "source_code", "cache_policy", "retries", "persist_result"):
        assert getattr(guarded, attribute) == getattr(sample_shard, attribute), attribute
    assert inspect.signature(guarded.fn) == inspect.signature(sample_shard.fn)

    taken = []

    @contextlib.contextmanager
    def fake_concurrency(names, occupy=1, **kwargs):
        taken.append((names, occupy, kwargs.get("strict")))
        yield

    monkeypatch.setattr(prefect.concurrency.sync, "concurrency", fake_concurrency)
    assert gpu_guarded(_add_one, ScaleConfig(gpu_concurrency_limit="gpu")).fn(41) == 42
    assert taken == [("gpu", 1, True)]


@pytest.mark.slow
def test_a_missing_gpu_limit_fails_the_task_instead_of_running_unguarded(prefect_api):
    from prefect import flow

    guarded = gpu_guarded(_add_one.with_options(retries=0), ScaleConfig(gpu_concurrency_limit="no-such-limit"))

    @flow
    def uses_a_missing_limit() -> int:
        return guarded(1)

    with pytest.raises(Exception, match="no-such-limit"):
        uses_a_missing_limit()


# -- Dask: byte-identical to threads ---------------------------------------------------------------------
def tiny_overrides(store: Path, model_dir: Path) -> list[str]:
    # 8 prompts in 4 shards; judge.threshold just above the random labeler's P(yes) share, so that some claims
    # are rejected and pairs exist (a float that drifted between runners would flip verdicts).
    return [f"store.url={store}", "store.run_name=scale", "prompts.per_iteration=8", "sampling.n=4",
            "sampling.max_new_tokens=10", "sampling.shard_size=2", f"models.policy.name_or_path={model_dir}",
            f"models.labeler.name_or_path={model_dir}", "judge.low_mass_error=false", "pairs.builder=paper", "pairs.length_balance=false",
            "judge.threshold=0.51", "iteration.retry_delay_s=0"]


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="module")
def run_env(prefect_api):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_API_URL": prefect_api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    return env


def run_generate(command: str, store: Path, model_dir: Path, env: dict) -> Path:
    done = subprocess.run([*_argv(command), *tiny_overrides(store, model_dir)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return store / "scale" / "iter-1"


@pytest.fixture(scope="module")
def thread_run(run_env, tiny_model_dir, tmp_path_factory) -> Path:
    return run_generate("python flows/generate.py", tmp_path_factory.mktemp("threads"), tiny_model_dir, run_env)


def assert_identical(expected: Path, got: Path) -> None:
    for name in TABLES:
        assert (got / f"{name}.parquet").read_bytes() == (expected / f"{name}.parquet").read_bytes(), name
    shards = sorted(p.name for p in (expected / "shards").iterdir())
    assert len(shards) == 12 and shards == sorted(p.name for p in (got / "shards").iterdir())  # candidates, claims, verdicts × 4
    for shard in shards:
        assert (got / "shards" / shard).read_bytes() == (expected / "shards" / shard).read_bytes(), shard
    pairs = pd.read_parquet(expected / "pairs.parquet")
    assert len(pairs) > 0 and len(pd.read_parquet(expected / "candidates.parquet")) == 8 * 4


@pytest.mark.slow
def test_local_dask_cluster_of_two_workers_gives_byte_identical_pairs(thread_run, run_env, tiny_model_dir, tmp_path):
    pytest.importorskip("prefect_dask")
    command = readme_command("python flows/generate.py scale.task_runner=dask scale.dask_workers=")
    assert command.endswith("scale.dask_workers=2")
    assert_identical(thread_run, run_generate(command, tmp_path, tiny_model_dir, run_env))


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGINT, 15), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait)
        except ProcessLookupError:
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.mark.slow
def test_existing_dask_cluster_by_address_gives_byte_identical_pairs(thread_run, run_env, tiny_model_dir, tmp_path):
    pytest.importorskip("prefect_dask")
    from distributed import Client

    port = free_port()
    procs = []
    try:
        for name in ("dask scheduler", "dask worker"):
            command = readme_command(name).replace("8786", str(port))
            assert "--host 127.0.0.1" in command
            procs.append(subprocess.Popen(_argv(command), cwd=ROOT, env=run_env, start_new_session=True,
                                          stdout=open(tmp_path / f"{name.split()[1]}.log", "wb"),
                                          stderr=subprocess.STDOUT))
            time.sleep(2 if name == "dask scheduler" else 0)
        address = f"tcp://127.0.0.1:{port}"
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            command = readme_command("python flows/generate.py scale.task_runner=dask scale.dask_address=")
            got = run_generate(command.replace("8786", str(port)), tmp_path / "store", tiny_model_dir, run_env)
            ran_here = client.run(lambda: "rlaifv_core.feedback.sampling" in sys.modules and "rlaifv_core.feedback.judge" in sys.modules)
        assert len(ran_here) == 2 and any(ran_here.values()), ran_here  # the shards ran in the cluster's workers
        assert_identical(thread_run, got)
    finally:
        for proc in reversed(procs):
            _stop(proc)



# -- Ray: byte-identical to threads ----------------------------------------------------------------------
@pytest.mark.slow
def test_local_ray_gives_byte_identical_pairs(thread_run, run_env, tiny_model_dir, tmp_path):
    pytest.importorskip("prefect_ray")
    env = {**run_env, "RAY_USAGE_STATS_ENABLED": "0"}
    command = readme_command("python flows/generate.py scale.task_runner=ray")
    done = subprocess.run([*_argv(command), *tiny_overrides(tmp_path, tiny_model_dir)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "Started a local Ray instance" in done.stdout + done.stderr  # the shards went to Ray, not threads
    assert_identical(thread_run, tmp_path / "scale" / "iter-1")
