"""Self-feedback at inference time: the DPO implicit reward, likelihood baselines and best-of-N.

    from rlaifv_core.rewards import implicit_reward, sequence_logprob, best_of_n, score_candidates
    rewards = implicit_reward(aligned, reference, prompts, answers)            # β/T Σ (log πθ − log πref)
    ppl = sequence_logprob(aligned, prompts, answers)                          # "RLAIF-V PPL" baseline
    best = best_of_n(candidates, score_candidates(prompts, candidates,
                                                  lambda p, a: implicit_reward(aligned, reference, p, a)))

The reward (docs/method.md §7) of answer y to prompt x is the DPO implicit reward of the aligned model
πθ relative to the model it was trained from, π_ref, length-normalised by default:

    r(x, y) = β / T · Σ_t [log πθ(y_t | x, y_<t) − log π_ref(y_t | x, y_<t)]

with T the number of answer tokens (the template's end-of-turn tokens included, as DPO counts them
and as `Backend.answer_logprobs` returns them). `normalise=False` gives the plain sum β·Σ(…),
which favours short answers. The likelihood baselines of the paper's Figure 5 are the (mean)
per-token log-probability of one model; higher is better, so argmax of it = argmin perplexity.

Log-probabilities are checked: a NaN or infinite value (a broken checkpoint, an fp16 overflow)
raises `NonFiniteLogprobs` naming the model, answer and token, instead of ranking silently.
This module imports no Prefect.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from .backends.base import Backend, VisualPrompt

__all__ = ["NonFiniteLogprobs", "token_logprobs", "reward_from_logprobs", "likelihood_from_logprobs",
           "implicit_reward", "sequence_logprob", "best_of_n", "score_candidates", "flatten", "unflatten"]


class NonFiniteLogprobs(ValueError):
    """A model returned NaN or infinite log-probabilities: the scores would be meaningless."""


def _name(backend) -> str:
    identity = getattr(backend, "identity", None) or {}
    return str(identity.get("model") or getattr(backend, "name", None) or type(backend).__name__)


def check_logprobs(logps: Sequence[Sequence[float]], *, who: str = "model",
                   answers: Sequence[str] | None = None) -> None:
    """Raise NonFiniteLogprobs on the first NaN/±inf log-prob, or on an answer with no tokens."""
    for i, row in enumerate(logps):
        if len(row) == 0:
            raise ValueError(f"{who}: answer {i} has no scored tokens; cannot normalise by its length")
        for t, value in enumerate(row):
            if not math.isfinite(value):
                shown = f" ({answers[i][:60]!r})" if answers is not None else ""
                raise NonFiniteLogprobs(
                    f"{who}: log-probability {value} at token {t} of answer {i}{shown}; refusing to rank "
                    "answers with non-finite scores (check the checkpoint and its dtype)")


def token_logprobs(backend: Backend, prompts: Sequence[VisualPrompt], answers: Sequence[str]) -> list[list[float]]:
    """Per-token log π(y_t | x, y_<t) of every answer (one batched `answer_logprobs` call), checked."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    if not answers:
        return []
    logps = backend.answer_logprobs(list(prompts), list(answers))
    if len(logps) != len(answers):
        raise ValueError(f"{_name(backend)}: {len(logps)} log-prob rows for {len(answers)} answers")
    check_logprobs(logps, who=_name(backend), answers=answers)
    return [list(map(float, row)) for row in logps]


def likelihood_from_logprobs(logps: Sequence[Sequence[float]], normalise: bool = True) -> list[float]:
    """Σ_t log π(y_t) per answer, divided by T when normalise (the mean token log-prob)."""
    check_logprobs(logps)
    return [math.fsum(row) / (len(row) if normalise else 1) for row in logps]


