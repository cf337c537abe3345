"""Where the sharded stages run, and which tasks wait for a GPU slot (`config.scale`).

    with shard_runner(config.scale) as run:                       # thread | dask | ray
        refs = run([(sampler_0, {"prompts_ref": p, "shard": (0, 256), ...}), ...])   # results, shard order
    trainer = gpu_guarded(train_dpo, config.scale)                # holds `concurrency("gpu")` while it runs

- thread (default): the shards go to the flow's own thread task runner (`task.submit`), nothing starts;
  a role with `serve` gets one managed server for the stage, shared by its shards.
- dask (prefect-dask): the cluster at `scale.dask_address`, or a LocalCluster of `scale.dask_workers`
  processes on 127.0.0.1 (one thread each), started for the flow run and closed after it; there each
  shard of a role with `serve` starts its own server.
- ray (prefect-ray): the cluster at `scale.ray_address`, or a local Ray; every shard asks Ray for
  `scale.ray_num_gpus_per_shard` GPUs.

The runner only decides *where* a shard runs: task inputs, cache keys and results are the same on
every runner (sampling seeds are per prompt), so a run started on threads can finish on a cluster and
re-use everything already computed. Remote workers need the project installed and the run store
reachable (a shared folder, or s3:// with AWS_* in the workers' environment).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator

from prefect import Task
from prefect.futures import wait

from rlaifv_core.config import ScaleConfig
from rlaifv_core.models.served import shared_servers

ShardRun = Callable[[list[tuple[Task, dict[str, Any]]]], list[Any]]


def task_runner_for(scale: ScaleConfig):
    """A Prefect task runner for `scale.task_runner` (not started)."""
    if scale.task_runner == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner()
    if scale.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if scale.dask_address:
            return DaskTaskRunner(address=scale.dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": scale.dask_workers, "threads_per_worker": 1,
                                              "processes": True, "host": "127.0.0.1", "dashboard_address": None})
    if scale.task_runner == "ray":
        from prefect_ray import RayTaskRunner

        init_kwargs = {} if scale.ray_address else {"include_dashboard": False}
        return RayTaskRunner(address=scale.ray_address, init_kwargs=init_kwargs)
    raise ValueError(f"unknown task runner {scale.task_runner!r}")


def _ray_options(scale: ScaleConfig):
    if scale.task_runner != "ray" or not scale.ray_num_gpus_per_shard:
        return contextlib.nullcontext()
    from prefect_ray.context import remote_options

    return remote_options(num_gpus=scale.ray_num_gpus_per_shard)


@contextlib.contextmanager
def shard_runner(scale: ScaleConfig) -> Iterator[ShardRun]:
    """`run([(task, kwargs), ...])` → the tasks' results in order, computed on the configured runner
    (one task per shard, so each shard's task run can carry its own name).

    Must be used inside a flow run: the task runs report to it like `task.submit` does."""
    if scale.task_runner == "thread":
        def run_here(calls: list[tuple[Task, dict[str, Any]]]) -> list[Any]:
            with shared_servers():  # the stage's shards share one managed server per model (models.<role>.serve)
                futures = [task.submit(**call) for task, call in calls]
                wait(futures)  # every shard is done with the server before it stops, also when one failed
            return [future.result() for future in futures]

        yield run_here
        return

    with task_runner_for(scale) as runner:
        def run_there(calls: list[tuple[Task, dict[str, Any]]]) -> list[Any]:
            futures = []
            for task, call in calls:
                with _ray_options(scale):
                    futures.append(runner.submit(task, parameters=call))
            return [future.result() for future in futures]

        yield run_there


def gpu_guarded(task: Task, scale: ScaleConfig) -> Task:
    """The task, holding a slot of the global concurrency limit `scale.gpu_concurrency_limit` while
    its body runs (a cache hit takes no slot); unchanged when no limit is named.

    The limit must exist (`prefect gcl create gpu --limit 1`): naming one that does not is an error,
    not a silently unguarded GPU. Cache keys do not change: the task keeps its source and inputs."""
    limit = scale.gpu_concurrency_limit
    if not limit:
        return task
    body = task.fn

    @functools.wraps(body)
    def guarded(*args, **kwargs):
        from prefect.concurrency.sync import concurrency

        with concurrency(limit, occupy=1, strict=True):
            return body(*args, **kwargs)

    copy = task.with_options()
    copy.fn = guarded  # source_code, task_key, name and cache policy stay the original's
    return copy
