"""Deployments for real: a Prefect server, a process work pool, `prefect deploy` of deployments/prefect.yaml, a
worker, a run triggered the way the UI triggers it, its artifact read back through the API, the run's page in
headless Chromium, the weekly schedule (inactive by default, switchable), the `gpu` concurrency limit taken by
the model-running tasks, and `deployments/serve.py`. Everything on 127.0.0.1, stopped by the tests.

The commands run here are taken from README.md's "Running it for real" section (ports substituted), so the
README shows exactly what is tested.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from rlaifv_core.config import load_config
from tests.helpers import free_port, readme_command, readme_commands

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
OUTPUT = ROOT / "test-output"


# -- the README's commands ---------------------------------------------------------------------------


TESTED_PREFIXES = {
    "export PREFECT_SERVER_API_HOST=": "prefect_stack fixture (environment of the server)",
    "prefect server start": "prefect_stack fixture",
    "export PREFECT_API_URL=": "prefect_stack fixture (environment of every command)",
    "prefect server status --wait": "prefect_stack fixture",
    "prefect work-pool create": "deployed_run fixture",
    "prefect --no-prompt deploy": "deployed_run fixture",
    "prefect worker start": "deployed_run fixture",
    "prefect gcl create": "deployed_run fixture",
    "prefect deployment schedule ls": "test_weekly_schedule_is_inactive_by_default_and_switchable",
    "prefect deployment schedule resume": "test_weekly_schedule_is_inactive_by_default_and_switchable",
    "prefect deployment schedule pause": "test_weekly_schedule_is_inactive_by_default_and_switchable",
    "python deployments/serve.py": "test_serve_py_serves_the_same_deployments_in_one_process",
    "export AWS_ACCESS_KEY_ID=": "tests/test_s3_store.py (environment of the run)",
    "python flows/iterate.py store.url=s3://": "tests/test_s3_store.py",
    "dask scheduler": "tests/test_scale_out.py",
    "dask worker": "tests/test_scale_out.py",
    "python flows/generate.py scale.task_runner=dask scale.dask_address=": "tests/test_scale_out.py",
    "python flows/generate.py scale.task_runner=dask scale.dask_workers=": "tests/test_scale_out.py",
    "python flows/generate.py scale.task_runner=ray": "tests/test_scale_out.py",
}


def test_every_readme_command_is_run_by_a_test():
    commands = readme_commands()
    assert commands, "no commands in the README section"
    untested = [c for c in commands if not any(c.startswith(p) for p in TESTED_PREFIXES)]
    assert untested == []
    for prefix in TESTED_PREFIXES:
        readme_command(prefix)  # exactly one README line per tested command


# -- the deployment files (fast) ---------------------------------------------------------------------
def test_prefect_yaml_deploys_the_four_flows_with_configs_defaults_and_an_inactive_weekly_schedule():
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    entrypoints = {d["entrypoint"]: d for d in spec["deployments"]}
    assert set(entrypoints) == {f"deployments/entrypoints.py:{f}" for f in ("iterate", "generate", "train", "evaluate")}
    sys.path.insert(0, str(ROOT / "deployments"))
    try:
        import entrypoints as sectioned
        import steps
    finally:
        sys.path.remove(str(ROOT / "deployments"))
    for entrypoint, item in entrypoints.items():
        assert (ROOT / entrypoint.split(":")[0]).exists()
        assert item["work_pool"]["name"] == "rlaifv-local"
        # one parameter per config section, each the build step's section
        assert {k: v for k, v in item["parameters"].items() if k in sectioned.SECTIONS} == {
            k: f"{{{{ shapes.config.{k} }}}}" for k in sectioned.SECTIONS}
    (schedule,) = entrypoints["deployments/entrypoints.py:iterate"]["schedules"]
    assert schedule["active"] is False and schedule["cron"] == "0 3 * * 1"

    (step,) = spec["build"]
    (name, inputs), = step.items()
    assert name == "deployments/steps.py:config_parameter" and inputs["id"] == "shapes"
    produced = steps.config_parameter(inputs["path"])["config"]
    assert produced == load_config("configs/shapes.yaml").model_dump(mode="json")
    rendered = _render(entrypoints["deployments/entrypoints.py:generate"]["parameters"], {"shapes": {"config": produced}})
    assert rendered == sectioned.sections_of(load_config("configs/shapes.yaml")) | {"iteration_number": 1}


def _sectioned():
    sys.path.insert(0, str(ROOT / "deployments"))
    try:
        import entrypoints
    finally:
        sys.path.remove(str(ROOT / "deployments"))
    return entrypoints


@pytest.mark.parametrize("name", ["iterate", "generate", "train", "evaluate"])
def test_deployed_flows_take_the_config_sections_as_required_parameters(name):
    """The run form and the Parameters tab show one entry per section; a section and every field that
    cannot be empty are `required` in the schema, so the form does not label them "(Optional)"."""
    from prefect.utilities.callables import parameter_schema

    import flows.evaluate
    import flows.generate
    import flows.iterate
    import flows.train

    entrypoints = _sectioned()
    deployed = getattr(entrypoints, name)
    original = getattr(flows, name).__dict__[name]
    assert deployed.name == original.name  # the same flow in the UI (iterate/iterate-shapes …)
    schema = parameter_schema(deployed.fn).model_dump()
    assert set(entrypoints.SECTIONS) <= set(schema["required"])
    assert [k for k in schema["properties"] if k in entrypoints.SECTIONS] == list(entrypoints.SECTIONS)
    sampling = schema["definitions"]["SamplingConfig"]
    assert "n" in sampling["required"] and "temperature" in sampling["required"]
    assert "top_k" not in sampling["required"]  # nullable: may be left empty, stays "(Optional)"
    spec = schema["definitions"]["ModelSpec"]
    assert "name_or_path" in spec["required"] and "revision" not in spec["required"]
    assert all(p.get("description") for k, p in schema["properties"].items() if k not in entrypoints.SECTIONS)


def _render(template, values):
    from prefect.utilities.templating import apply_values

    return apply_values(template, values)


def test_kubernetes_gpu_template_renders_gpu_limits_and_keeps_credentials_in_a_kubernetes_secret():
    template = json.loads((ROOT / "deployments" / "k8s-gpu-job-template.json").read_text())
    spec = yaml.safe_load((ROOT / "deployments" / "prefect-k8s.yaml").read_text())
    properties = template["variables"]["properties"]
    for item in spec["deployments"]:
        job_variables = item["work_pool"]["job_variables"]
        assert set(job_variables) <= set(properties), set(job_variables) - set(properties)
        values = {k: v.get("default") for k, v in properties.items()} | job_variables
        manifest = _render(template["job_configuration"]["job_manifest"], values)
        pod = manifest["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == job_variables["gpu_count"] == 8
        assert container["envFrom"] == [{"secretRef": {"name": "rlaifv-aws", "optional": True}}]
        assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert "{{" not in json.dumps(manifest)
        assert not [k for k in job_variables.get("env", {}) if k.startswith("AWS_")]  # from the Secret only
        assert not [k for k in job_variables.get("env", {}) if re.search(r"KEY|SECRET|PASSWORD|_TOKEN$", k)]
    (build,) = spec["build"]
    overrides = build["deployments/steps.py:config_parameter"]["overrides"]
    config = load_config("configs/llava15-7b.yaml", overrides, check_machine=False)
    assert config.scale.gpu_concurrency_limit == "gpu" and config.store.url.startswith("s3://")


# -- a real Prefect server ---------------------------------------------------------------------------

def _json_call(request, attempts: int = 6):
    """One API call; a 503 is the server's "retry me" (e.g. SQLite busy), which Prefect's own client
    retries too, so it is retried here with backoff."""
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            if error.code != 503 or attempt == attempts - 1:
                raise
            time.sleep(0.5 * 2 ** attempt)


@dataclass
class Proc:
    """A process group started by a test, with its output in a log file; `stop()` ends the whole group."""

    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.popen.poll() is None:
            for sig, wait in ((signal.SIGINT, 15), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(self.popen.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.popen.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:  # children left in the group (flow-run subprocesses)
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _argv(command: str) -> list[str]:
    argv = command.split()
    if argv[0] == "prefect":
        argv[0] = str(BIN / "prefect")
    elif argv[0] == "python":
        argv[0] = sys.executable
    return argv


@dataclass
class PrefectStack:
    port: int
    env: dict
    home: Path
    procs: list = field(default_factory=list)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def command(self, prefix: str, **substitute) -> str:
        command = readme_command(prefix).replace("4200", str(self.port))
        for key, value in substitute.items():
            command = command.replace(key, str(value))
        return command

    def run(self, command: str, timeout: int = 180) -> str:
        done = subprocess.run(_argv(command), cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    def start(self, name: str, command: str, extra_env: dict | None = None) -> Proc:
        log = self.home / f"{name}.log"
        popen = subprocess.Popen(_argv(command), cwd=ROOT, env={**self.env, **(extra_env or {})},
                                 stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def get(self, path: str):
        return _json_call(self.api + path)

    def post(self, path: str, body: dict):
        return _json_call(urllib.request.Request(self.api + path, data=json.dumps(body).encode(), method="POST",
                                                 headers={"content-type": "application/json"}))

    def deployment(self, flow: str, name: str | None = None) -> dict:
        name = name or f"{flow}-shapes"
        found = self.post("/deployments/filter", {"flows": {"name": {"any_": [flow]}},
                                                  "deployments": {"name": {"any_": [name]}}})
        assert len(found) == 1, found
        return found[0]

    def wait_for_run(self, flow_run_id: str, timeout: float, *watch: Proc) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            run = self.get(f"/flow_runs/{flow_run_id}")
            if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                return run
            for proc in watch:
                assert proc.popen.poll() is None, f"{proc.name} exited:\n{proc.tail()}"
            time.sleep(1)
        raise AssertionError(f"flow run {flow_run_id} did not finish in {timeout}s:\n" +
                             "\n".join(p.tail() for p in watch))


@pytest.fixture(scope="module")
def prefect_stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(home), "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_RUNNER_POLL_FREQUENCY": "2",
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    stack = PrefectStack(port=port, env=env, home=home)

    def exported(prefix: str) -> dict:
        return dict(item.split("=", 1) for item in stack.command(prefix).removeprefix("export ").split())

    server_env = exported("export PREFECT_SERVER_API_HOST=")  # host, port (what the UI reads) and no telemetry
    assert server_env["PREFECT_SERVER_API_PORT"] == str(port) and server_env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    try:
        # The server's environment has no PREFECT_API_URL: the UI must find the API through the port setting alone.
        server = stack.start("server", stack.command("prefect server start"), extra_env=server_env)
        env.update(exported("export PREFECT_API_URL="))
        assert env["PREFECT_API_URL"] == stack.api
        stack.run(stack.command("prefect server status --wait"), timeout=150)  # returns once the API answers
        assert server.popen.poll() is None, server.tail()
        yield stack
    finally:
        for proc in reversed(stack.procs):
            proc.stop()


def tiny_config(store: Path, model_dir: Path, *more: str) -> dict:
    overrides = [f"store.url={store}", "store.run_name=deployed", "iteration.iterations=1", "prompts.per_iteration=4",
                 "sampling.n=4", "sampling.max_new_tokens=8", "sampling.shard_size=2", "dpo.batch_size=4",
                 "dpo.checkpoints_per_epoch=1", f"models.policy.name_or_path={model_dir}",
                 f"models.labeler.name_or_path={model_dir}", "judge.low_mass_error=false", "pairs.builder=paper", "pairs.length_balance=false",
                 "judge.threshold=0.51", "eval.shapes_scenes=4", "eval.max_new_tokens=8", "iteration.retry_delay_s=0",
                 *more]
    return load_config("configs/shapes.yaml", overrides).model_dump(mode="json")


def trigger_like_the_ui(stack: PrefectStack, deployment_id: str, parameters: dict) -> dict:
    """What the UI's "Run → Custom run" form sends."""
    return stack.post(f"/deployments/{deployment_id}/create_flow_run", {
        "state": {"type": "SCHEDULED", "message": "Run from the Prefect UI", "state_details": {}},
        "parameters": parameters, "enforce_parameter_schema": True, "tags": []})


