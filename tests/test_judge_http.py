"""The LLM-judge path end to end over HTTP: MMHal and Object HalBench scored by a judge behind an
OpenAI-compatible server on 127.0.0.1, through OpenAIBackend and JudgeClient; every record carries
the judge's identity (endpoint, requested model, the model the server reported, temperature)."""

from __future__ import annotations

import json
import re

import pytest
from fastapi import FastAPI, Request

from rlaifv_core.backends.openai_api import OpenAIBackend
from rlaifv_core.config import ModelSpec
from rlaifv_core.evals.judge import JudgeClient
from rlaifv_core.evals.mmhal import run_mmhal
from rlaifv_core.evals.object_halbench import evaluate_object_halbench
from tests.servers.openai_vlm import serve_in_thread

SERVED = "judge-v2-served"


def judge_app(calls: list) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def completions(request: Request):
        body = await request.json()
        text = json.dumps(body["messages"])
        calls.append(body)
        if "Examiner" in text:  # Object HalBench extraction: the objects named in the answer
            answer = re.search(r"Examiner's Answer\]\\n\\n(.*?)\\n\\n\[End", text).group(1)
            reply = json.dumps([w for w in ("dog", "cat", "frisbee") if w in answer])
        elif "answer-garbled" in text:
            reply = "I would rather not say."
        else:
            reply = "The response is accurate.\nRating: 5" if "answer-good" in text else "Hallucinated.\nRating: 1"
        return {"id": "x", "object": "chat.completion", "created": 0, "model": SERVED,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}]}

    return app


@pytest.fixture()
def judge(tmp_path):
    calls: list = []
    base_url, stop = serve_in_thread(judge_app(calls))
    try:
        backend = OpenAIBackend.from_spec(ModelSpec(backend="openai", name_or_path="judge-requested",
                                                    base_url=base_url, max_retries=1, timeout_s=10))
        yield JudgeClient(backend, cache_path=tmp_path / "judge-cache.jsonl", max_attempts=2), calls, base_url
    finally:
        stop()


def test_mmhal_over_http_with_identity_and_cache(judge, tmp_path):
    client, calls, base_url = judge
    items = [{"question_type": t, "question_topic": "t", "image_id": str(i), "image_src": "", "image_content": ["dog"],
              "question": f"q{i}?", "gt_answer": "a dog", "model_answer": a}
             for i, (t, a) in enumerate([("attribute", "answer-good"), ("counting", "answer-bad"),
                                         ("relation", "answer-garbled")])]
    questions = tmp_path / "mmhal.json"
    questions.write_text(json.dumps(items))
    answers = [{"question_id": i, "text": item["model_answer"]} for i, item in enumerate(items)]
    record = run_mmhal(questions, client, answers=answers)
    assert record["metrics"]["score"] == pytest.approx(3.0)  # (5 + 1) / 2; the garbled reply is not a 0
    assert record["n_unparsed"] == 1 and record["metrics"]["hallucination_rate"] == pytest.approx(0.5)
    identity = record["judge"]
    assert identity["served_models"] == [SERVED] and identity["temperature"] == 0.0
    assert base_url in json.dumps(identity) and "judge-requested" in json.dumps(identity)
    assert len(calls) == 2 + 2  # two parsed replies; the garbled one asked twice (max_attempts), then recorded
    again = run_mmhal(questions, client, answers=answers)
    assert len(calls) == 4  # a re-run is answered from the reply cache: nothing is paid twice
    assert again["metrics"] == record["metrics"]


def test_object_halbench_llm_extraction_over_http(judge):
    client, calls, _ = judge
    items = [{"image_id": 1, "question": "Describe the image."}, {"image_id": 2, "question": "Describe the image."}]
    answers = ["A dog catches a frisbee next to a cat.", "A dog sleeps."]
    truth = {1: {"dog", "frisbee"}, 2: {"dog"}}
    record = evaluate_object_halbench(items, answers, truth, judge=client)
    metrics = record["metrics"]
    assert metrics["chair_i"] == pytest.approx(1 / 4)  # cat is hallucinated among dog, frisbee, cat, dog
    assert metrics["chair_s"] == pytest.approx(1 / 2)
    assert SERVED in json.dumps(record["judge"])
