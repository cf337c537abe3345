"""Endpoint faults at the stage level (tests/servers/openai_vlm.py serves a real tiny VLM over HTTP):
transient faults are retried and the stage's output equals a fault-free run's (nothing lost, nothing
doubled); a broken endpoint is a clear error, never an empty result; an endpoint down for a whole stage
fails the stage after bounded retries, and the re-run once it is back recomputes only that stage."""

from __future__ import annotations

import logging
import time

import pandas as pd
import pytest

from rlaifv_core.backends.base import EndpointError
from rlaifv_core.backends.openai_api import OpenAIBackend
from rlaifv_core.feedback.claims import split_claims
from rlaifv_core.config import ClaimsConfig, JudgeConfig, SamplingConfig
from rlaifv_core.feedback.judge import judge_candidates
from rlaifv_core.feedback.sampling import sample_candidates
from tests.helpers import free_port
from tests.servers.openai_vlm import Fault, OpenAIVLMServer, backend_factory, serve_in_thread, tiny_vlm_backend

from .conftest import png_bytes, tiny_config

pytestmark = pytest.mark.timeout(240)

MODEL = "tiny-vlm"
KEY_ENV = "RLAIFV_RELIABILITY_KEY"
KEY = "sk-reliability-endpoint-key"


@pytest.fixture(scope="module")
def vlm():
    return tiny_vlm_backend(seed=0, name=MODEL)


@pytest.fixture()
def server(vlm):
    srv = OpenAIVLMServer(vlm, model_name=MODEL, api_key=KEY)
    srv.base_url, stop = serve_in_thread(srv.app, port=free_port(), startup_timeout_s=15)
    try:
        yield srv
    finally:
        stop()


