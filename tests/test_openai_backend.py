"""OpenAIBackend against a real tiny VLM served over HTTP (OpenAI-compatible FastAPI app)."""

from __future__ import annotations

import dataclasses

import json
import time

import pytest

from rlaifv_core.backends import load_backend
from rlaifv_core.backends.base import GenerationSettings, VisualPrompt
from rlaifv_core.backends.openai_api import EndpointError, OpenAIBackend, served_models
from rlaifv_core.config import ModelSpec
from rlaifv_core.shapes.world import ShapesWorld
from tests.servers.openai_vlm import Fault, OpenAIVLMServer, backend_factory, serve_in_thread, tiny_vlm_backend

pytestmark = pytest.mark.timeout(60)

WORLD = ShapesWorld()
KEY_ENV = "RLAIFV_TEST_OPENAI_KEY"
SECRET = "sk-test-0123456789-do-not-leak"
MODEL = "tiny-vlm"
QUESTIONS = ["is there a red circle in the image ? please answer yes or no .",
             "is there a blue square in the image ? please answer yes or no .",
             "is there a green triangle in the image ? please answer yes or no ."]


@pytest.fixture(scope="module")
def vlm():
    return tiny_vlm_backend(seed=0, name=MODEL)


@pytest.fixture()
def server(vlm):
    srv = OpenAIVLMServer(vlm, model_name=MODEL, api_key=SECRET)
    base_url, stop = serve_in_thread(srv.app)
    srv.base_url = base_url
    try:
        yield srv
    finally:
        stop()


@pytest.fixture()
def connect(server, monkeypatch):
    """connect(**spec_overrides) -> an OpenAIBackend on the test server (closed afterwards)."""
    monkeypatch.setenv(KEY_ENV, SECRET)
    with backend_factory(server.base_url, MODEL, KEY_ENV, max_concurrency=4) as make:
        yield make


def _prompts(k=2):
    return [VisualPrompt(WORLD.scene(i).render(), "describe the image .") for i in range(k)]


def _no_secret(*things):
    for thing in things:
        assert SECRET not in thing, thing


# -- happy paths ---------------------------------------------------------------------------------
def test_generate_n_samples_over_http_match_in_process(server, connect, vlm):
    backend = connect()
    settings = GenerationSettings(n=3, temperature=1.0, top_k=None, max_new_tokens=6, seed=0)
    answers = backend.generate(_prompts(), settings, seeds=[7, 8])
    assert len(answers) == 2 and all(len(a) == 3 for a in answers)
    # PNG is lossless; prompt seed s is sent as s x n and the server seeds sample j with s x n + j (vLLM)
    one = dataclasses.replace(settings, n=1)
    assert answers == [[vlm.generate([p], one, seeds=[s * 3 + j])[0][0] for j in range(3)]
                       for p, s in zip(_prompts(), [7, 8])]
    assert backend.generate(_prompts(), settings, seeds=[7, 8]) == answers  # the seed travels
    body = server.requests[0]["body"]
    assert body["n"] == 3 and body["seed"] in (21, 24) and body["max_tokens"] == 6 and body["temperature"] == 1.0
    assert body["top_k"] == -1 and body["repetition_penalty"] == 1.0
    parts = body["messages"][0]["content"]
    assert parts[0]["type"] == "image_url" and parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[1] == {"type": "text", "text": "describe the image ."}
    assert backend.identity["served_model"] == MODEL and backend.identity["model_mismatch_count"] == 0
    assert backend.fingerprint == f"openai:{server.base_url}:{MODEL}"


def test_yes_no_from_logprobs_equals_in_process_probabilities(server, connect, vlm):
    backend = connect()
    image = WORLD.scene(1).render()
    remote = backend.yes_no(image, QUESTIONS)
    local = vlm.yes_no(image, QUESTIONS)
    for r, l in zip(remote, local):
        assert 0 < r.p_yes < 1 and 0 < r.p_no < 1
        assert r.p_yes == pytest.approx(l.p_yes, abs=1e-5)
        assert r.p_no == pytest.approx(l.p_no, abs=1e-5)
        assert set(r.parts) == {"yes", "no"}
    assert len({round(r.p_yes, 6) for r in remote}) > 1  # the question matters
    body = server.requests[0]["body"]
    assert body["max_tokens"] == 1 and body["logprobs"] is True and body["top_logprobs"] == 20
    assert body["temperature"] == 0
    # a text-only question too
    assert backend.yes_no(None, QUESTIONS[:1])[0].p_yes == pytest.approx(vlm.yes_no(None, QUESTIONS[:1])[0].p_yes, abs=1e-5)


def test_chat_reports_served_model_and_models_endpoint(server, connect):
    backend = connect()
    reply = backend.chat([{"role": "user", "content": "describe the image ."}], max_new_tokens=4)
    assert reply.model == MODEL and isinstance(reply.text, str)
    assert served_models(backend) == [MODEL]


def test_requests_are_concurrent_up_to_max_concurrency(server, connect):
    backend = connect(max_concurrency=3)
    server.faults.always = Fault.sleep(0.3)
    start = time.monotonic()
    scores = backend.yes_no(WORLD.scene(2).render(), QUESTIONS * 2)
    elapsed = time.monotonic() - start
    assert len(scores) == 6
    assert server.max_in_flight == 3
    assert elapsed < 6 * 0.3  # not serial


