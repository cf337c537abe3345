"""The vLLM-faithful test server (tests/servers/openai_vlm.py) and the openai client against it (issue 15,
items 1-2). Run: `pytest -q tests/test_vllm_like_server.py`.

Each client test says in its docstring how the client before issue 15 failed it."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from PIL import Image

from rlaifv_core.backends.base import EndpointError, GenerationSettings, VisualPrompt, YesNo
from rlaifv_core.backends.openai_messages import image_data_url
from rlaifv_core.backends.yesno import MassAlarm, YesNoMassError
from tests.servers.openai_vlm import Fault, OpenAIVLMServer, backend_factory, serve_in_thread, tiny_vlm_backend

pytestmark = pytest.mark.timeout(120)

MODEL = "tiny-vlm"
LLAMA_CPP_NO_MMPROJ = ("image input is not supported - hint: if this is unexpected, you may need to provide "
                       "the mmproj")


@pytest.fixture(scope="module")
def vlm():
    return tiny_vlm_backend(seed=0, name=MODEL)


@pytest.fixture()
def server(vlm):
    srv = OpenAIVLMServer(vlm, model_name=MODEL, generation_config={"top_k": 1, "repetition_penalty": 1.3})
    srv.base_url, stop = serve_in_thread(srv.app, startup_timeout_s=15)
    try:
        yield srv
    finally:
        stop()


@pytest.fixture()
def make(server):
    with backend_factory(server.base_url, MODEL, "RLAIFV_UNSET_TEST_KEY", max_concurrency=2) as factory:
        yield factory


def _prompts(k: int) -> list[VisualPrompt]:
    return [VisualPrompt(Image.new("RGB", (32, 32), (40 * i, 80, 200 - 40 * i)), "describe the image .")
            for i in range(k)]


def _chats(server) -> list[dict]:
    return [r["body"] for r in server.requests]


# -- the server ------------------------------------------------------------------------------------
def test_server_404s_another_model_name_and_reports_real_usage(server):
    """vLLM: 404 "The model `x` does not exist." (serving_engine._check_model); usage counts tokens."""
    import openai

    client = openai.OpenAI(base_url=server.base_url, api_key="EMPTY", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="The model `other` does not exist."):
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": "hi"}])
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "describe ."}],
                                           max_tokens=4, n=2, seed=3)
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_server_fills_unsent_fields_from_generation_config_and_seeds_children(server):
    """vLLM --generation-config auto: an unsent top_k is the model's; sample j of n is seeded seed + j."""
    import openai

    client = openai.OpenAI(base_url=server.base_url, api_key="EMPTY", max_retries=0)
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "describe ."}],
                                   max_tokens=4, n=3, seed=10, temperature=1.0)
    assert [(s["top_k"], s["repetition_penalty"], s["seed"]) for s in server.sampled] == \
        [(1, 1.3, 10), (1, 1.3, 11), (1, 1.3, 12)]


def test_server_faults_health_and_token_id_mode(server):
    """501, empty-body 500 and 503 on request; /health 503 while loading; token_id:N alternatives."""
    import httpx

    root = server.base_url[: -len("/v1")]
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    server.faults.push(Fault.http(501), Fault.empty(500), Fault.http(503))
    answers = [httpx.post(server.base_url + "/chat/completions", json=body) for _ in range(3)]
    assert [a.status_code for a in answers] == [501, 500, 503] and answers[1].content == b""
    server.ready = False
    assert httpx.get(root + "/health").status_code == 503
    assert httpx.post(server.base_url + "/chat/completions", json=body).status_code == 503
    server.ready = True
    assert httpx.get(root + "/health").status_code == 200
    server.tokens_as_ids = True
    reply = httpx.post(server.base_url + "/chat/completions",
                       json={**body, "logprobs": True, "top_logprobs": 5, "temperature": 0}).json()
    tops = reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    assert len(tops) == 5 and all(t["token"].startswith("token_id:") for t in tops)


