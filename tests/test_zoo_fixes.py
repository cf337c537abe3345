"""Defects only real architectures show, each a test that failed before its fix (tests/zoo replicas)."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
import torch
from PIL import Image

from rlaifv_core.backends.base import GenerationSettings, VisualPrompt, YesNo
from rlaifv_core.backends.hf import HFBackend
from rlaifv_core.config import ModelSpec
from tests.zoo.fixtures import zoo  # noqa: F401 - fixture

IMAGE = Image.new("RGB", (64, 48), (200, 30, 30))


def _backend(folder) -> HFBackend:
    return HFBackend.from_spec(ModelSpec(name_or_path=str(folder), batch_size=8))


@pytest.mark.parametrize("name", ["qwen2_vl", "qwen2_5_vl"])
def test_qwen_family_loads_without_torchvision_and_samples_n(zoo, name):
    import importlib.util

    assert importlib.util.find_spec("torchvision") is None  # the README's CPU install
    backend = _backend(zoo(name))  # was: OSError "Can't load video processor"
    with pytest.raises(ValueError, match="video"):
        backend.processor(text=["hi"], videos=[[IMAGE]])
    prompts = [VisualPrompt(IMAGE, "Describe the image."), VisualPrompt(Image.new("RGB", (100, 60)), "What is it?")]
    settings = GenerationSettings(n=3, temperature=1.0, top_k=None, max_new_tokens=4)
    first = backend.generate(prompts, settings, seeds=[1, 2])  # was: size mismatch / IndexError
    assert len(first) == 2 and all(len(s) == 3 for s in first)
    assert backend.generate(prompts, settings, seeds=[1, 2]) == first
    assert backend.generate(prompts, settings, seeds=[3, 4]) != first
    assert len({s for samples in first for s in samples}) > 2


def _first_answer_ids(processor, forms) -> set[int]:
    """Independently: tokenize prompt and prompt+form with the tokenizer's defaults, take the first new id."""
    tok = processor.tokenizer
    ids = set()
    for form in forms:
        user = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q"}]}]
        head = processor.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
        full = processor.apply_chat_template(user + [{"role": "assistant", "content": [{"type": "text", "text": form}]}],
                                             tokenize=False)
        a, b = tok(head, add_special_tokens=False)["input_ids"], tok(full, add_special_tokens=False)["input_ids"]
        token = tok.convert_ids_to_tokens(b[len(a)])
        if token.replace("\u2581", " ").replace("\u0120", " ") in forms:
            ids.add(b[len(a)])
    return ids


@pytest.mark.parametrize("name", ["idefics3", "qwen2_vl", "llava"])
def test_yes_no_scores_the_template_answer_tokens(zoo, name):
    backend = _backend(zoo(name))
    yes, no = backend.yes_no_ids
    tok = backend.tokenizer
    assert set(yes) == _first_answer_ids(backend.processor, ["yes", "Yes", " yes", " Yes"])
    assert set(no) == _first_answer_ids(backend.processor, ["no", "No", " no", " No"])
    if name == "idefics3":  # "Assistant:" + " yes": the model answers with Ġyes, never with un-spaced "yes"
        assert set(yes) == {tok.convert_tokens_to_ids("Ġyes"), tok.convert_tokens_to_ids("ĠYes")}
    if name == "qwen2_vl":  # "assistant\n" + "Yes" = 9454; " Yes" = 7414 too
        assert {9454, 7414, 9693, 9834} == set(yes)


def test_bos_is_added_once_on_every_path(zoo):
    backend = _backend(zoo("llava"))
    text = backend.render("Is it red?")
    with_image = backend.encode([text], [IMAGE])["input_ids"][0].tolist()
    text_only = backend.encode([backend.render("Is it red?", with_image=False)], None)["input_ids"][0].tolist()
    for ids in (with_image, text_only):  # the text path used to drop Llama's BOS
        assert ids[0] == 1 and ids.count(1) == 1
    qwen = _backend(zoo("qwen2_vl"))  # Qwen2 has no BOS: nothing added
    assert qwen.encode([qwen.render("Hi", with_image=False)], None)["input_ids"][0][0] == 151644  # <|im_start|>


