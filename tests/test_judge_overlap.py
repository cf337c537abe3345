"""The labeler overlaps images (issue 15): a backend that serves many requests at once gets several
images in flight, each image's questions in one call, verdicts identical to one image at a time and
in prompt order; a failing image stops the stage; through a batching-engine server the overlapped
labeler fills batches that one image at a time cannot. `max_concurrency` is checked at load."""

from __future__ import annotations

import io
import random
import threading
import time

import pandas as pd
import pytest
from PIL import Image

from rlaifv_core.backends.base import Backend, EndpointError, YesNo
from rlaifv_core.config import JudgeConfig, ModelSpec, load_config
from rlaifv_core.feedback.judge import judge_candidates
from tests.servers.batching_engine import BatchingEngine, answer_probabilities
from tests.servers.openai_vlm import serve_in_thread

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _png(i: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (i * 7 % 256, i * 13 % 256, i * 29 % 256)).save(buffer, format="PNG")
    return buffer.getvalue()


def _workload(images: int, answers: int = 3, claims: int = 2) -> tuple[pd.DataFrame, pd.DataFrame]:
    prompts = pd.DataFrame({"prompt_id": [f"p{i:03d}" for i in range(images)], "image": [_png(i) for i in range(images)],
                            "question": ["describe the image ."] * images})
    rows = [{"prompt_id": f"p{i:03d}", "sample_idx": j, "questions": [f"is there thing {j}-{k} ?" for k in range(claims)]}
            for i in range(images) for j in range(answers)]
    rows.append({"prompt_id": "p000", "sample_idx": answers, "questions": []})  # an answer without claims
    return prompts, pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # claims in no particular order


class SlowServer(Backend):
    """Answers from (image colour, question) after a random delay; records calls and images in flight."""

    fingerprint = "slow"
    identity = {"model": "slow"}

    def __init__(self, max_concurrency: int, fail_on: str | None = None):
        self.max_concurrency, self.fail_on = max_concurrency, fail_on
        self.calls: list[tuple[tuple, int]] = []
        self.in_flight = self.max_images_in_flight = 0
        self._lock = threading.Lock()
        self._random = random.Random(0)

    def generate(self, prompts, settings, seeds=None):
        raise NotImplementedError

    def yes_no(self, image, questions):
        key = image.getpixel((0, 0))
        with self._lock:
            self.calls.append((key, len(questions)))
            self.in_flight += 1
            self.max_images_in_flight = max(self.max_images_in_flight, self.in_flight)
            delay = self._random.uniform(0.0, 0.03)
        try:
            time.sleep(delay)
            if self.fail_on is not None and key == Image.open(io.BytesIO(_png(int(self.fail_on)))).getpixel((0, 0)):
                raise EndpointError("image down", endpoint="http://x/v1", model="slow")
            return [YesNo(*answer_probabilities(str(key), q)) for q in questions]
        finally:
            with self._lock:
                self.in_flight -= 1


def test_images_overlap_with_verdicts_identical_and_in_prompt_order():
    prompts, claims = _workload(12)
    one_at_a_time = SlowServer(max_concurrency=1)
    expected = judge_candidates(one_at_a_time, prompts, claims, JudgeConfig())
    overlapped_server = SlowServer(max_concurrency=8)
    done = []
    got = judge_candidates(overlapped_server, prompts, claims, JudgeConfig(), progress=lambda d, t: done.append(d))
    assert one_at_a_time.max_images_in_flight == 1
    assert overlapped_server.max_images_in_flight > 1  # 6 questions per image, 8 requests: two images or more at once
    assert sorted(overlapped_server.calls) == sorted(one_at_a_time.calls)  # each image's questions in one call
    assert len(overlapped_server.calls) == 12
    pd.testing.assert_frame_equal(got, expected)
    assert list(got["prompt_id"]) == sorted(got["prompt_id"]) and done == list(range(1, 13))
    assert got.loc[got["zero_claims"], "score"].tolist() == [0]


def test_a_failing_image_fails_the_stage_and_starts_no_more_images():
    prompts, claims = _workload(40)
    server = SlowServer(max_concurrency=4, fail_on="3")
    with pytest.raises(EndpointError, match="image down"):
        judge_candidates(server, prompts, claims, JudgeConfig())
    assert len(server.calls) < 40  # the images not yet started were not asked


def test_through_a_batching_engine_overlapped_images_fill_the_batches():
    """One image at a time cannot put more than its own questions in a batch; overlapped images can."""
    from rlaifv_core.backends.openai_api import OpenAIBackend

    prompts, claims = _workload(8, answers=4, claims=2)  # 8 questions per image
    # gather_s: room for the client to send a whole window on a loaded machine (0.02 s was flaky there)
    engine = BatchingEngine(capacity=32, step_s=0.1, image_prefill_s=0.02, gather_s=0.1)
    base_url, stop = serve_in_thread(engine.app)
    results = {}
    try:
        for name, concurrency, in_flight in (("before", 8, 1), ("after", 32, None)):
            backend = OpenAIBackend.from_spec(ModelSpec(backend="openai", name_or_path="engine", base_url=base_url,
                                                        max_concurrency=concurrency))
            engine.reset()
            try:
                results[name] = (judge_candidates(backend, prompts, claims, JudgeConfig(), in_flight=in_flight),
                                 engine.stats())
            finally:
                backend.close()
    finally:
        stop()
    (before, before_stats), (after, after_stats) = results["before"], results["after"]
    pd.testing.assert_frame_equal(after, before)
    assert before_stats["requests"] == after_stats["requests"] == 64
    assert before_stats["max_batch"] <= 8 < after_stats["max_batch"]
    assert after_stats["batches"] < before_stats["batches"] / 2


def test_max_concurrency_defaults_to_64_and_is_checked_at_load():
    assert ModelSpec().max_concurrency == 64
    config = load_config(ROOT / "configs" / "shapes.yaml", ["models.labeler.max_concurrency=128"])
    assert config.models.labeler.max_concurrency == 128
    for bad in ("0", "100000"):
        with pytest.raises(Exception, match="max_concurrency"):
            load_config(ROOT / "configs" / "shapes.yaml", [f"models.labeler.max_concurrency={bad}"])