def test_server_returns_each_choices_own_logprobs_for_n_above_1(vlm, server):
    """vLLM (serving_chat.py): with logprobs and n > 1 every choice carries its own tokens' logprobs, raw
    (before temperature) with top_logprobs alternatives; the old server refused anything but n = 1,
    max_tokens = 1. Checked against the in-process answer log-probs (HFBackend.answer_logprobs)."""
    import openai

    image = Image.new("RGB", (32, 32), (200, 40, 40))
    prompt = VisualPrompt(image, "describe the image .")
    client = openai.OpenAI(base_url=server.base_url, api_key="EMPTY", max_retries=0)
    message = {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image_data_url(image)}}, {"type": "text", "text": prompt.question}]}
    reply = client.chat.completions.create(model=MODEL, messages=[message], n=3, max_tokens=6, temperature=1.0,
                                           seed=4, logprobs=True, top_logprobs=3, extra_body={"top_k": 50})
    assert len(reply.choices) == 3 and all(len(c.logprobs.content) == 6 for c in reply.choices)  # no early stop
    assert len({c.message.content for c in reply.choices}) > 1
    for choice in reply.choices:
        tokens = choice.logprobs.content
        assert "".join(t.token for t in tokens).replace(" ", "") == choice.message.content.replace(" ", "")
        expected = vlm.answer_logprobs([prompt], [choice.message.content])[0][:len(tokens)]
        assert [t.logprob for t in tokens] == pytest.approx(expected, abs=1e-4)
        for t in tokens:
            alternatives = [a.logprob for a in t.top_logprobs]
            assert len(alternatives) == 3 and alternatives == sorted(alternatives, reverse=True)
            assert t.logprob <= alternatives[0] + 1e-6


def test_server_reads_every_image_of_a_prompt(vlm, server):
    """vLLM renders every image part through the chat template, one placeholder each, in order; the old
    server kept only the first image. Checked against the processor and model called directly."""
    import httpx
    import torch

    question = "is there a red circle ?"
    red, blue = Image.new("RGB", (32, 32), (220, 30, 30)), Image.new("RGB", (32, 32), (30, 30, 220))

    def first_token(*images, **extra):
        content = [{"type": "image_url", "image_url": {"url": image_data_url(i)}} for i in images]
        body = {"model": MODEL, "messages": [{"role": "user", "content": content + [{"type": "text", "text": question}]}],
                "max_tokens": 1, "temperature": 0, "logprobs": True, "top_logprobs": 20, **extra}
        reply = httpx.post(server.base_url + "/chat/completions", json=body, timeout=30).json()
        return {t["token"]: t["logprob"] for t in reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"]}

    both, red_only = first_token(red, blue), first_token(red)
    text = vlm.processor.apply_chat_template([{"role": "user", "content": [
        {"type": "image"}, {"type": "image"}, {"type": "text", "text": question}]}], add_generation_prompt=True, tokenize=False)
    with torch.no_grad():
        logits = vlm.model(**vlm.processor(text=[text], images=[red, blue], return_tensors="pt")).logits[0, -1]
    direct = torch.log_softmax(logits.float(), dim=-1)
    ids = vlm.processor.tokenizer.convert_tokens_to_ids(list(both))
    assert list(both.values()) == pytest.approx([float(direct[i]) for i in ids], abs=1e-5)
    assert max(abs(both[t] - red_only[t]) for t in both if t in red_only) > 1e-4  # the second image counts

    def sampled(*images):
        return httpx.post(server.base_url + "/chat/completions", timeout=30, json={
            "model": MODEL, "n": 2, "max_tokens": 4, "temperature": 1.0, "seed": 1, "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": image_data_url(i)}} for i in images]}]}).json()

    one, two, three = sampled(red), sampled(red, blue), sampled(red, blue, red)
    assert len(two["choices"]) == 2
    per_image = two["usage"]["prompt_tokens"] - one["usage"]["prompt_tokens"]  # 9 for the tiny LLaVA's 3 x 3 patches
    assert per_image == 9 and three["usage"]["prompt_tokens"] - two["usage"]["prompt_tokens"] == per_image