@dataclass
class DeployedRun:
    flow_run: dict
    deployment: dict
    started: datetime


@pytest.fixture(scope="module")
def deployed_run(prefect_stack, tiny_model_dir, tmp_path_factory) -> DeployedRun:
    stack = prefect_stack
    stack.run(stack.command("prefect work-pool create"))
    stack.run(stack.command("prefect gcl create"))
    stack.run(stack.command("prefect --no-prompt deploy"), timeout=300)
    worker = stack.start("worker", stack.command("prefect worker start"))

    deployment = stack.deployment("iterate")
    started = datetime.now(timezone.utc) - timedelta(seconds=5)
    store = tmp_path_factory.mktemp("deployed-store")
    run = trigger_like_the_ui(stack, deployment["id"],  # one parameter per section
                              tiny_config(store, tiny_model_dir, "scale.gpu_concurrency_limit=gpu"))
    finished = stack.wait_for_run(run["id"], 300, worker)
    assert finished["state"]["type"] == "COMPLETED", f"{finished['state']}\n{worker.tail()}"
    return DeployedRun(flow_run=finished, deployment=deployment, started=started)


# -- the integration tests ---------------------------------------------------------------------------
@pytest.mark.slow
def test_deployed_iterate_runs_on_a_worker_and_its_table_artifact_reads_back(prefect_stack, deployed_run):
    stack = prefect_stack
    names = {(stack.get(f"/flows/{d['flow_id']}")["name"], d["name"])
             for d in stack.post("/deployments/filter", {})}
    assert names >= {("iterate", "iterate-shapes"), ("generate", "generate-shapes"), ("train-dpo", "train-dpo-shapes"),
                     ("evaluate", "evaluate-shapes")}
    shapes = load_config("configs/shapes.yaml").model_dump(mode="json")
    assert deployed_run.deployment["parameters"] == shapes  # defaults from configs/, one per section
    assert deployed_run.deployment["work_pool_name"] == "rlaifv-local"

    flow_run = deployed_run.flow_run
    assert flow_run["deployment_id"] == deployed_run.deployment["id"]
    artifacts = stack.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run["id"]]},
                                                               "type": {"any_": ["table"]}}})
    table = {a["key"]: a for a in artifacts}["deployed-iterations"]
    rows = json.loads(table["data"]) if isinstance(table["data"], str) else table["data"]
    assert [row["iteration"] for row in rows] == [0, 1]
    assert rows[0]["selected"] == "start" and rows[1]["pairs"] > 0 and "shapes.chair_s" in rows[1]


