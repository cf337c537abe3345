"""What a run is called and tagged in Prefect, so it can be found and read in the UI.

    @flow(name="iterate", flow_run_name=run_name_of_config)        # the top-level run: `store.run_name`
    @flow(name="iteration", flow_run_name="iteration-{iteration}")  # subflows: what they run
    with tags(*run_tags(config, iteration)):                        # every subflow and task below it
        named(sample_task, f"sample-iter-{iteration}-shard-{i}")    # task runs: what they run

Tags: `run:<store.run_name>` on every flow and task run of a run, `iteration:<k>` on everything of
iteration k (0 = the evaluation of the starting policy). Prefect's `tags()` context propagates to
subflows and tasks created inside it, on every task runner; `tag_this_run` adds the tags to the run
that is already running (a deployment's run is created by the server with the deployment's tags).
"""

from __future__ import annotations

from typing import Any

from prefect import Task


def run_tags(config, iteration: int | None = None) -> list[str]:
    tags = [f"run:{config.store.run_name}"]
    if iteration is not None:
        tags.append(f"iteration:{iteration}")
    return tags


def named(task: Task, name: str) -> Task:
    """The task with a fixed run name (Prefect formats it with the call's parameters: no braces here)."""
    return task.with_options(task_run_name=name.replace("{", "(").replace("}", ")"))


def _config_parameter() -> Any:
    """The run's `config` parameter, or {"store": ...} for a flow that takes the sections as parameters
    (deployments/entrypoints.py); None when neither is given."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    parameters = (context.parameters or {}) if context else {}
    if "config" in parameters:
        return parameters["config"]
    return {"store": parameters["store"]} if "store" in parameters else None


def _run_name(config: Any) -> str:
    if config is None:
        from rlaifv_core.config import load_config

        config = load_config()  # the flows' default: configs/shapes.yaml
    store = (config.get("store") or {}) if isinstance(config, dict) else config.store
    if isinstance(store, dict):  # a deployment's run: parameters as JSON
        return str(store.get("run_name") or "default")
    return store.run_name


def run_name_of_config() -> str:
    """`flow_run_name` of the top-level flows: the run's `store.run_name`."""
    return _run_name(_config_parameter())


def prefixed_run_name(prefix: str):
    """`flow_run_name` callable: `<prefix>-<store.run_name>` (evaluate, train-dpo)."""
    def name() -> str:
        return f"{prefix}-{_run_name(_config_parameter())}"

    name.__name__ = f"{prefix}_run_name"
    return name


def tag_this_run(*tags: str) -> None:
    """Add tags to the flow run in progress (its subflows and tasks get them from `tags()`)."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    current = list(context.flow_run.tags or [])
    missing = [t for t in tags if t not in current]
    if not missing:
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run(context.flow_run.id, tags=current + missing)
    context.flow_run.tags = current + missing
