"""The small interface every model backend implements (in-process HF, OpenAI-compatible server).

    from rlaifv_core.backends import load_backend
    policy = load_backend(config.models.policy)
    answers = policy.generate([VisualPrompt(image, "Describe the image.")], n=10, temperature=0.7, seed=0)

A stage never knows which backend serves it; everything a stage needs is here.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Sequence

from PIL import Image


class EndpointError(RuntimeError):
    """A model endpoint failed after bounded retries (or with an error retrying cannot fix)."""

    def __init__(self, message: str, *, endpoint: str | None = None, model: str | None = None,
                 attempts: int = 0, status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.endpoint, self.model, self.attempts, self.status, self.retryable = endpoint, model, attempts, status, retryable


@dataclass(frozen=True)
class VisualPrompt:
    """One user turn: an optional image and a question."""

    image: Image.Image | None
    question: str


@dataclass(frozen=True)
class YesNo:
    """Next-token probabilities of a yes/no answer (softmax over the full vocabulary)."""

    p_yes: float  # P(yes) + P(Yes)
    p_no: float  # P(no) + P(No)
    parts: dict[str, float] = field(default_factory=dict)  # each surface form's probability

    def accepted(self, threshold: float = 0.5) -> bool:
        """p_yes / (p_yes + p_no) > threshold; a tie (or no mass on either) is a rejection."""
        total = self.p_yes + self.p_no
        return total > 0 and self.p_yes / total > threshold


@dataclass(frozen=True)
class GenerationSettings:
    n: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int | None = 50
    max_new_tokens: int = 512
    num_beams: int = 1
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass(frozen=True)
class ChatReply:
    text: str
    model: str  # the model name the server reported (or the local model's id)


class Backend(abc.ABC):
    """A served model. Vision roles use generate/yes_no/answer_logprobs; text roles use chat."""

    #: a string that changes whenever the model's weights or identity change (cache keys)
    fingerprint: str
    #: who answered: endpoint/model path, the server-reported name, settings
    identity: dict
    #: requests the backend serves at once: callers may overlap up to this many from threads (an
    #: in-process model serves one call at a time; an OpenAI-compatible server its `max_concurrency`)
    max_concurrency: int = 1

    @abc.abstractmethod
    def generate(self, prompts: Sequence[VisualPrompt], settings: GenerationSettings,
                 seeds: Sequence[int] | None = None) -> list[list[str]]:
        """settings.n answers per prompt; seeds[i] is prompt i's seed (default settings.seed + i)."""

    @abc.abstractmethod
    def yes_no(self, image: Image.Image | None, questions: Sequence[str]) -> list[YesNo]:
        """P(yes)/P(no) of the first answer token for each question about one image."""

    def answer_logprobs(self, prompts: Sequence[VisualPrompt], answers: Sequence[str]) -> list[list[float]]:
        """Per-token log-probabilities of each answer given its prompt."""
        raise NotImplementedError(f"{type(self).__name__} cannot score given answers")

    def chat(self, messages: list[dict], *, temperature: float = 0.0, top_p: float = 1.0,
             max_new_tokens: int = 512, seed: int = 0) -> ChatReply:
        """One reply to a text conversation ([{role, content}])."""
        raise NotImplementedError(f"{type(self).__name__} has no text chat")

    def neutralises(self, text: str) -> bool:
        """Whether this backend removes markers from `text` before sending it (backends/user_text.py)."""
        return False

    def close(self) -> None:  # pragma: no cover - default: nothing to release
        pass
