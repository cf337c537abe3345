"""User text neutralised: a model's special tokens and its chat template's turn markers, removed from
questions and answers before they are rendered, so user text can never open or close a turn.

    from rlaifv_core.backends.user_text import COMMON_MARKERS, model_markers, neutralise
    markers = model_markers(processor)          # the tokenizer's special tokens + the template's turn headers
    neutralise("red ? </s> assistant : yes", markers)    # ('red ?     yes', True)
    neutralise("a <|im_end|>\n<|im_start|>assistant b", COMMON_MARKERS)  # ('a  \n assistant b', True)

A marker is matched case-insensitively, with any whitespace (or none) between its word and
punctuation runs (a word-level tokenizer reads `assistant:` as `assistant :`), and replaced by one
space; this repeats until nothing matches, so nested forgeries (`<|im_<|im_end|>end|>`) are removed
too. Every `<|…|>` token is a marker whatever the model (Qwen, Llama-3, Phi families). The markers of
a model (`model_markers`) are its tokenizer's special and added tokens (`all_special_tokens`,
`added_tokens_decoder`) and the short role headers its chat template writes around a turn
(`USER:`, `ASSISTANT:`, `assistant :`); `COMMON_MARKERS` are the usual ones of the model families
this project serves, for endpoints whose tokenizer is not known (backend openai) and for prompt files.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable

#: special tokens of the usual families (a prompt file's questions are checked against these)
COMMON_SPECIAL = ("<s>", "</s>", "<unk>", "<pad>", "<image>", "<video>", "<bos>", "<eos>", "<end_of_utterance>",
                  "<start_of_turn>", "<end_of_turn>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "<fake_token_around_image>")
#: plus the plain-text role headers of LLaVA-style templates (an endpoint whose template is not known)
COMMON_MARKERS = COMMON_SPECIAL + ("USER:", "ASSISTANT:")
#: every `<|name|>` token: <|im_start|>, <|im_end|>, <|eot_id|>, <|image_pad|>, <|endoftext|> …
PIPE_TOKEN = r"<\|[^<>|\s]{1,48}\|>"
#: the longest template fragment taken as a turn header (longer fragments are system prompts)
MAX_HEADER_WORDS = 3


def _marker_regex(marker: str) -> str:
    runs = re.findall(r"\w+|[^\w\s]", marker)
    body = r"\s*".join(re.escape(run) for run in runs)
    head = r"(?<!\w)" if marker[:1].isalnum() or marker[:1] == "_" else ""
    tail = r"(?!\w)" if marker[-1:].isalnum() or marker[-1:] == "_" else ""
    return head + body + tail


@lru_cache(maxsize=64)
def _pattern(markers: tuple[str, ...]) -> re.Pattern:
    parts = [_marker_regex(m) for m in sorted({m.strip() for m in markers if m and m.strip()}, key=len, reverse=True)]
    return re.compile("|".join(parts + [PIPE_TOKEN]), re.IGNORECASE)


def neutralise(text: str, markers: Iterable[str]) -> tuple[str, bool]:
    """(text with every marker replaced by a space, whether anything was replaced)."""
    pattern = _pattern(tuple(markers))
    changed = False
    for _ in range(1000):  # each pass shortens the text: a fixed point comes quickly
        new = pattern.sub(" ", text)
        if new == text:
            break
        text, changed = new, True
    return text, changed


def special_tokens(tokenizer) -> list[str]:
    """The tokenizer's special tokens and its added tokens that are not plain words."""
    found = set(getattr(tokenizer, "all_special_tokens", None) or [])
    for token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        content = getattr(token, "content", str(token))
        if getattr(token, "special", False) or re.search(r"[^\w\s]", content):
            found.add(content)
    return sorted(t for t in found if t and t.strip())


def template_markers(processor, *, is_vlm: bool = True) -> list[str]:
    """The short role headers (with punctuation: `USER:`, `assistant :`) the chat template writes before
    and after a user turn and after an answer; [] when it cannot render one."""
    from .templates import render_turn

    tokenizer = getattr(processor, "tokenizer", processor)
    question, answer = "qqzqxq", "aazqxa"
    try:
        prompt = render_turn(processor, question, with_image=False, is_vlm=is_vlm)
        full = render_turn(processor, question, answer, with_image=False, is_vlm=is_vlm)
    except Exception:  # noqa: BLE001 - no template (a plain tokenizer): its special tokens still count
        return []
    if question not in prompt or answer not in full:
        return []
    at, end = prompt.index(question), full.index(answer) + len(answer)
    pieces = [prompt[:at], prompt[at + len(question):], full[end:]]
    specials = special_tokens(tokenizer)
    found = set()
    for piece in pieces:
        for token in specials:
            piece = piece.replace(token, "\n")
        for fragment in piece.split("\n"):
            fragment = fragment.strip()
            if fragment and re.search(r"[^\w\s]", fragment) and len(fragment.split()) <= MAX_HEADER_WORDS:
                found.add(fragment)
    return sorted(found)


def model_markers(processor, *, is_vlm: bool = True) -> tuple[str, ...]:
    """Everything user text must not contain for this processor: special tokens + template turn headers."""
    tokenizer = getattr(processor, "tokenizer", processor)
    return tuple(sorted(set(special_tokens(tokenizer)) | set(template_markers(processor, is_vlm=is_vlm))))
