"""Same labeler, same questions: the hf backend and the openai backend (the test server serving the
same replica) give identical verdicts and P(yes) within 1e-5, on real vocabularies and templates."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from rlaifv_core.backends.hf import HFBackend
from rlaifv_core.config import ModelSpec
from tests.servers.openai_vlm import OpenAIVLMServer, backend_factory, serve_in_thread
from tests.zoo.fixtures import zoo  # noqa: F401 - fixture

QUESTIONS = [f"Is there a {thing}? Please answer yes or no." for thing in ("red square", "dog", "tree", "car")]


def _labeler(folder) -> HFBackend:
    """The replica with a bias on its template's yes/no tokens (as a trained labeler puts its mass there),
    different per token so that verdicts vary."""
    backend = HFBackend.from_spec(ModelSpec(name_or_path=str(folder), batch_size=8, dtype="float32"))
    yes, no = backend.yes_no_ids
    old = backend.model.lm_head
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.zero_()
        for i, token in enumerate(yes + no):
            head.bias[token] = 12.0 + 0.5 * (i % 3)
    backend.model.lm_head = head
    return backend


@pytest.mark.parametrize("name", ["idefics3", "qwen2_vl", "llava_next"])
def test_hf_and_openai_backends_agree(zoo, name):
    labeler = _labeler(zoo(name))
    server = OpenAIVLMServer(labeler, model_name=name)
    base_url, stop = serve_in_thread(server.app)
    images = [Image.new("RGB", (64, 48), (200, 30, 30)), Image.new("RGB", (80, 56), (10, 90, 200))]
    try:
        with backend_factory(base_url, name, "ZOO_UNSET_KEY") as make:
            remote = make()
            for image in images:
                local = labeler.yes_no(image, QUESTIONS)
                served = remote.yes_no(image, QUESTIONS)
                assert all(r.p_yes + r.p_no > 0.5 for r in local)  # the forms carry the mass
                assert [r.accepted() for r in local] == [r.accepted() for r in served]
                assert max(abs(a.p_yes - b.p_yes) for a, b in zip(local, served)) < 1e-5
                assert max(abs(a.p_no - b.p_no) for a, b in zip(local, served)) < 1e-5
    finally:
        stop()
