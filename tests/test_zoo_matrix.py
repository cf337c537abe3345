"""The real-model rehearsal: every zoo architecture through every stage reachable on a CPU, each cell
checked against an independent computation. About 4 minutes on 2 CPU cores (marked slow).

Stages: load through the spec; sample n with per-prompt seeds; labeler yes/no against P(yes) from
the model's own logits on the rendered template; answer log-probs against a plain float64 forward;
reference log-probs (TRL's collator) against those; DPO full (projector trains, vision frozen) and
LoRA; chat; best-of-N reward (summed answer log-probs).
"""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
import torch
from PIL import Image

from rlaifv_core.backends.base import GenerationSettings, VisualPrompt
from rlaifv_core.backends.hf import HFBackend
from rlaifv_core.config import DPOConfig, ModelSpec
from tests.helpers import manual_token_logps
from tests.zoo.builders import ARCHITECTURES
from tests.zoo.fixtures import zoo  # noqa: F401 - fixture

pytestmark = pytest.mark.slow

IMAGES = [Image.new("RGB", (64, 48), (200, 30, 30)), Image.new("RGB", (90, 60), (20, 160, 40))]
QUESTIONS = ["Is there a red square? Please answer yes or no.", "Is there a dog? Please answer yes or no."]


def _pairs() -> pd.DataFrame:
    rows = []
    for i, image in enumerate(IMAGES):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        rows.append({"ds_name": "zoo", "image": {"bytes": buffer.getvalue(), "path": f"{i}.png"},
                     "question": "Describe the image.", "chosen": "A red square. It is on the left.",
                     "rejected": "A blue circle and a dog. They are big.", "origin_dataset": "zoo",
                     "origin_split": json.dumps({"split": "train"}), "idx": i, "image_path": f"{i}.png"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_architecture_through_every_stage(zoo, name, tmp_path):
    from rlaifv_core import training as D

    folder = zoo(name)
    backend = HFBackend.from_spec(ModelSpec(name_or_path=str(folder), batch_size=8, dtype="float32"))
    assert backend.is_vlm and type(backend.model).__name__.endswith("ForConditionalGeneration")

    # sample n with seeds
    prompts = [VisualPrompt(img, "Describe the image.") for img in IMAGES]
    settings = GenerationSettings(n=2, temperature=1.0, top_k=None, max_new_tokens=4)
    samples = backend.generate(prompts, settings, seeds=[7, 8])
    assert [len(s) for s in samples] == [2, 2] and backend.generate(prompts, settings, seeds=[7, 8]) == samples

    # labeler yes/no against the model's own logits on the full rendered prompt
    scores = backend.yes_no(IMAGES[0], QUESTIONS)
    yes, no = backend.yes_no_ids
    for question, score in zip(QUESTIONS, scores):
        batch = backend.encode([backend.render(question)], [IMAGES[0]])
        with torch.no_grad():
            probs = backend.model(**batch).logits[0, -1].double().softmax(-1)
        assert abs(score.p_yes - float(probs[yes].sum())) < 1e-5
        assert abs(score.p_no - float(probs[no].sum())) < 1e-5

    # answer log-probs against a plain unbatched forward
    answers = ["A red square. It is on the left.", "Nothing at all."]
    got = backend.answer_logprobs([prompts[0], prompts[0]], answers)
    for answer, token_logps in zip(answers, got):
        manual = manual_token_logps(backend, prompts[0], answer)
        assert len(manual) == len(token_logps) > 2
        assert max(abs(a - b) for a, b in zip(manual, token_logps)) < 1e-4

    # reference log-probs (TRL's collator, the training precision) against the same sums
    pairs = _pairs()
    dpo = DPOConfig(learning_rate=1e-2, warmup_ratio=0.0, batch_size=2, max_steps=1, logging_steps=1)
    ref = D.compute_reference_logps(folder, pairs, dpo=dpo, batch_size=2)
    ours = backend.answer_logprobs([VisualPrompt(img, "Describe the image.") for img in IMAGES],
                                   list(pairs["chosen"]))
    for row, mine in zip(ref.itertuples(), ours):
        assert abs(row.ref_chosen_logps - sum(mine)) < 1e-3 * max(1.0, abs(sum(mine))), (name, row.ref_chosen_logps, sum(mine))

    # DPO full (vision frozen, projector trains) and LoRA, through the public entry point
    full = D.train(D.TrainJob(model_dir=str(folder), pairs_path="<frame>", output_dir=str(tmp_path / "full"), dpo=dpo,
                              model_spec=ModelSpec(name_or_path=str(folder))), pairs=pairs, ref_logps=ref)
    assert full.global_step == 1 and full.checkpoints and all(torch.isfinite(torch.tensor(full.metrics["loss"])) for _ in [0])
    trained = HFBackend.from_spec(ModelSpec(name_or_path=full.checkpoints[-1].path, dtype="float32"))
    moved = {n for n, p in trained.model.named_parameters()
             if not torch.equal(p, dict(backend.model.named_parameters())[n])}
    assert any(x in n for n in moved for x in ("multi_modal_projector", "merger", "connector"))
    assert not any(("vision_tower" in n or "vision_model" in n or ".visual.blocks" in n or "patch_embed" in n)
                   for n in moved)
    lora = D.train(D.TrainJob(model_dir=str(folder), pairs_path="<frame>", output_dir=str(tmp_path / "lora"),
                              dpo=dpo.model_copy(update={"lora": True, "lora_r": 4, "lora_alpha": 8})),
                   pairs=pairs, ref_logps=ref)
    assert lora.lora and lora.checkpoints and lora.checkpoints[-1].lora

    # chat (text roles) and best-of-N reward: summed log-probs rank the answers like the manual ones
    reply = backend.chat([{"role": "user", "content": [{"type": "text", "text": "Say hi."}]}], max_new_tokens=4)
    assert isinstance(reply.text, str) and reply.model == backend.name
    reward = [sum(x) for x in got]
    manual_reward = [sum(manual_token_logps(backend, prompts[0], a)) for a in answers]
    assert (reward[0] > reward[1]) == (manual_reward[0] > manual_reward[1])
