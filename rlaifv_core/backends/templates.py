"""Chat-template rendering and batch encoding of prompts (and of prompt + answer) for a processor.

    from rlaifv_core.backends.templates import render_turn, encode_texts, encode_with_answers
    text = render_turn(processor, "Describe the image.")                 # the user turn + generation prompt
    batch, answer_mask = encode_with_answers(processor, prompts, answers)  # for log-probs of given answers

One user turn holds an optional image and a question; the processor's own chat template renders it
and the processor (with images) or its tokenizer (text only) encodes it.
"""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image

from .base import VisualPrompt


def render_turn(processor, question: str, answer: str | None = None, *, with_image: bool = True,
                is_vlm: bool = True) -> str:
    """The chat-template text of one user turn (+ the assistant answer when given)."""
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": question}]
    messages = [{"role": "user", "content": content if is_vlm else question}]
    if answer is None:
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}] if is_vlm else answer})
    return processor.apply_chat_template(messages, tokenize=False)


def encode_texts(processor, texts: Sequence[str], images: Sequence[Image.Image | None] | None,
                 device: torch.device | str = "cpu", padding_side: str = "left") -> dict:
    """Tokenize texts (with their images) into one padded batch on `device`."""
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = padding_side
    if images is not None and any(img is not None for img in images):
        batch = processor(text=list(texts), images=[img for img in images if img is not None],
                          padding=True, return_tensors="pt")
    else:
        batch = tokenizer(list(texts), padding=True, return_tensors="pt", add_special_tokens=False)
    return {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}


def encode_with_answers(processor, prompts: Sequence[VisualPrompt], answers: Sequence[str],
                        device: torch.device | str = "cpu", is_vlm: bool = True):
    """A right-padded batch of prompt+answer, and a mask of the answer tokens (end of turn included)."""
    full = [render_turn(processor, p.question, a, with_image=p.image is not None, is_vlm=is_vlm)
            for p, a in zip(prompts, answers)]
    prompt_only = [render_turn(processor, p.question, with_image=p.image is not None, is_vlm=is_vlm) for p in prompts]
    images = [p.image for p in prompts] if is_vlm else None
    batch = encode_texts(processor, full, images, device, "right")
    prompt_lens = encode_texts(processor, prompt_only, images, device, "right")["attention_mask"].sum(-1)
    lengths = batch["attention_mask"].sum(-1)
    positions = torch.arange(batch["input_ids"].shape[1], device=device)[None, :]
    answer_mask = (positions >= prompt_lens[:, None]) & (positions < lengths[:, None])
    return batch, answer_mask
