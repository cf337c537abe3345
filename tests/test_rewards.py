"""Implicit DPO reward, likelihood baselines and best-of-N selection (rlaifv_core.rewards)."""

from __future__ import annotations

import math

import pytest

from rlaifv_core.backends.base import Backend, VisualPrompt
from rlaifv_core.backends.hf import HFBackend
from rlaifv_core.config import ModelSpec
from rlaifv_core.rewards import (NonFiniteLogprobs, best_of_n, implicit_reward, reward_from_logprobs,
                                 score_candidates, sequence_logprob)
from rlaifv_core.shapes.world import ShapesWorld
from tests.helpers import manual_token_logps

WORLD = ShapesWorld()


def test_reward_equals_manual_computation_from_logits(tiny_backend, other_model_dir):
    reference = HFBackend.from_spec(ModelSpec(name_or_path=str(other_model_dir), batch_size=2))
    image = WORLD.scene(3).render()
    prompts = [VisualPrompt(image, "describe the image ."), VisualPrompt(image, "what is in the image ?"),
               VisualPrompt(WORLD.scene(4).render(), "describe the image in detail .")]
    answers = ["there is a red circle .", "a blue square and a green triangle .", "there is a yellow circle ."]
    beta = 0.1
    normalised = implicit_reward(tiny_backend, reference, prompts, answers, beta=beta)
    summed = implicit_reward(tiny_backend, reference, prompts, answers, beta=beta, normalise=False)
    own = sequence_logprob(tiny_backend, prompts, answers)
    own_sum = sequence_logprob(reference, prompts, answers, normalise=False)
    for i, (prompt, answer) in enumerate(zip(prompts, answers)):
        pol = manual_token_logps(tiny_backend, prompt, answer)
        ref = manual_token_logps(reference, prompt, answer)
        assert len(pol) == len(ref) == len(answer.split()) + 1  # words + end of turn
        diff = sum(p - r for p, r in zip(pol, ref))
        assert abs(diff) > 1e-3  # two different models: the check is not vacuous
        assert normalised[i] == pytest.approx(beta * diff / len(pol), abs=1e-5)
        assert summed[i] == pytest.approx(beta * diff, abs=1e-5)
        assert own[i] == pytest.approx(sum(pol) / len(pol), abs=1e-4)
        assert own_sum[i] == pytest.approx(sum(ref), abs=1e-4)
    # the same model as policy and reference gives zero reward
    assert implicit_reward(tiny_backend, tiny_backend, prompts, answers) == pytest.approx([0.0] * 3, abs=1e-9)


class FakeBackend(Backend):
    """Returns scripted per-token log-probs for each answer text."""

    fingerprint = "fake"

    def __init__(self, table: dict[str, list[float]], name: str = "fake"):
        self.table = table
        self.identity = {"model": name}

    def generate(self, prompts, settings, seeds=None):
        raise NotImplementedError

    def yes_no(self, image, questions):
        raise NotImplementedError

    def answer_logprobs(self, prompts, answers):
        return [list(self.table[a]) for a in answers]


def test_length_normalisation_changes_the_ranking():
    # short: 2 tokens, Δ = -0.5 each (Σ -1.0, mean -0.5); long: 10 tokens, Δ = -0.2 each (Σ -2.0, mean -0.2)
    short, long = "a red circle", "there is a red circle and a blue square and a green triangle"
    policy = FakeBackend({short: [-1.0, -1.0], long: [-0.7] * 10}, "aligned")
    reference = FakeBackend({short: [-0.5, -0.5], long: [-0.5] * 10}, "reference")
    prompts = [VisualPrompt(None, "describe the image .")] * 2
    candidates = [[short, long]]

    def scorer(normalise):
        return lambda p, a: implicit_reward(policy, reference, p, a, beta=0.1, normalise=normalise)

    summed = score_candidates(prompts[:1], candidates, scorer(False))
    averaged = score_candidates(prompts[:1], candidates, scorer(True))
    assert summed[0] == pytest.approx([-0.1, -0.2])
    assert averaged[0] == pytest.approx([-0.05, -0.02])
    assert best_of_n(candidates, summed) == [0]  # the sum favours the short answer
    assert best_of_n(candidates, averaged) == [1]  # normalised, the long one wins


def test_best_of_n_argmax_ties_go_to_the_first():
    candidates = [["a", "b", "c"], ["d", "e"], ["f"]]
    assert best_of_n(candidates, [[0.1, 0.3, 0.3], [-1.0, -1.0], [5.0]]) == [1, 0, 0]
    assert best_of_n(candidates, [[-math.inf, -2.0, -3.0], [2.0, 1.0], [0.0]]) == [1, 0, 0]
    with pytest.raises(ValueError, match="2 candidates but 3 scores"):
        best_of_n([["a", "b"]], [[1.0, 2.0, 3.0]])


def test_nan_logprobs_raise_a_clear_error():
    good = FakeBackend({"a red circle": [-1.0, -2.0, -0.5]}, "reference")
    broken = FakeBackend({"a red circle": [-1.0, float("nan"), -0.5]}, "broken-checkpoint")
    prompts, answers = [VisualPrompt(None, "describe the image .")], ["a red circle"]
    with pytest.raises(NonFiniteLogprobs, match="broken-checkpoint.*nan.*token 1 of answer 0"):
        implicit_reward(broken, good, prompts, answers)
    with pytest.raises(NonFiniteLogprobs, match="broken-checkpoint"):
        implicit_reward(good, broken, prompts, answers)
    with pytest.raises(NonFiniteLogprobs):
        sequence_logprob(broken, prompts, answers)
    with pytest.raises(NonFiniteLogprobs):
        reward_from_logprobs([[float("inf")]], [[-1.0]])
    with pytest.raises(NonFiniteLogprobs, match="NaN"):
        best_of_n([["a", "b"]], [[0.0, float("nan")]])


def test_mismatched_tokenisation_is_refused():
    with pytest.raises(ValueError, match="share a tokenizer"):
        reward_from_logprobs([[-1.0, -1.0]], [[-1.0]])
