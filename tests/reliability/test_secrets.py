"""Secrets and trust: API keys never reach the run store, the Prefect database, artifacts or logs; model
code from a repository runs only when configured; weights load only from safetensors (a pickle is never
unpickled); image URLs are fetched with a size and a time limit."""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch

from rlaifv_core.backends.hf import HFBackend
from rlaifv_core.config import DPOConfig, ModelSpec, load_config
from rlaifv_core.images import BadImage, fetch_image, load_image_bytes
from tests.helpers import free_port
from tests.servers.openai_vlm import Fault, OpenAIVLMServer, serve_in_thread, tiny_vlm_backend

from .conftest import ROOT, bomb_png, every_record, moto_server, png_bytes, tiny_config

OPENAI_MARK = "sk-MARKER-openai-c0ffee-4b1d"
AWS_MARK = "MARKER-aws-secret-d15ea5e-77"
MARKS = (OPENAI_MARK, AWS_MARK)


def _leaks(blob: bytes | str) -> list[str]:
    data = blob.encode() if isinstance(blob, str) else blob
    return [m for m in MARKS if m.encode() in data]


def _prefect_records() -> dict[str, str]:
    """Everything the Prefect API holds about the runs: artifacts, flow and task runs (parameters,
    states), logs, block documents (secrets included), variables; as JSON text by kind."""
    from prefect.client.orchestration import get_client

    async def fetch():
        async with get_client() as client:
            artifacts = await every_record(client.read_artifacts)
            flow_runs = await every_record(client.read_flow_runs)
            task_runs = await every_record(client.read_task_runs)
            logs = await every_record(client.read_logs)
            blocks = await client.read_block_documents(include_secrets=True)
            variables = await client.read_variables()
            return {"artifacts": artifacts, "flow_runs": flow_runs, "task_runs": task_runs, "logs": logs,
                    "blocks": blocks, "variables": variables}

    records = asyncio.run(fetch())
    return {kind: json.dumps([r.model_dump(mode="json") for r in items], default=str)
            for kind, items in records.items()}


def _capture_every_log_record(monkeypatch) -> list[str]:
    """Every log record any logger emits from now on, formatted with its traceback, whatever handlers
    the logging configuration has (Prefect and uvicorn reconfigure logging while flows and servers
    start); our own loggers and the HTTP/S3 client stacks at DEBUG level."""
    seen: list[str] = []
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    real_handle = logging.Logger.handle

    def handle(self, record):
        seen.append(formatter.format(record))
        return real_handle(self, record)

    monkeypatch.setattr(logging.Logger, "handle", handle)
    for name in ("rlaifv_core", "tasks", "flows", "openai", "httpx", "httpcore", "botocore", "aiobotocore", "s3fs",
                 "fsspec"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.DEBUG)
    return seen