# -- faults --------------------------------------------------------------------------------------
def test_500_once_then_success(server, connect):
    backend = connect()
    server.faults.push(Fault.http(500))
    assert len(backend.yes_no(WORLD.scene(0).render(), QUESTIONS[:1])) == 1
    assert len(server.requests) == 2


def test_429_retry_after_is_honoured(server, connect):
    backend = connect()
    server.faults.push(Fault.rate_limit(retry_after=1))
    start = time.monotonic()
    backend.yes_no(WORLD.scene(0).render(), QUESTIONS[:1])
    assert time.monotonic() - start >= 1.0
    assert len(server.requests) == 2
    assert server.requests[1]["t"] - server.requests[0]["t"] >= 1.0


def test_timeout_then_success(server, connect):
    backend = connect(timeout_s=1.0)
    server.faults.push(Fault.sleep(3.0))
    start = time.monotonic()
    answers = backend.generate(_prompts(1), GenerationSettings(n=2, max_new_tokens=4))
    assert len(answers[0]) == 2
    assert 1.0 <= time.monotonic() - start < 3.0
    assert len(server.requests) == 2


def test_endpoint_always_timing_out_fails_after_bounded_retries(server, connect):
    backend = connect(timeout_s=0.3, max_retries=2)
    server.faults.always = Fault.sleep(5.0)
    start = time.monotonic()
    with pytest.raises(EndpointError) as info:
        backend.yes_no(WORLD.scene(0).render(), QUESTIONS[:1])
    elapsed = time.monotonic() - start
    assert 0.9 <= elapsed < 3.0  # 3 attempts x 0.3 s + short backoffs
    assert len(server.requests) == 3 and info.value.attempts == 3
    message = str(info.value)
    assert server.base_url in message and MODEL in message and "timed out" in message
    _no_secret(message, repr(info.value))


def test_malformed_json_is_retried_then_reported(server, connect):
    backend = connect()
    server.faults.push(Fault.malformed())
    assert len(backend.yes_no(WORLD.scene(0).render(), QUESTIONS[:1])) == 1  # retried once, then fine
    assert len(server.requests) == 2
    server.faults.always = Fault.malformed()
    with pytest.raises(EndpointError, match="unparseable reply") as info:
        backend.chat([{"role": "user", "content": "describe the image ."}])
    assert info.value.attempts == 3 and len(server.requests) == 5
    assert server.base_url in str(info.value) and MODEL in str(info.value)


def test_reply_without_logprobs_is_a_clear_error(server, connect):
    backend = connect()
    server.faults.push(Fault.no_logprobs())
    with pytest.raises(EndpointError, match="no token logprobs"):
        backend.yes_no(WORLD.scene(0).render(), QUESTIONS[:1])
    assert len(server.requests) == 1  # a capability problem: not retried


def test_served_model_mismatch_is_recorded_not_fatal(server, connect):
    backend = connect()
    server.faults.push(Fault.other_model("someone-else-7b"))
    reply = backend.chat([{"role": "user", "content": "describe the image ."}], max_new_tokens=3)
    assert reply.model == "someone-else-7b"
    backend.chat([{"role": "user", "content": "describe the image ."}], max_new_tokens=3)
    identity = backend.identity
    assert identity["model"] == MODEL and identity["served_model"] == "someone-else-7b"
    assert identity["model_mismatches"] == ["someone-else-7b"] and identity["model_mismatch_count"] == 1


# -- the key -------------------------------------------------------------------------------------
def test_api_key_comes_from_the_named_env_var_and_never_leaks(server, connect, monkeypatch):
    backend = connect()
    backend.yes_no(WORLD.scene(0).render(), QUESTIONS[:1])
    assert server.requests[-1]["authorized"]
    _no_secret(json.dumps(backend.identity), repr(backend), backend.fingerprint)
    server.faults.always = Fault.http(503)
    with pytest.raises(EndpointError) as info:
        backend.chat([{"role": "user", "content": "hi"}])
    _no_secret(str(info.value), repr(info.value), str(info.value.__cause__), str(info.value.__context__))
    server.faults.clear()

    monkeypatch.delenv(KEY_ENV)
    keyless = connect()
    start = len(server.requests)
    with pytest.raises(EndpointError, match="401") as info:
        keyless.chat([{"role": "user", "content": "hi"}])
    assert len(server.requests) == start + 1  # 401 is not retried
    assert "api_key_env" in str(info.value)
    assert not server.requests[-1]["authorized"]


# -- factory and limits --------------------------------------------------------------------------
def test_load_backend_dispatch(tiny_model_dir):
    from rlaifv_core.backends.hf import HFBackend

    openai_backend = load_backend(ModelSpec(backend="openai", name_or_path="m", base_url="http://127.0.0.1:9/v1"))
    assert isinstance(openai_backend, OpenAIBackend)
    openai_backend.close()
    assert isinstance(load_backend(ModelSpec(name_or_path=str(tiny_model_dir))), HFBackend)
    with pytest.raises(ValueError, match="rules"):
        load_backend(ModelSpec(backend="rules", name_or_path="rules"))
    with pytest.raises(ValueError, match="base_url"):
        load_backend(ModelSpec(backend="openai", name_or_path="m"))


def test_answer_logprobs_is_not_available():
    backend = OpenAIBackend.from_spec(ModelSpec(backend="openai", name_or_path="m", base_url="http://127.0.0.1:9/v1"))
    with pytest.raises(NotImplementedError, match="cannot score given answers"):
        backend.answer_logprobs([VisualPrompt(None, "q")], ["a"])
    backend.close()