@pytest.mark.slow
def test_model_running_tasks_took_the_gpu_concurrency_limit(prefect_stack, deployed_run):
    stack = prefect_stack
    since = deployed_run.started.isoformat()

    def gpu_events(kind: str) -> list[dict]:
        events, page = [], stack.post("/events/filter", {
            "filter": {"event": {"prefix": ["prefect.concurrency-limit."]}, "occurred": {"since": since}},
            "limit": 50})
        while True:
            events += page["events"]
            if not page.get("next_page"):
                break
            page = _json_call(page["next_page"])
        return [e for e in events if e["resource"].get("prefect.resource.name") == "gpu" and e["event"].endswith(kind)]

    # The server stores events asynchronously: the last release can land a moment after the run ends.
    deadline = time.time() + 30
    while True:
        acquired, released = gpu_events(".acquired"), gpu_events(".released")
        if len(released) >= len(acquired) or time.time() > deadline:
            break
        time.sleep(1)
    tasks = {r["prefect.resource.name"].split("-iter-")[0] for e in acquired for r in e["related"]
             if r.get("prefect.resource.role") == "task-run"}
    assert {"sample", "judge", "reference-logps", "train-dpo", "evaluate"} <= tasks, tasks
    assert len(acquired) == len(released) >= 7
    limit = stack.get("/v2/concurrency_limits/gpu")
    assert limit["limit"] == 1 and limit["active_slots"] == 0


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([find_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           "--no-first-run", "--disable-default-apps", f"--user-data-dir={profile}",
                           "--virtual-time-budget=15000", *args],
                          capture_output=True, text=True, timeout=120)