@pytest.fixture()
def connect(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    with backend_factory(server.base_url, MODEL, KEY_ENV, max_concurrency=2) as make:
        yield make


def _prompts(k: int = 2) -> pd.DataFrame:
    return pd.DataFrame({"prompt_id": [f"p{i}" for i in range(k)], "image": [png_bytes(i) for i in range(k)],
                         "question": ["describe the image ."] * k})


def _claims(k: int = 2) -> pd.DataFrame:
    questions = [["is there a red circle ?", "is there a blue square ?"], ["is there a green triangle ?"]]
    return pd.DataFrame({"prompt_id": [f"p{i % k}" for i in range(2 * k)], "sample_idx": [i // k for i in range(2 * k)],
                         "questions": [questions[i % 2] for i in range(2 * k)]})


def _judge(labeler):
    return judge_candidates(labeler, _prompts(), _claims(), JudgeConfig())


# -- transient faults: retried, the stage's output is unchanged -------------------------------------------------
def test_500_then_success_judging_loses_and_doubles_nothing(server, connect):
    labeler = connect()
    clean = _judge(labeler)
    asked = len(server.requests)
    server.faults.push(Fault.http(500))
    again = _judge(labeler)
    pd.testing.assert_frame_equal(again, clean)
    assert len(server.requests) == 2 * asked + 1  # exactly one extra request: the retry


def test_429_with_retry_after_is_waited_for_and_judging_completes(server, connect):
    labeler = connect()
    clean = _judge(labeler)
    asked = len(server.requests)
    server.faults.push(Fault.rate_limit(retry_after=1.5))
    started = time.monotonic()
    again = _judge(labeler)
    assert time.monotonic() - started >= 1.5  # the server's retry-after, not the 0.05 s backoff
    pd.testing.assert_frame_equal(again, clean)
    assert len(server.requests) == 2 * asked + 1


def test_timeout_is_retried_and_sampling_gives_the_same_answers(server, connect):
    policy = connect(timeout_s=1.0)
    config = SamplingConfig(n=2, temperature=1.0, top_k=None, max_new_tokens=6, seed=3)
    clean = sample_candidates(policy, _prompts(), config)
    server.faults.push(Fault.sleep(4.0))
    started = time.monotonic()
    again = sample_candidates(policy, _prompts(), config)
    elapsed = time.monotonic() - started
    pd.testing.assert_frame_equal(again, clean)
    assert 1.0 <= elapsed < 4.0  # gave up on the stalled request after its timeout, did not wait it out
    assert len(again) == 4 and again["answer"].map(len).gt(0).any()


def test_malformed_json_is_retried_then_a_broken_endpoint_is_an_error_not_an_empty_split(server, connect):
    splitter = connect()
    answers = [("describe the image .", "there is a red circle ."), ("describe the image .", "there is a blue square .")]
    clean = split_claims(answers, splitter, ClaimsConfig(max_new_tokens=12))
    server.faults.push(Fault.malformed())
    assert split_claims(answers, splitter, ClaimsConfig(max_new_tokens=12)) == clean
    server.faults.always = Fault.malformed()
    with pytest.raises(EndpointError) as info:
        split_claims(answers, splitter, ClaimsConfig(max_new_tokens=12))
    assert "unparseable reply" in str(info.value) and "failed after 3 attempt(s)" in str(info.value)
    assert server.base_url in str(info.value) and MODEL in str(info.value)


def test_a_different_served_model_name_is_recorded_in_the_identity(server, connect, caplog):
    labeler = connect()
    server.faults.always = Fault.other_model("impostor-13b")
    with caplog.at_level(logging.WARNING, logger="rlaifv_core.backends.openai_api"):
        verdicts = _judge(labeler)
    assert len(verdicts) == 4  # the stage completes
    identity = labeler.identity
    assert identity["model"] == MODEL and identity["served_model"] == "impostor-13b"
    assert identity["model_mismatches"] == ["impostor-13b"] and identity["model_mismatch_count"] == len(server.requests)
    warnings = [r for r in caplog.records if "impostor-13b" in r.getMessage()]
    assert len(warnings) == 1 and "requested 'tiny-vlm'" in warnings[0].getMessage()  # said once, not per request


# -- an endpoint down for a whole stage ------------------------------------------------------------------------
def test_endpoint_down_for_the_judging_stage_fails_it_boundedly_and_the_rerun_resumes(prefect_api, vlm, tmp_path,
                                                                                     tiny_model_dir, monkeypatch):
    from flows.generate import generate
    import rlaifv_core.feedback.claims
    import rlaifv_core.feedback.prompts
    import rlaifv_core.feedback.sampling

    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    monkeypatch.setenv(KEY_ENV, KEY)
    config = tiny_config(tmp_path / "runs", tiny_model_dir, "models.labeler.backend=openai",
                         f"models.labeler.name_or_path={MODEL}", f"models.labeler.base_url={base_url}",
                         f"models.labeler.api_key_env={KEY_ENV}", "models.labeler.max_retries=2",
                         "models.labeler.timeout_s=5", "models.labeler.max_concurrency=2",
                         "models.labeler.ready_timeout_s=2", run="endpoint-down")
    started = time.monotonic()
    with pytest.raises(EndpointError) as info:  # nothing listens on the port
        generate(config, iteration=1)
    elapsed = time.monotonic() - started
    message = str(info.value)
    # the bounded /health wait (issue 15) is what fails first: nothing listens on the port
    assert base_url in message and MODEL in message and "not ready after 2 s" in message
    assert "ConnectError" in message and KEY not in message
    assert elapsed < 60  # bounded retries, no hang
    folder = tmp_path / "runs" / "endpoint-down" / "iter-1"
    assert (folder / "candidates.parquet").exists() and (folder / "claims.parquet").exists()
    assert not (folder / "verdicts.parquet").exists() and not (folder / "pairs.parquet").exists()

    # "Later": the failed stage's other in-flight requests finish their own bounded retries first (a
    # new process would not have them), and the re-run opens its labeler afresh.
    import rlaifv_core.models.roles as roles

    for backend in list(roles._LOADED.values()):
        if isinstance(backend, OpenAIBackend):
            backend.close()
    roles.forget_models()

    def recomputed(*args, **kwargs):
        raise AssertionError("a stage that had finished before the endpoint went down ran again")

    for module, name in ((rlaifv_core.feedback.prompts, "load_prompts"), (rlaifv_core.feedback.sampling, "sample_candidates"),
                         (rlaifv_core.feedback.claims, "split_claims")):
        monkeypatch.setattr(module, name, recomputed)
    server = OpenAIVLMServer(vlm, model_name=MODEL, api_key=KEY)
    _, stop = serve_in_thread(server.app, port=port, startup_timeout_s=15)  # back, at the same URL
    try:
        result = generate(config, iteration=1)
    finally:
        stop()
    verdicts = pd.read_parquet(result.verdicts.uri)
    assert len(verdicts) == result.candidates.rows == 16 and len(server.requests) > 0
    assert int(verdicts["n_claims"].sum()) == len(server.requests)  # every question asked once, now
    assert (folder / "pairs.parquet").exists()
