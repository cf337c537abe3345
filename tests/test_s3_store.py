"""The run store and Prefect results on s3:// (a moto S3 server on 127.0.0.1): a small `iterate` run started
with README.md's command, then a second run in another process against another Prefect server that is all
cache hits (the bucket alone is enough to resume), and the AWS credentials, which only ever were in the
environment, are nowhere: not in any object of the bucket, not in either Prefect database."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from rlaifv_core.config import load_config
from tests.helpers import free_port, readme_command

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BUCKET = "rlaifv-runs"




@pytest.fixture()
def s3_endpoint(tmp_path):
    """`moto_server -H 127.0.0.1 -p <port>`, stopped after the test."""
    port = free_port()
    log = tmp_path / "moto.log"
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=5).close()
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.time() < deadline, "moto_server did not start:\n" + log.read_text()
                time.sleep(0.3)
        yield endpoint
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def tiny_overrides(model_dir: Path) -> list[str]:
    return ["store.run_name=s3run", "iteration.iterations=1", "prompts.per_iteration=4", "sampling.n=4",
            "sampling.max_new_tokens=8", "sampling.shard_size=2", "dpo.batch_size=4", "dpo.checkpoints_per_epoch=1",
            f"models.policy.name_or_path={model_dir}", f"models.labeler.name_or_path={model_dir}",
            "pairs.builder=paper", "pairs.length_balance=false", "judge.threshold=0.51", "eval.shapes_scenes=4",
            "eval.max_new_tokens=8", "iteration.retry_delay_s=0"]


def _files_containing(root: Path, needles: list[bytes]) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and any(n in p.read_bytes() for n in needles)]


@pytest.mark.slow
def test_iterate_on_s3_rerun_is_all_cache_hits_and_no_credential_is_stored(s3_endpoint, tiny_model_dir, tmp_path,
                                                                           monkeypatch):
    import boto3
    import s3fs

    # Marker credentials (moto accepts any): they must never show up in anything the run stores.
    secrets = {"AWS_ACCESS_KEY_ID": f"AKIDMARKER{uuid.uuid4().hex[:10].upper()}",
               "AWS_SECRET_ACCESS_KEY": f"secret-marker-{uuid.uuid4().hex}"}
    exported = readme_command("export AWS_ACCESS_KEY_ID=").removeprefix("export ").split()
    assert [item.split("=", 1)[0] for item in exported] == list(secrets)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**secrets, "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=BUCKET)

    # 1. README's command (endpoint port substituted, tiny settings appended), Prefect on its own temporary server
    command = readme_command("python flows/iterate.py store.url=s3://").replace("http://127.0.0.1:9000", s3_endpoint)
    store_url = re.search(r"store\.url=(\S+)", command).group(1)
    assert store_url == f"s3://{BUCKET}/shapes"
    prefect_home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "RLAIFV_CACHE": str(tmp_path / "cache"), "TMPDIR": str(tmp_path)})
    argv = [sys.executable, *command.split()[1:], *tiny_overrides(tiny_model_dir)]
    first = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    run_root = f"{BUCKET}/shapes/s3run"
    keys = fs.find(BUCKET)
    assert f"{run_root}/summary.json" in keys and f"{run_root}/iter-1/pairs.parquet" in keys
    assert any(k.startswith(f"{run_root}/.prefect-results/") for k in keys)  # Prefect's results are in the bucket
    assert any(re.fullmatch(rf"{run_root}/iter-1/checkpoints/step-\d+/_manifest.json", k) for k in keys)
    summary = json.loads(fs.cat_file(f"{run_root}/summary.json"))
    assert summary["iterations"][1]["pairs"] > 0

    # 2. another process, another (empty) Prefect server: every stage is a cache hit read from the bucket
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL
    from prefect.testing.utilities import prefect_test_harness

    import rlaifv_core.feedback.claims
    import rlaifv_core.training
    import rlaifv_core.evals.registry
    import rlaifv_core.feedback.judge
    import rlaifv_core.feedback.pairs
    import rlaifv_core.feedback.prompts
    import rlaifv_core.feedback.sampling

    def boom(*args, **kwargs):
        raise AssertionError("a stage ran although everything was in the bucket")

    for module, name in [(rlaifv_core.feedback.sampling, "sample_candidates"), (rlaifv_core.feedback.judge, "judge_candidates"),
                         (rlaifv_core.feedback.claims, "split_claims"), (rlaifv_core.feedback.pairs, "build_pairs"),
                         (rlaifv_core.feedback.prompts, "load_prompts"), (rlaifv_core.training, "launch"),
                         (rlaifv_core.training, "compute_reference_logps"), (rlaifv_core.evals.registry, "run_benchmark")]:
        monkeypatch.setattr(module, name, boom)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # checkpoint downloads stay in the test's folder
    from flows.iterate import iterate

    overrides = [*command.split()[2:], *tiny_overrides(tiny_model_dir)]
    with prefect_test_harness(server_startup_timeout=60):
        again = iterate(load_config("configs/shapes.yaml", overrides))
        harness_blocks = asyncio.run(_block_documents())
        harness_db = Path(PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split(":///", 1)[1])
        harness_files = [p for p in harness_db.parent.glob(harness_db.name + "*")]
        harness_leaks = [str(p) for p in harness_files if any(s.encode() in p.read_bytes() for s in secrets.values())]
    assert again["iterations"] == summary["iterations"]

    # 3. the credentials are in no object of the bucket and in neither Prefect database: not in a file (logs,
    #    parameters, artifacts, results are stored in clear) and not in a block (stored encrypted: read back)
    needles = [value.encode() for value in secrets.values()]
    objects = fs.find(BUCKET)
    assert len(objects) > 20
    assert [key for key in objects if any(n in fs.cat_file(key) for n in needles)] == []
    assert (prefect_home / "prefect.db").exists() and harness_files
    assert _files_containing(prefect_home, needles) == [] and harness_leaks == []
    script = "import asyncio, json\n" + inspect.getsource(_block_documents) + \
        "print('BLOCKS:' + json.dumps(asyncio.run(_block_documents())))\n"
    reader = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=180)
    assert reader.returncode == 0, reader.stderr[-3000:]
    first_blocks = json.loads(reader.stdout.split("BLOCKS:", 1)[1].splitlines()[0])
    expected = {"basepath": f"{store_url}/s3run/.prefect-results",
                "settings": {"client_kwargs": {"endpoint_url": s3_endpoint}}}
    for blocks in (first_blocks, harness_blocks):
        results = [b for b in blocks if b["name"].startswith("rlaifv-results-")]
        assert [b["data"] for b in results] == [expected]
        assert not any(secret in json.dumps(blocks) for secret in secrets.values())


async def _block_documents() -> list[dict]:
    """Every block document of the current Prefect API, secrets included, as plain JSON."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        documents = await client.read_block_documents(include_secrets=True)
    return json.loads(json.dumps([{"name": d.name, "type": d.block_type.slug if d.block_type else None,
                                   "data": d.data} for d in documents], default=str))
