"""Chat-template rendering and batch encoding of prompts (and of prompt + answer) for a processor.

    from rlaifv_core.backends.templates import render_turn, encode_texts, encode_with_answers
    text = render_turn(processor, "Describe the image.")                 # the user turn + generation prompt
    batch, answer_mask = encode_with_answers(processor, prompts, answers)  # for log-probs of given answers
    first_answer_token(processor, "Is it red?", " yes", name="my-model")  # (id, token text) after the prompt
    render_chat(processor, [{"role": "user", "content": "Split: ..."}], is_vlm=True)  # a text chat, nothing dropped

One user turn holds an optional image and a question; the processor's own chat template renders it
and the processor (with images) or its tokenizer (text only) encodes it. Special tokens are handled
the same on every path (`add_special_tokens`): the tokenizer adds its own (Llama's BOS) unless the
rendered text already starts with the BOS token (templates that write it themselves), so BOS is
never doubled nor dropped. The prompt/answer boundary is checked token by token: the prompt's
tokens must be a prefix of the prompt+answer tokens, else `TemplateError` names the model.
"""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image

from .base import VisualPrompt


class TemplateError(ValueError):
    """A chat template whose prompt is not a token prefix of prompt + answer."""


def render_turn(processor, question: str, answer: str | None = None, *, with_image: bool = True,
                is_vlm: bool = True) -> str:
    """The chat-template text of one user turn (+ the assistant answer when given)."""
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": question}]
    messages = [{"role": "user", "content": content if is_vlm else question}]
    if answer is None:
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}] if is_vlm else answer})
    return processor.apply_chat_template(messages, tokenize=False)


def _as_parts(content):
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _texts(content) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [part["text"] for part in content or [] if isinstance(part, dict) and part.get("type") == "text"]


def render_chat(processor, messages: Sequence[dict], *, is_vlm: bool = True, name: str = "the model") -> str:
    """A text chat (splitter, rewriter, judge roles) through the model's own template + generation prompt.
    A VLM's template reads content as a list of parts (LLaVA's, SmolVLM's select `type == "text"` and
    silently render a plain string as nothing): string contents become text parts there. Every text
    must appear in the rendering, else TemplateError names the model (never a prompt silently emptied)."""
    if is_vlm:
        messages = [{**m, "content": _as_parts(m.get("content"))} for m in messages]
    text = processor.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    lost = [t for m in messages for t in _texts(m.get("content")) if t.strip() and t.strip() not in text]
    if lost:
        raise TemplateError(f"{name}: the chat template dropped message text {lost[0][:80]!r} "
                            f"(roles {[m.get('role') for m in messages]}); it cannot serve a text role")
    return text


def add_special_tokens(tokenizer, texts: Sequence[str]) -> bool:
    """Whether to let the tokenizer add its special tokens: not when the template wrote BOS itself."""
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and texts and all(t.startswith(bos) for t in texts))


def text_ids(tokenizer, text: str) -> list[int]:
    """The token ids of one rendered text, special tokens handled as on every other path."""
    return tokenizer(text, add_special_tokens=add_special_tokens(tokenizer, [text]))["input_ids"]


def encode_texts(processor, texts: Sequence[str], images: Sequence[Image.Image | None] | None,
                 device: torch.device | str = "cpu", padding_side: str = "left") -> dict:
    """Tokenize texts (with their images) into one padded batch on `device`."""
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = padding_side
    special = add_special_tokens(tokenizer, texts)
    if images is not None and any(img is not None for img in images):
        batch = processor(text=list(texts), images=[img for img in images if img is not None],
                          padding=True, return_tensors="pt", add_special_tokens=special)
    else:
        batch = tokenizer(list(texts), padding=True, return_tensors="pt", add_special_tokens=special)
    return {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}


def answer_start(tokenizer, prompt_text: str, full_text: str, *, name: str = "the model") -> tuple[list[int], int]:
    """(ids of prompt+answer, index of the answer's first token); checks the prompt is a token prefix."""
    prompt_ids, full_ids = text_ids(tokenizer, prompt_text), text_ids(tokenizer, full_text)
    if full_ids[:len(prompt_ids)] != prompt_ids:
        at = next((i for i, (a, b) in enumerate(zip(prompt_ids, full_ids)) if a != b), min(len(prompt_ids), len(full_ids)))
        shown = lambda ids: tokenizer.convert_ids_to_tokens(ids[max(0, at - 2):at + 3])  # noqa: E731
        raise TemplateError(
            f"{name}: the chat template is not prefix-consistent: the prompt's tokens are not a prefix of "
            f"prompt + answer (first difference at token {at}: prompt {shown(prompt_ids)} vs prompt+answer "
            f"{shown(full_ids)}). Answer log-probs and yes/no scores need the prompt's tokens unchanged; "
            "fix the template (e.g. no trailing space in the generation prompt)")
    return full_ids, len(prompt_ids)


def first_answer_token(processor, question: str, answer: str, *, with_image: bool = True, is_vlm: bool = True,
                       name: str = "the model") -> tuple[int, str]:
    """(id, token text) of the first token of the assistant turn that answers `answer`."""
    tokenizer = getattr(processor, "tokenizer", processor)
    prompt = render_turn(processor, question, with_image=with_image, is_vlm=is_vlm)
    full = render_turn(processor, question, answer, with_image=with_image, is_vlm=is_vlm)
    ids, start = answer_start(tokenizer, prompt, full, name=name)
    if start >= len(ids):
        raise TemplateError(f"{name}: the chat template renders the answer {answer!r} as no token at all")
    return ids[start], tokenizer.convert_ids_to_tokens(ids[start])


def encode_with_answers(processor, prompts: Sequence[VisualPrompt], answers: Sequence[str],
                        device: torch.device | str = "cpu", is_vlm: bool = True, name: str = "the model"):
    """A right-padded batch of prompt+answer, and a mask of the answer tokens (end of turn included).
    Raises TemplateError (naming the model) when a prompt is not a token prefix of its prompt+answer."""
    tokenizer = getattr(processor, "tokenizer", processor)
    full = [render_turn(processor, p.question, a, with_image=p.image is not None, is_vlm=is_vlm)
            for p, a in zip(prompts, answers)]
    prompt_only = [render_turn(processor, p.question, with_image=p.image is not None, is_vlm=is_vlm) for p in prompts]
    for head, whole in zip(prompt_only, full):
        answer_start(tokenizer, head, whole, name=name)
    images = [p.image for p in prompts] if is_vlm else None
    batch = encode_texts(processor, full, images, device, "right")
    prompt_lens = encode_texts(processor, prompt_only, images, device, "right")["attention_mask"].sum(-1)
    lengths = batch["attention_mask"].sum(-1)
    positions = torch.arange(batch["input_ids"].shape[1], device=device)[None, :]
    answer_mask = (positions >= prompt_lens[:, None]) & (positions < lengths[:, None])
    return batch, answer_mask