def reward_from_logprobs(policy_logps: Sequence[Sequence[float]], reference_logps: Sequence[Sequence[float]],
                         beta: float = 0.1, normalise: bool = True) -> list[float]:
    """β/T · Σ_t (policy − reference) per answer (β · Σ when not normalise). Both models must have
    tokenised each answer the same way (the aligned model and its reference share a tokenizer)."""
    if len(policy_logps) != len(reference_logps):
        raise ValueError(f"{len(policy_logps)} policy rows but {len(reference_logps)} reference rows")
    check_logprobs(policy_logps, who="policy")
    check_logprobs(reference_logps, who="reference")
    rewards = []
    for i, (pol, ref) in enumerate(zip(policy_logps, reference_logps)):
        if len(pol) != len(ref):
            raise ValueError(
                f"answer {i}: the policy scored {len(pol)} tokens, the reference {len(ref)}; the implicit "
                "reward needs the aligned model and its reference to share a tokenizer and chat template")
        total = math.fsum(p - r for p, r in zip(pol, ref))
        rewards.append(beta * total / (len(pol) if normalise else 1))
    return rewards


def implicit_reward(policy_backend: Backend, reference_backend: Backend, prompts: Sequence[VisualPrompt],
                    answers: Sequence[str], beta: float = 0.1, normalise: bool = True) -> list[float]:
    """The DPO implicit reward of each answer: β/T Σ_t [log πθ − log π_ref] (β Σ_t … if not normalise)."""
    policy = token_logprobs(policy_backend, prompts, answers)
    reference = token_logprobs(reference_backend, prompts, answers)
    return reward_from_logprobs(policy, reference, beta=beta, normalise=normalise)


def sequence_logprob(backend: Backend, prompts: Sequence[VisualPrompt], answers: Sequence[str],
                     normalise: bool = True) -> list[float]:
    """Log-likelihood of each answer under one model, mean per token by default (the PPL baselines)."""
    return likelihood_from_logprobs(token_logprobs(backend, prompts, answers), normalise=normalise)


def best_of_n(candidates: Sequence[Sequence[str]], scores: Sequence[Sequence[float]]) -> list[int]:
    """Index of the highest-scoring candidate of each prompt (ties → the first). NaN raises."""
    if len(candidates) != len(scores):
        raise ValueError(f"{len(candidates)} candidate lists but {len(scores)} score lists")
    chosen = []
    for i, (answers, row) in enumerate(zip(candidates, scores)):
        if len(answers) != len(row):
            raise ValueError(f"prompt {i}: {len(answers)} candidates but {len(row)} scores")
        if not row:
            raise ValueError(f"prompt {i}: no candidates to choose from")
        if any(math.isnan(s) for s in row):
            raise NonFiniteLogprobs(f"prompt {i}: NaN score; refusing to rank")
        best = 0
        for j in range(1, len(row)):
            if row[j] > row[best]:
                best = j
        chosen.append(best)
    return chosen


# -- flattening helpers: score many candidates per prompt in one batched call ----------------------
def flatten(prompts: Sequence[VisualPrompt], candidates: Sequence[Sequence[str]]) -> tuple[list, list[str]]:
    if len(prompts) != len(candidates):
        raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists")
    flat_prompts = [p for p, answers in zip(prompts, candidates) for _ in answers]
    flat_answers = [a for answers in candidates for a in answers]
    return flat_prompts, flat_answers


def unflatten(values: Sequence, candidates: Sequence[Sequence[str]]) -> list[list]:
    out, start = [], 0
    for answers in candidates:
        out.append(list(values[start:start + len(answers)]))
        start += len(answers)
    if start != len(values):
        raise ValueError(f"{len(values)} values for {start} candidates")
    return out


def score_candidates(prompts: Sequence[VisualPrompt], candidates: Sequence[Sequence[str]],
                     scorer: Callable[[list, list[str]], list[float]]) -> list[list[float]]:
    """scorer(prompts, answers) → scores, applied to every candidate of every prompt in one call."""
    flat_prompts, flat_answers = flatten(prompts, candidates)
    return unflatten(scorer(flat_prompts, flat_answers) if flat_answers else [], candidates)