def test_server_clamps_minus_infinity_logprobs_and_the_client_reads_them_as_zero():
    """vLLM clamps logprobs at -9999.0 (protocol: JSON has no -inf). A labeler whose head masks all but
    four tokens lists masked alternatives at -9999.0: strict JSON, and the client scores them P = 0."""
    import json

    import httpx
    import torch

    masked = tiny_vlm_backend(seed=2, name=MODEL)
    tokenizer, head = masked.processor.tokenizer, masked.model.lm_head
    keep = [tokenizer.convert_tokens_to_ids(w) for w in ("yes", "no", "red", "circle")]
    with torch.no_grad():
        bias = torch.full_like(head.bias, float("-inf"))
        bias[keep] = head.bias[keep]
        head.bias.copy_(bias)
    srv = OpenAIVLMServer(masked, model_name=MODEL)
    base_url, stop = serve_in_thread(srv.app, startup_timeout_s=15)
    try:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "is there a red circle ?"}], "max_tokens": 1,
                "temperature": 0, "logprobs": True, "top_logprobs": 10}
        raw = httpx.post(base_url + "/chat/completions", json=body, timeout=30).text
        reply = json.loads(raw, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in the reply"))
        tops = [t["logprob"] for t in reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"]]
        assert len(tops) == 10 and tops.count(-9999.0) == 6 and all(t > -100 for t in tops[:4])
        with backend_factory(base_url, MODEL, "RLAIFV_UNSET_TEST_KEY") as factory:
            served = factory().yes_no(None, ["is there a red circle ?"])[0]
        expected = masked.yes_no(None, ["is there a red circle ?"])[0]
        assert (served.p_yes, served.p_no) == pytest.approx((expected.p_yes, expected.p_no), abs=1e-6)
        assert served.p_yes + served.p_no > 0.1
    finally:
        stop()


# -- the client ------------------------------------------------------------------------------------
def test_client_sends_configured_sampling_not_server_defaults(server, make):
    """Old client: top_k never sent, so the server's generation-config top_k=1 and repetition_penalty 1.3
    applied (all n answers identical with Qwen2.5-VL's config)."""
    make().generate(_prompts(1), GenerationSettings(n=2, temperature=1.0, top_k=50, max_new_tokens=4))
    make().generate(_prompts(1), GenerationSettings(n=1, temperature=1.0, top_k=None, max_new_tokens=4))
    assert [(s["top_k"], s["repetition_penalty"]) for s in server.sampled] == [(50, 1.0), (50, 1.0), (-1, 1.0)]


def test_client_seeds_never_overlap_across_prompts_and_samples(server, make):
    """Old client: prompt i sent seed s + i, and the server seeds sample j with seed + j, so prompt 0's
    sample 1 and prompt 1's sample 0 shared a seed."""
    make().generate(_prompts(3), GenerationSettings(n=4, temperature=1.0, max_new_tokens=2, seed=5))
    seeds = [s["seed"] for s in server.sampled]
    assert len(seeds) == 12 and len(set(seeds)) == 12


@pytest.mark.parametrize("fault", [Fault.http(501), Fault.permanent(500, LLAMA_CPP_NO_MMPROJ),
                                   Fault.permanent(500, "Only one completion choice is allowed"), Fault.http(422)],
                         ids=["501", "llama.cpp-no-mmproj-500", "llama.cpp-n-above-1-500", "422"])
def test_client_does_not_retry_permanent_errors(server, make, fault):
    """Old client: 501 and every 500 were retried (max_retries=2: three requests and the backoff)."""
    server.faults.always = fault
    with pytest.raises(EndpointError) as caught:
        make().generate(_prompts(1), GenerationSettings(n=1, max_new_tokens=2))
    assert len(server.requests) == 1
    assert caught.value.status == fault.status and MODEL in str(caught.value) and server.base_url in str(caught.value)


def test_client_retries_an_empty_body_500(server, make):
    """A transient fault: retried, and the answer comes back (the old client did this too)."""
    server.faults.push(Fault.empty(500))
    answers = make().generate(_prompts(1), GenerationSettings(n=1, max_new_tokens=2))
    assert len(answers[0]) == 1 and len(server.requests) == 2


def test_client_404_names_the_served_models(server, make):
    """Old client: "HTTP 404: The model `x` does not exist." without saying what the server does serve."""
    with pytest.raises(EndpointError, match="serves 'tiny-vlm'"):
        make(name_or_path="llava-hf/llava-1.5-7b-hf").generate(_prompts(1), GenerationSettings(n=1, max_new_tokens=2))
    assert len(server.requests) == 1


def test_client_waits_on_health_before_the_first_request(server, make):
    """Old client: no /health wait; a loading server's 503s were retried for ~0.15 s here (7.5 s with the
    default backoff), then the stage failed."""
    server.ready = False
    timer = threading.Timer(1.5, lambda: setattr(server, "ready", True))
    timer.start()
    start = time.monotonic()
    answers = make(ready_timeout_s=30).generate(_prompts(1), GenerationSettings(n=1, max_new_tokens=2))
    assert time.monotonic() - start >= 1.4 and len(answers) == 1
    assert len(server.requests) == 1  # no chat request while loading


def test_client_health_wait_is_bounded(server, make):
    """A server that never becomes ready fails the stage after ready_timeout_s, naming endpoint and model."""
    server.ready = False
    start = time.monotonic()
    with pytest.raises(EndpointError, match="not ready after 1 s") as caught:
        make(ready_timeout_s=1.0).generate(_prompts(1), GenerationSettings(n=1, max_new_tokens=2))
    assert time.monotonic() - start < 10 and MODEL in str(caught.value) and not server.requests


def test_client_timeout_scales_with_n_times_max_tokens(server, make):
    """Old client: one timeout_s for every request; a reply of n x max_tokens = 64 tokens taking 1 s
    timed out at timeout_s = 0.5 (max_retries=0: the stage failed)."""
    server.faults.push(Fault.sleep(1.0))
    answers = make(timeout_s=0.5, max_retries=0).generate(_prompts(1), GenerationSettings(n=2, max_new_tokens=32))
    assert len(answers[0]) == 2 and len(server.requests) == 1


def test_client_counts_and_warns_yes_no_replies_without_either_word(caplog):
    """Old client: neither word in the top 20 gave P(yes) = P(no) = 0 without a word, nothing counted."""
    deaf = OpenAIVLMServer(tiny_vlm_backend(seed=1, answer_bias=-50.0, name=MODEL), model_name=MODEL)
    base_url, stop = serve_in_thread(deaf.app, startup_timeout_s=15)
    try:
        with backend_factory(base_url, MODEL, "RLAIFV_UNSET_TEST_KEY", max_concurrency=2) as factory:
            labeler = factory()
            with caplog.at_level(logging.WARNING):
                results = labeler.yes_no(Image.new("RGB", (32, 32)), ["is there a red circle ?"] * 20)
            assert labeler.yes_no_missing == 20 and all(r.p_yes == r.p_no == 0 for r in results)
            assert any("neither yes nor no" in r.message for r in caplog.records)
            with pytest.raises(YesNoMassError, match=f"{MODEL} at {base_url}"):
                labeler.yes_no_alarm.check()
    finally:
        stop()


def test_stage_fails_when_most_yes_no_replies_carry_neither_word():
    """Old MassAlarm: raised only when >= 95 % had low mass; 60 % of replies with no yes/no token passed."""
    alarm = MassAlarm("m at http://x/v1")
    alarm.record([YesNo(0.0, 0.0, {})] * 12 + [YesNo(0.9, 0.05, {"yes": 0.9, "no": 0.05})] * 8)
    with pytest.raises(YesNoMassError, match="12 of 20"):
        alarm.check()
    fine = MassAlarm("m")
    fine.record([YesNo(0.0, 0.0, {})] * 8 + [YesNo(0.9, 0.05, {"yes": 0.9, "no": 0.05})] * 12)
    fine.check()


def test_client_rejects_token_id_alternatives(server, make):
    """Old client: vLLM --return-tokens-as-token-ids alternatives ("token_id:N") tallied as P = 0, silently."""
    server.tokens_as_ids = True
    with pytest.raises(EndpointError, match="return-tokens-as-token-ids"):
        make().yes_no(Image.new("RGB", (32, 32)), ["is there a red circle ?"])


# -- images with transparency ------------------------------------------------------------------------
def _transparent_images() -> dict[str, Image.Image]:
    """Half-transparent images whose hidden pixels are dark: composited on white they look different."""
    import numpy as np

    grey_alpha = np.zeros((32, 32, 2), dtype=np.uint8)
    grey_alpha[..., 0], grey_alpha[:16, :, 1] = 30, 255  # bottom half: alpha 0 over grey 30
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[..., 0], rgba[:, :16, 3] = 200, 255  # right half: alpha 0 over red
    palette = Image.new("P", (32, 32), 0)
    palette.putpalette([20, 20, 20, 250, 0, 0] + [0] * 762)
    palette.paste(1, (0, 0, 32, 16))
    palette.info["transparency"] = 0  # colour 0 (dark grey) is transparent
    return {"LA": Image.fromarray(grey_alpha, "LA"), "RGBA": Image.fromarray(rgba, "RGBA"), "P": palette}


def test_server_converts_images_as_vllm_does():
    """vllm/multimodal/image.py convert_image_mode: RGBA pasted on white; any other mode convert("RGB")."""
    from tests.servers.openai_vlm import decode_data_url

    images = _transparent_images()
    la_png = image_data_url(images["LA"].convert("RGB").convert("LA"))  # opaque LA: no transparency to keep
    assert decode_data_url(la_png).getpixel((0, 20)) == (30, 30, 30)
    rgba = decode_data_url(image_data_url(images["RGBA"]))
    assert rgba.getpixel((0, 0)) == (200, 0, 0) and rgba.getpixel((20, 0)) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["LA", "RGBA", "P"])
def test_client_sends_transparency_so_served_and_in_process_labels_agree(vlm, server, make, monkeypatch, mode):
    """Old client: an LA image went out as LA, which vLLM converts with a plain convert("RGB") (alpha
    dropped: the hidden dark pixels show), while the in-process processor composites it on white, so the
    served labeler scored another image than the in-process one."""
    import base64
    import io

    from rlaifv_core.backends import openai_api

    image, questions = _transparent_images()[mode], ["is there a red circle ?", "is there a blue square ?"]
    in_process = vlm.yes_no(image, questions)
    served = make().yes_no(image, questions)
    assert [p for s in served for p in (s.p_yes, s.p_no)] == pytest.approx(
        [p for r in in_process for p in (r.p_yes, r.p_no)], abs=1e-5)

    def old_image_data_url(img):  # the client before: the image in its own mode
        buffer = io.BytesIO()
        img.save(buffer, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")

    monkeypatch.setattr(openai_api, "image_data_url", old_image_data_url)  # the labeler's path
    old = make().yes_no(image, questions)
    if mode == "LA":  # convert("RGB") drops LA's alpha: the hidden grey pixels reached the model
        assert max(abs(o.p_yes - r.p_yes) for o, r in zip(old, in_process)) > 1e-3
    else:  # RGBA: composited by the server; P: convert("RGB") keeps the transparent colour as a colour key,
        # which the processor then composites on white: the old client agreed on these two
        assert [o.p_yes for o in old] == pytest.approx([r.p_yes for r in in_process], abs=1e-5)