@pytest.mark.timeout(300)
def test_api_keys_never_reach_the_store_the_database_artifacts_or_logs(prefect_api, tmp_path, tiny_model_dir,
                                                                         monkeypatch, logging_handlers_restored, capfd):
    import boto3
    import prefect.settings
    from flows.iterate import iterate

    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_MARK)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_MARK)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "reliability-test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    s3 = moto_server(port)
    endpoint = f"http://127.0.0.1:{port}"
    server = OpenAIVLMServer(tiny_vlm_backend(seed=0, name="tiny-vlm"), model_name="tiny-vlm", api_key=OPENAI_MARK)
    base_url, stop = serve_in_thread(server.app)
    server.faults.push(Fault.http(503), Fault.http(500))  # retries, with warnings in the logs
    home = tmp_path / "prefect-home"
    try:
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket="secret-runs")
        config = tiny_config("s3://secret-runs/store", tiny_model_dir, f"store.endpoint_url={endpoint}",
                             "models.labeler.backend=openai", "models.labeler.name_or_path=tiny-vlm",
                             f"models.labeler.base_url={base_url}", "models.labeler.max_retries=3",
                             "models.labeler.max_concurrency=2", run="secrets")
        log_records = _capture_every_log_record(monkeypatch)
        with prefect.settings.temporary_settings({prefect.settings.PREFECT_HOME: home}):
            summary = iterate(config)
        assert summary["iterations"][1]["selected"]
        assert len(server.requests) > 2 and all(r["authorized"] for r in server.requests[2:])  # the key was used

        leaks: dict[str, list[str]] = {}
        objects = client.list_objects_v2(Bucket="secret-runs")["Contents"]  # the run store
        assert any(o["Key"].endswith("iter-1/pairs.parquet") for o in objects)
        for obj in objects:
            body = client.get_object(Bucket="secret-runs", Key=obj["Key"])["Body"].read()
            if _leaks(body) or _leaks(obj["Key"]):
                leaks[f"s3://secret-runs/{obj['Key']}"] = _leaks(body + obj["Key"].encode())
        database = Path(prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split(":///", 1)[1])
        db_files = list(database.parent.glob(database.name + "*"))  # the database, its WAL and shared memory
        assert database in db_files and b"secrets-iterations" in database.read_bytes() + b"".join(
            p.read_bytes() for p in db_files)  # the right database: it holds this run's artifacts
        for path in db_files + [p for p in home.rglob("*") if p.is_file()]:
            if _leaks(path.read_bytes()):
                leaks[str(path)] = _leaks(path.read_bytes())
        records = _prefect_records()
        assert "secrets-iterations" in records["artifacts"] and "s3://secret-runs" in records["blocks"]
        for kind, text in records.items():
            if _leaks(text):
                leaks[f"prefect API: {kind}"] = _leaks(text)
        captured = capfd.readouterr()
        log_text = "\n".join(log_records)
        assert "retry 1/3" in log_text  # the endpoint's faults were logged ...
        for name, text in (("stdout", captured.out), ("stderr", captured.err), ("log records", log_text)):
            if _leaks(text):
                leaks[name] = _leaks(text)
        assert leaks == {}  # ... and no key anywhere
        assert _leaks(f"a control: {OPENAI_MARK} {AWS_MARK}") == list(MARKS)  # the search itself works
    finally:
        stop()
        s3.stop()


# -- model code and weights ---------------------------------------------------------------------------------
EVIL_CODE = """
from pathlib import Path
Path({marker!r}).write_text("model code from the repository ran")
from transformers import PretrainedConfig
class EvilConfig(PretrainedConfig):
    model_type = "rlaifv_evil"
"""


