"""Serve the deployments of deployments/prefect.yaml from this one process: no work pool, no worker.

    python deployments/serve.py                 # iterate-shapes, generate-shapes, train-dpo-shapes, evaluate-shapes
    python deployments/serve.py --limit 2       # at most two flow runs at once (default 1)

Needs a Prefect API (`PREFECT_API_URL`, e.g. a `prefect server start`). The deployments are those of
prefect.yaml, read from it: the same names, entrypoints (deployments/entrypoints.py: one parameter
per config section), default parameters (its build steps run here exactly as `prefect deploy` runs
them), descriptions, tags, cron schedules (with their
active/inactive state) and concurrency limits; runs execute as subprocesses of this process, in
the repository root, with the work pool's `env` job variables added to the environment. Stop with
Ctrl-C: runs in flight are cancelled, schedules are paused.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


def _build_outputs(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the file's build steps with Prefect's own step runner (as `prefect deploy` does)."""
    from prefect.deployments.steps.core import run_steps
    from prefect.utilities.asyncutils import run_coro_as_sync

    steps = spec.get("build") or []
    return run_coro_as_sync(run_steps(steps, {}, print_function=lambda *a, **k: None)) if steps else {}


def _schedules(configs: list[dict[str, Any]] | None):
    from prefect.schedules import Cron

    schedules = []
    for item in configs or []:
        if "cron" not in item:
            raise ValueError(f"serve.py supports cron schedules only, not {item}")
        schedules.append(Cron(item["cron"], timezone=item.get("timezone"), day_or=item.get("day_or", True),
                              active=item.get("active", True), parameters=item.get("parameters") or {},
                              slug=item.get("slug")))
    return schedules


def _concurrency(config: dict[str, Any] | int | None):
    if config is None or isinstance(config, int):
        return config
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    strategy = config.get("collision_strategy", "ENQUEUE")
    return ConcurrencyLimitConfig(limit=config["limit"], collision_strategy=ConcurrencyLimitStrategy(strategy))


def load_deployments(prefect_file: Path = HERE / "prefect.yaml") -> tuple[list, dict[str, str]]:
    """The RunnerDeployments of a prefect.yaml, and the `env` job variables its deployments set."""
    from prefect.flows import Flow
    from prefect.utilities.templating import apply_values

    from rlaifv_core.config_yaml import read_config_file

    spec = read_config_file(prefect_file)  # a key twice (a pasted deployment) is an error naming it and its lines
    deployments, env = [], {}
    with contextlib.chdir(ROOT):  # step paths and entrypoints are relative to the repository root
        outputs = _build_outputs(spec)
        for item in spec["deployments"]:
            # code from this checkout: the deployment's pull step is `set_working_directory: <repository root>`,
            # as `prefect deploy` records it, so serving replaces a deployed deployment of the same name cleanly
            flow = Flow.from_source(source=str(ROOT), entrypoint=item["entrypoint"])
            parameters = apply_values(item.get("parameters") or {}, outputs)
            deployments.append(flow.to_deployment(
                name=item["name"], parameters=parameters, description=item.get("description"), tags=item.get("tags"),
                schedules=_schedules(item.get("schedules")),
                concurrency_limit=_concurrency(item.get("concurrency_limit"))))
            env.update(((item.get("work_pool") or {}).get("job_variables") or {}).get("env") or {})
    return deployments, env


def main(argv: list[str] | None = None) -> None:
    from prefect import serve

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefect-file", type=Path, default=HERE / "prefect.yaml", help="deployments to serve")
    parser.add_argument("--limit", type=int, default=1, help="flow runs at once (a GPU machine: 1)")
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # entrypoints and the default run store (`runs/`) are relative to the repository root
    deployments, env = load_deployments(args.prefect_file.resolve())
    for key, value in env.items():
        os.environ.setdefault(key, value)
    serve(*deployments, limit=args.limit)


if __name__ == "__main__":
    main()