def visible_text(dom: str) -> str:
    import html

    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)))


@pytest.mark.slow
def test_the_runs_page_in_the_ui_shows_the_completed_run(prefect_stack, deployed_run, tmp_path):
    if find_chromium() is None:
        pytest.skip("no headless Chromium on this machine (Debian: apt-get install chromium; .ci/run does this)")
    flow_run = deployed_run.flow_run
    url = f"http://127.0.0.1:{prefect_stack.port}/runs/flow-run/{flow_run['id']}"
    dom = chromium(["--dump-dom", url], tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = visible_text(dom.stdout)
    for expected in (flow_run["name"], "Completed", "iterate", "shapes", "rlaifv-local", "Artifacts", "Subflow Runs"):
        assert expected in text, f"{expected!r} not on the run's page: {text[:1500]}"

    OUTPUT.mkdir(exist_ok=True)
    shot = OUTPUT / "deployed-iterate-flow-run.png"
    shot.unlink(missing_ok=True)
    done = chromium(["--window-size=1400,1000", f"--screenshot={shot}", url], tmp_path / "profile-shot")
    assert done.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", done.stderr[-2000:]
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one


def _dom(url: str, profile: Path) -> str:
    done = chromium(["--dump-dom", url], profile)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_the_ui_shows_every_iterations_column_the_summary_plot_and_named_subflows(prefect_stack, deployed_run,
                                                                                   tmp_path):
    """In headless Chromium, against the server started on a random port with only PREFECT_SERVER_API_PORT
    telling the UI where its API is: the iterations table artifact has the DPO and skip columns (the UI takes
    its columns from the first row, the starting policy's), the summary artifact shows the plot as an image,
    and the run list shows the subflows by name (with their run and iteration tags)."""
    if find_chromium() is None:
        pytest.skip("no headless Chromium on this machine (Debian: apt-get install chromium; .ci/run does this)")
    import html

    stack = prefect_stack
    flow_run = deployed_run.flow_run
    assert flow_run["name"] == "deployed" and "run:deployed" in flow_run["tags"]  # named after store.run_name
    artifacts = {a["key"]: a for a in stack.post("/artifacts/filter", {
        "artifacts": {"flow_run_id": {"any_": [flow_run["id"]]}}})}
    base = f"http://127.0.0.1:{stack.port}"

    table_dom = _dom(f"{base}/artifacts/artifact/{artifacts['deployed-iterations']['id']}", tmp_path / "p1")
    headers = [html.unescape(re.sub(r"<[^>]+>", "", h)).strip()
               for h in re.findall(r"<th\b[^>]*>(.*?)</th>", table_dom, flags=re.S)]
    assert headers[:3] == ["iteration", "selected", "pairs"], headers
    assert {"dpo.loss", "dpo.rewards/accuracies", "skipped.split_failure", "skipped.empty_answer"} <= set(headers)
    assert any(h.startswith("skipped.") and h not in ("skipped.split_failure", "skipped.empty_answer")
               for h in headers), headers  # the builder's own drops (paper rule: identical, per-prompt cap)

    summary_dom = _dom(f"{base}/artifacts/artifact/{artifacts['deployed-summary']['id']}", tmp_path / "p2")
    images = re.findall(r"<img\b[^>]*\bsrc=\"(data:image/png;base64,[^\"]{1000,})\"", summary_dom)
    assert images, "no inline plot on the summary artifact's page"
    text = visible_text(summary_dom)
    assert "After 1 iteration" in text and "summary.json" in text and "config.json" in text

    runs_dom = _dom(f"{base}/v2/runs", tmp_path / "p3")  # the newer UI's run list, subflows shown
    text = visible_text(runs_dom)
    for name in ("iterate / deployed", "iteration / iteration-1", "generate / generate-iter-1", "train / train-iter-1",
                 "evaluate-checkpoints / evaluate-iter-1", "evaluate-checkpoints / evaluate-iter-0"):
        assert name in text, f"{name!r} not in the run list: {text[:2000]}"
    assert "iteration:1" in text and "run:deployed" in text


@pytest.mark.slow
def test_weekly_schedule_is_inactive_by_default_and_switchable(prefect_stack, deployed_run):
    stack = prefect_stack
    deployment_id = deployed_run.deployment["id"]
    (schedule,) = stack.get(f"/deployments/{deployment_id}")["schedules"]
    assert schedule["active"] is False and schedule["slug"] == "weekly-realignment"
    assert schedule["schedule"]["cron"] == "0 3 * * 1" and schedule["schedule"]["timezone"] == "UTC"

    listed = stack.run(stack.command("prefect deployment schedule ls"))
    assert schedule["id"] in listed and "False" in listed
    stack.run(stack.command("prefect deployment schedule resume", **{"<SCHEDULE_ID>": schedule["id"]}))
    assert stack.get(f"/deployments/{deployment_id}")["schedules"][0]["active"] is True
    stack.run(stack.command("prefect deployment schedule pause", **{"<SCHEDULE_ID>": schedule["id"]}))
    assert stack.get(f"/deployments/{deployment_id}")["schedules"][0]["active"] is False


@pytest.mark.slow
def test_serve_py_serves_the_same_deployments_in_one_process(prefect_stack, tiny_model_dir, tmp_path):
    stack = prefect_stack
    for worker in [p for p in stack.procs if p.name == "worker"]:  # serve.py instead of the worker, not beside it
        worker.stop()
        stack.procs.remove(worker)
    server = stack.procs[0]
    served = stack.start("serve", stack.command("python deployments/serve.py"))
    try:
        deadline = time.time() + 180
        while "being served" not in served.tail(20_000):
            assert time.time() < deadline, f"serve.py did not start serving:\n{served.tail()}"
            assert served.popen.poll() is None and server.popen.poll() is None, served.tail()
            time.sleep(1)
        deployment = stack.deployment("generate")
        iterate = stack.deployment("iterate")
        assert iterate["entrypoint"] == "deployments/entrypoints.py:iterate"
        assert iterate["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT.resolve())}}]
        assert [(s["active"], s["slug"]) for s in iterate["schedules"]] == [(False, "weekly-realignment")]
        assert iterate["parameters"] == load_config("configs/shapes.yaml").model_dump(mode="json")

        config = tiny_config(tmp_path / "store", tiny_model_dir)
        run = trigger_like_the_ui(stack, deployment["id"], config | {"iteration_number": 1})
        finished = stack.wait_for_run(run["id"], 240, served)
        assert finished["state"]["type"] == "COMPLETED", f"{finished['state']}\n{served.tail()}"
        assert (tmp_path / "store" / "deployed" / "iter-1" / "pairs.parquet").exists()
        assert f"'{run['name']}'" in served.tail(200_000) or run["id"] in served.tail(200_000)  # it ran here
    finally:
        served.stop()
        stack.procs.remove(served)