def test_trust_remote_code_is_off_unless_configured(tmp_path, monkeypatch):
    import transformers.dynamic_module_utils as dynamic

    for path in ("shapes.yaml", "llava15-7b.yaml"):
        config = load_config(ROOT / "configs" / path, check_machine=False)
        roles = [config.models.policy, config.models.labeler, config.models.splitter, config.models.rewriter]
        assert not any(role.trust_remote_code for role in roles + [config.models.eval_judge] if role), path
    assert ModelSpec().trust_remote_code is False
    repo, marker = tmp_path / "remote-code-repo", tmp_path / "ran.txt"
    repo.mkdir()
    (repo / "config.json").write_text(json.dumps({"model_type": "rlaifv_evil", "auto_map": {
        "AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}}))
    (repo / "evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        HFBackend.from_spec(ModelSpec(name_or_path=str(repo)))
    from rlaifv_core import training as D

    with pytest.raises(ValueError, match="trust_remote_code"):
        D.load_training_model(str(repo), DPOConfig())
    assert not marker.exists()  # refused before any of its code ran
    with pytest.raises(Exception):  # noqa: B017 - whatever fails later, the point is what ran
        HFBackend.from_spec(ModelSpec(name_or_path=str(repo), trust_remote_code=True))
    assert marker.exists()  # the control: configured on, the repository's code does run


class _Payload:
    """Unpickling this writes a marker file: proof that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('unpickled')",)


def test_weights_load_only_from_safetensors_and_pickles_are_never_unpickled(tmp_path, tiny_model_dir):
    from rlaifv_core import training as D

    marker = tmp_path / "unpickled.txt"
    pickle_only = tmp_path / "pickle-only"
    shutil.copytree(tiny_model_dir, pickle_only, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save({"language_model.lm_head.weight": _Payload(marker)}, pickle_only / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"only pickle weights \(pytorch_model.bin\); this project loads safetensors"):
        HFBackend.from_spec(ModelSpec(name_or_path=str(pickle_only)))
    with pytest.raises(OSError, match="safetensors"):
        D.load_training_model(str(pickle_only), DPOConfig())  # the training path refuses too
    both = tmp_path / "both"
    shutil.copytree(tiny_model_dir, both)
    shutil.copy(pickle_only / "pytorch_model.bin", both / "pytorch_model.bin")
    backend = HFBackend.from_spec(ModelSpec(name_or_path=str(both)))  # the safetensors weights are used
    assert sum(p.numel() for p in backend.model.parameters()) > 0
    D.load_training_model(str(both), DPOConfig())
    assert not marker.exists()
    with pytest.raises(Exception):  # noqa: B017 - the control: unpickling it does write the marker
        torch.load(pickle_only / "pytorch_model.bin", weights_only=False)["language_model.lm_head.weight"].shape
    assert marker.exists()


# -- image URLs ----------------------------------------------------------------------------------------------
class _Images(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # a body without Content-Length ends when the connection closes
    sent: dict[str, int] = {}

    def log_message(self, *args):  # quiet
        pass

    def _send(self, data: bytes, length: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        try:
            if self.path == "/ok.png":
                self._send(png_bytes(1), len(png_bytes(1)))
            elif self.path == "/bomb.png":
                self._send(bomb_png(), len(bomb_png()))
            elif self.path == "/declared-huge.png":
                self._send(b"\x89PNG", 50_000_000)
            elif self.path == "/endless.png":  # no length: 100 MB unless the client stops reading
                self._send(b"", None)
                for _ in range(1600):
                    self.wfile.write(b"\0" * 65536)
                    _Images.sent[self.path] = _Images.sent.get(self.path, 0) + 65536
            elif self.path == "/trickle.png":  # 1 byte every 0.1 s: each read is quick, the whole is not
                self._send(b"", 600)
                for _ in range(600):
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                    time.sleep(0.1)
            elif self.path == "/stall.png":  # accepts, then says nothing
                time.sleep(10)
            else:
                self.send_error(404)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should


@pytest.fixture(scope="module")
def image_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_fetch_image_returns_a_normal_image(image_server):
    data = fetch_image(f"{image_server}/ok.png", max_bytes=1_000_000, timeout_s=5)
    assert data == png_bytes(1) and load_image_bytes(data).size == (48, 48)
    with pytest.raises(BadImage, match="exceeds the 64,000,000-pixel limit"):  # fetched, then refused
        load_image_bytes(fetch_image(f"{image_server}/bomb.png", max_bytes=1_000_000, timeout_s=5))


def test_fetch_image_refuses_an_oversize_body_declared_or_streamed(image_server):
    with pytest.raises(BadImage, match="50,000,000 bytes declared, limit 1,000,000") as info:
        fetch_image(f"{image_server}/declared-huge.png", max_bytes=1_000_000, timeout_s=5)
    assert info.value.reason == "image_too_large"
    started = time.monotonic()
    with pytest.raises(BadImage, match="body exceeds the 1,000,000-byte limit") as info:
        fetch_image(f"{image_server}/endless.png", max_bytes=1_000_000, timeout_s=30)
    assert info.value.reason == "image_too_large" and time.monotonic() - started < 10
    assert f"{image_server}/endless.png" in str(info.value)


def test_fetch_image_gives_up_on_a_slow_or_stalled_server(image_server):
    for path in ("/trickle.png", "/stall.png"):
        started = time.monotonic()
        with pytest.raises(BadImage, match=r"download exceeded 1 s") as info:
            fetch_image(f"{image_server}{path}", max_bytes=1_000_000, timeout_s=1.0)
        assert info.value.reason == "fetch_timeout" and time.monotonic() - started < 2.5, path


def test_fetch_image_refuses_other_schemes_and_names_http_errors(image_server, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes(2))
    for url in (secret.as_uri(), "ftp://127.0.0.1/x.png", "gopher://x"):
        with pytest.raises(BadImage, match="only http\\(s\\) image URLs") as info:
            fetch_image(url)
        assert info.value.reason == "bad_url"
    with pytest.raises(BadImage, match=r"/missing.png: cannot fetch \(HTTPError: HTTP Error 404") as info:
        fetch_image(f"{image_server}/missing.png", timeout_s=5)
    assert info.value.reason == "fetch_failed"