@pytest.mark.parametrize("name", ["llava", "llava_next", "idefics3", "qwen2_vl"])
def test_chat_with_a_plain_string_reaches_the_template(zoo, name, monkeypatch):
    """The splitter/rewriter prompts are plain strings; LLaVA's and SmolVLM's templates read only
    content parts and rendered such a message as "USER: ASSISTANT:" (the model saw no prompt)."""
    from rlaifv_core.backends.templates import TemplateError

    backend = _backend(zoo(name))
    seen: list[str] = []
    encode = backend.encode
    monkeypatch.setattr(backend, "encode", lambda texts, images, padding_side="left":
                        seen.extend(texts) or encode(texts, images, padding_side))
    backend.chat([{"role": "user", "content": "Split THIS answer into facts."}], max_new_tokens=1)
    assert "Split THIS answer into facts." in seen[0]
    backend.processor.chat_template = "{% for m in messages %}{{ m['role'] }}: {% endfor %}assistant:"
    with pytest.raises(TemplateError, match=f"{name}.*dropped message text"):  # never a silently empty prompt
        backend.chat([{"role": "user", "content": "Split it."}], max_new_tokens=1)


def test_template_not_prefix_consistent_is_a_clear_error(zoo):
    from rlaifv_core.backends.templates import TemplateError

    backend = _backend(zoo("llava"))
    # A generation prompt with a trailing space: SentencePiece makes it "▁" in the prompt but "▁Yes" in the answer.
    backend.processor.chat_template = backend.processor.chat_template.replace("'ASSISTANT:'", "'ASSISTANT: '")
    with pytest.raises(TemplateError, match="llava.*not prefix-consistent"):
        backend.answer_logprobs([VisualPrompt(IMAGE, "Describe.")], ["Yes it is."])


def test_projector_nested_in_the_vision_module_trains(zoo):
    from rlaifv_core.config import DPOConfig
    from rlaifv_core.training.model_setup import freeze_vision_tower, load_training_model, lora_target_modules

    model, processor = load_training_model(zoo("qwen2_vl"), DPOConfig(),  # was: OSError (video processor)
                                           spec=ModelSpec(name_or_path=str(zoo("qwen2_vl"))))
    freeze_vision_tower(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    merger = {n for n, _ in model.named_parameters() if ".visual.merger." in f".{n}"}
    vision = {n for n, _ in model.named_parameters() if ".visual." in f".{n}"} - merger
    assert merger and merger <= trainable  # was: frozen with the vision tower
    assert vision and not (vision & trainable)
    assert not any(".merger." in t or ".visual." in t for t in lora_target_modules(model))


def test_degenerate_feedback_is_a_loud_warning(caplog):
    from rlaifv_core.config import PairsConfig
    from rlaifv_core.feedback.pairs import build_pairs

    rows = [{"prompt_id": f"p{i // 4}", "sample_idx": i % 4, "answer": f"answer {i}", "claims": [f"c{i}"] * 3,
             "questions": ["q?"] * 3, "accepted": [True] * 3, "p_yes": [0.9] * 3, "p_no": [0.1] * 3, "score": 0,
             "n_claims": 3} for i in range(12)]
    prompts = pd.DataFrame([{"prompt_id": f"p{i}", "image": b"", "question": "Describe."} for i in range(3)])
    with caplog.at_level(logging.WARNING):
        frame, counts = build_pairs(pd.DataFrame(rows), prompts, PairsConfig(), policy_id="p", labeler_id="l")
    assert len(frame) == 0 and counts["pairs"] == 0
    assert any("accepted 36 of 36" in w for w in counts["warnings"])
    assert any("0 preference pairs from 3 prompts" in w for w in counts["warnings"])
    assert "0 preference pairs" in caplog.text


def test_labeler_without_yes_no_mass_is_a_stage_error(caplog):
    from rlaifv_core.backends.yesno import YesNoMassError
    from rlaifv_core.config import JudgeConfig
    from rlaifv_core.feedback.judge import judge_candidates

    class Mute:
        identity = {"model": "mute-labeler"}

        def __init__(self, mass):
            self.mass = mass

        def yes_no(self, image, questions):
            return [YesNo(p_yes=self.mass * 0.3, p_no=self.mass * 0.7) for _ in questions]

    prompts = pd.DataFrame([{"prompt_id": f"p{i}", "image": None, "question": "Describe."} for i in range(5)])
    claims = pd.DataFrame([{"prompt_id": f"p{i}", "sample_idx": 0, "questions": ["Is it red?"] * 5} for i in range(5)])
    with pytest.raises(YesNoMassError, match="mute-labeler.*25 of 25"):
        judge_candidates(Mute(1e-4), prompts, claims, JudgeConfig())
    assert "mute-labeler" in caplog.text  # the counted warning came first
    assert len(judge_candidates(Mute(1.0), prompts, claims, JudgeConfig())) == 5
