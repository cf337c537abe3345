"""Test doubles shared by several test modules."""

from __future__ import annotations

from rlaifv_core.backends.base import Backend, ChatReply


class ScriptedBackend(Backend):
    """A text backend answering from a list of replies or a function of the prompt (records calls)."""

    fingerprint = "scripted"
    identity = {"model": "scripted"}

    def __init__(self, replies):
        self.replies = replies if callable(replies) else list(replies)
        self.calls: list[dict] = []

    def generate(self, prompts, settings, seeds=None):  # pragma: no cover - not a vision backend
        raise NotImplementedError

    def yes_no(self, image, questions):  # pragma: no cover
        raise NotImplementedError

    def chat(self, messages, *, temperature=0.0, top_p=1.0, max_new_tokens=512, seed=0):
        self.calls.append({"messages": messages, "temperature": temperature, "top_p": top_p,
                           "max_new_tokens": max_new_tokens, "seed": seed})
        content = messages[-1]["content"]
        text = self.replies(content) if callable(self.replies) else self.replies.pop(0)
        return ChatReply(text, "scripted")
