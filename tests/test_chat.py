"""RLAIFVChat: full checkpoints, LoRA adapters (the original crashed), endpoints and the command line."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlaifv_core.backends.base import GenerationSettings, VisualPrompt
from rlaifv_core.chat import DEFAULT_GENERATION, RLAIFVChat, interactive
from rlaifv_core.shapes.world import ShapesWorld

ROOT = Path(__file__).resolve().parent.parent
WORLD = ShapesWorld()
SHORT = {"num_beams": 1, "max_new_tokens": 8}


@pytest.fixture(scope="module")
def scene_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("scene") / "scene.png"
    WORLD.scene(5).render().save(path)
    return path


@pytest.fixture(scope="module")
def lora_dir(tiny_model_dir, tmp_path_factory):
    """A PEFT LoRA adapter on the tiny model with non-zero B matrices (so it changes the outputs)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    base = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 lora_dropout=0.0))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    path = tmp_path_factory.mktemp("lora") / "checkpoint-4"
    peft_model.save_pretrained(path)
    AutoProcessor.from_pretrained(tiny_model_dir).save_pretrained(path)  # as TRL's checkpoints hold it
    return path


def _logits(backend, prompt: VisualPrompt):
    batch = backend.encode([backend.render(prompt.question, "there is a red circle .")], [prompt.image])
    with torch.no_grad():
        return backend.model(**batch).logits


def test_defaults_are_the_originals_and_checkpoint_folder_chats(tiny_model_dir, scene_png):
    chat = RLAIFVChat(str(tiny_model_dir))
    assert chat.generation == DEFAULT_GENERATION == {"num_beams": 3, "do_sample": False, "max_new_tokens": 1024}
    assert chat._fit_budget(1024, 40) == 256 - 40  # the tiny model's context is 256 positions
    assert chat._fit_budget(100, 40) == 100
    chat.generation["max_new_tokens"] = 12  # keep the test short; still beam search with 3 beams
    answer = chat.chat({"image": str(scene_png), "question": "describe the image ."})
    assert isinstance(answer, str)
    prompt = VisualPrompt(WORLD.scene(5).render(), "describe the image .")
    assert answer == chat.backend.generate([prompt], GenerationSettings(n=1, num_beams=3, max_new_tokens=12))[0][0]


def test_lora_checkpoint_chats(lora_dir, tiny_model_dir, scene_png):
    config = json.loads((lora_dir / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]) == Path(tiny_model_dir)  # base found from the adapter config
    chat = RLAIFVChat(str(lora_dir), **SHORT)
    answer = chat.chat({"image": str(scene_png), "question": "describe the image ."})
    assert isinstance(answer, str)
    assert chat.backend.identity["adapter"] == str(lora_dir)

    # the adapter was really applied: merged weights = PEFT model's outputs ≠ the base's
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    prompt = VisualPrompt(WORLD.scene(5).render(), "describe the image .")
    base_chat = RLAIFVChat(str(tiny_model_dir), **SHORT)
    peft_model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(tiny_model_dir), str(lora_dir))
    batch = chat.backend.encode([chat.backend.render(prompt.question, "there is a red circle .")], [prompt.image])
    with torch.no_grad():
        peft_logits = peft_model.eval()(**batch).logits
    merged_logits = _logits(chat.backend, prompt)
    assert torch.allclose(merged_logits, peft_logits, atol=1e-4)
    assert not torch.allclose(merged_logits, _logits(base_chat.backend, prompt), atol=1e-3)

    # an explicit base_model works too (e.g. an adapter trained elsewhere) and gives the same model
    explicit = RLAIFVChat(str(lora_dir), base_model=str(tiny_model_dir), **SHORT)
    assert explicit.chat({"image": str(scene_png), "question": "describe the image ."}) == answer


def test_pil_image_and_overrides(tiny_model_dir):
    chat = RLAIFVChat(str(tiny_model_dir), num_beams=1, do_sample=True, temperature=0.9, max_new_tokens=6, seed=3)
    image = WORLD.scene(6).render()
    first = chat.chat({"image": image, "question": "what is in the image ?"})
    assert first == chat.chat({"image": image, "question": "what is in the image ?"})  # seeded
    assert len(first.split()) <= 6
    with pytest.raises(ValueError, match="question"):
        chat.chat({"image": image})


def test_interactive_loop_reads_questions_until_exit(tiny_model_dir, scene_png, tmp_path):
    chat = RLAIFVChat(str(tiny_model_dir), **SHORT)
    other = tmp_path / "other.png"
    WORLD.scene(8).render().save(other)
    stdin = io.StringIO(f"describe the image .\n\n:image {other}\nwhat is in the image ?\nexit\nnever asked\n")
    stdout = io.StringIO()
    assert interactive(chat, str(scene_png), stdin, stdout) == 0
    lines = stdout.getvalue().splitlines()
    assert lines == [chat.chat({"image": str(scene_png), "question": "describe the image ."}),
                     chat.chat({"image": str(other), "question": "what is in the image ?"})]


def test_command_line_answers_a_question_on_a_shapes_image(tiny_model_dir, scene_png):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-m", "rlaifv_core.chat", "--model", str(tiny_model_dir), "--image",
                           str(scene_png), "--num-beams", "1", "--max-new-tokens", "8", "describe", "the", "image", "."],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    expected = RLAIFVChat(str(tiny_model_dir), **SHORT).chat({"image": str(scene_png), "question": "describe the image ."})
    assert done.stdout.splitlines() == [expected]


def test_openai_endpoint_model_chats(scene_png, monkeypatch):
    try:
        from tests.servers.openai_vlm import OpenAIVLMServer, serve_in_thread, tiny_vlm_backend
    except ImportError:
        from servers.openai_vlm import OpenAIVLMServer, serve_in_thread, tiny_vlm_backend

    vlm = tiny_vlm_backend(seed=0, name="tiny-vlm")
    server = OpenAIVLMServer(vlm, model_name="tiny-vlm", api_key="sk-chat-test")
    base_url, stop = serve_in_thread(server.app)
    monkeypatch.setenv("RLAIFV_CHAT_TEST_KEY", "sk-chat-test")
    try:
        chat = RLAIFVChat("tiny-vlm", backend="openai", base_url=base_url, api_key_env="RLAIFV_CHAT_TEST_KEY",
                          max_new_tokens=8)
        answer = chat.chat({"image": str(scene_png), "question": "describe the image ."})
    finally:
        stop()
    # beam search is not part of the chat API: greedy, as the backend documents
    prompt = VisualPrompt(WORLD.scene(5).render(), "describe the image .")
    assert answer == vlm.generate([prompt], GenerationSettings(n=1, temperature=0.0, max_new_tokens=8))[0][0]
