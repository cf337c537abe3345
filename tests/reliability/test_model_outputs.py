"""Bad model outputs: empty answers, answers without claims, unparsable splitter replies, rewriters that
miscount, tied and NaN yes/no probabilities, NaN log-probs. Each is a recorded, counted outcome (or a
clear error), never a silent drop and never a pair built on garbage."""

from __future__ import annotations

import json
import math
import re

import pandas as pd
import pytest

from rlaifv_core.backends.base import Backend, ChatReply, VisualPrompt, YesNo
from rlaifv_core.feedback.claims import split_claims, split_claims_rules
from rlaifv_core.config import ClaimsConfig, JudgeConfig, PairsConfig
from rlaifv_core.feedback.judge import judge_candidates
from rlaifv_core.feedback.pairs import build_pairs
from rlaifv_core.feedback.questions import rewrite_questions
from rlaifv_core.rewards import NonFiniteLogprobs, best_of_n, implicit_reward, sequence_logprob

from .conftest import counts_artifact, png_bytes, tiny_config


class FakeModel(Backend):
    """A scripted backend: `verdict(question) -> YesNo` for the labeler role, `reply(prompt) -> str` for
    the text roles, `logps(answer) -> list[float]` for scoring."""

    fingerprint = "fake"

    def __init__(self, verdict=None, reply=None, logps=None, name="fake-model"):
        self.verdict, self.reply, self.logps = verdict, reply, logps
        self.identity = {"model": name}
        self.batch_size = 8
        self.questions: list[str] = []
        self.prompts: list[str] = []

    def generate(self, prompts, settings, seeds=None):  # pragma: no cover - not used here
        raise NotImplementedError

    def yes_no(self, image, questions):
        self.questions.extend(questions)
        return [self.verdict(q) for q in questions]

    def answer_logprobs(self, prompts, answers):
        return [self.logps(a) for a in answers]

    def chat(self, messages, *, temperature=0.0, top_p=1.0, max_new_tokens=512, seed=0):
        self.prompts.append(messages[-1]["content"])
        return ChatReply(self.reply(messages[-1]["content"]), "fake-model")


def _prompts(k: int = 1) -> pd.DataFrame:
    return pd.DataFrame({"prompt_id": [f"p{i}" for i in range(k)], "image": [png_bytes(i) for i in range(k)],
                         "question": ["describe the image ."] * k, "image_path": [""] * k, "task": ["detail"] * k,
                         "origin_dataset": ["shapes"] * k})


def _scored(answers: list[str], labeler: Backend, split=None) -> pd.DataFrame:
    """candidates → claims (rules, or `split` results) → rule questions → verdicts, merged as the pairs task does."""
    candidates = pd.DataFrame({"prompt_id": ["p0"] * len(answers), "sample_idx": range(len(answers)), "answer": answers})
    split = split or split_claims([("describe the image .", a) for a in answers], "rules")
    questions = rewrite_questions([r.claims for r in split], "rules")
    claims = candidates[["prompt_id", "sample_idx"]].assign(
        claims=[r.claims for r in split], questions=[q.questions for q in questions],
        split_failed=[r.failure is not None for r in split])
    verdicts = judge_candidates(labeler, _prompts(), claims, JudgeConfig())
    keys = ["prompt_id", "sample_idx"]
    return candidates.merge(claims, on=keys).merge(verdicts, on=keys)


def _blue_is_true(question: str) -> YesNo:
    return YesNo(0.9, 0.1) if "blue" in question else YesNo(0.1, 0.9)


PAIRS = PairsConfig(builder="paper", per_prompt=10, length_balance=False)


# -- answers ------------------------------------------------------------------------------------------------
def test_empty_answers_are_kept_counted_and_never_a_side_of_a_pair():
    answers = ["", "   ", "there is a red circle .", "there is a blue square ."]
    scored = _scored(answers, FakeModel(verdict=_blue_is_true))
    empty = scored[scored["answer"].str.strip() == ""]
    assert len(scored) == 4 and (empty["zero_claims"]).all() and (empty["score"] == 0).all()  # kept, scored 0
    pairs, counts = build_pairs(scored, _prompts(), PAIRS, policy_id="p", labeler_id="l")
    assert counts["skipped_empty_answer"] == 2
    # without the skip, "" (score 0) would be chosen over the red-circle answer (score -1)
    assert [(p.chosen, p.rejected) for p in pairs.itertuples()] == [("there is a blue square .",
                                                                     "there is a red circle .")]


def test_answers_with_no_claims_are_scored_zero_without_asking_the_labeler():
    labeler = FakeModel(verdict=_blue_is_true)
    scored = _scored(["what is this ?", "there is nothing .", "there is a red circle ."], labeler)
    no_claims = scored.iloc[:2]
    assert (no_claims["n_claims"] == 0).all() and no_claims["zero_claims"].all() and (no_claims["score"] == 0).all()
    assert not no_claims["split_failed"].any()  # "states nothing" is not a failure
    assert labeler.questions == ["is there a red circle ? Please answer yes or no."]  # only the real claim
    pairs, counts = build_pairs(scored, _prompts(), PAIRS, policy_id="p", labeler_id="l")
    # stating nothing outscores the hallucination, but is never taught as the better answer
    assert counts["skipped_empty_answer"] == 0 and counts["skipped_zero_claim_chosen"] == 2 and pairs.empty



def test_splitter_reply_without_a_parsable_list_is_a_recorded_failure_skipped_by_pairs():
    prose = "This image is lovely and full of shapes, I think."

    def reply(prompt):
        answer = re.search(r"Answer: (.*)", prompt).group(1)
        return prose if "red" in answer else "\n".join(f"- {c}" for c in split_claims_rules(answer)) or "- NONE"

    splitter = FakeModel(reply=reply)
    answers = ["there is a red circle .", "there is a blue square .", "what ?"]
    split = split_claims([("describe the image .", a) for a in answers], splitter, ClaimsConfig())
    assert split[0].claims == [] and split[0].failure == "no list items in the reply after 2 attempts"
    assert split[0].raw == [prose, prose]  # retried once with another seed, both replies kept
    assert split[1].claims == ["there is a blue square"] and split[1].failure is None
    assert split[2].claims == [] and split[2].failure is None  # "- NONE": no claims, not a failure
    scored = _scored(answers, FakeModel(verdict=_blue_is_true), split=split)
    pairs, counts = build_pairs(scored, _prompts(), PAIRS, policy_id="p", labeler_id="l")
    assert counts["skipped_split_failure"] == 1
    assert "there is a red circle ." not in set(pairs["chosen"]) | set(pairs["rejected"])


@pytest.mark.parametrize("extra, reason", [(-1, "1 questions for 2 claims"), (+1, "3 questions for 2 claims")])
def test_rewriter_returning_too_few_or_too_many_questions_falls_back_to_rules(extra, reason):
    claims = ["there is a red circle", "there is a blue square"]

    def reply(prompt):
        return "\n".join(f"{k}. is there thing {k} ?" for k in range(1, len(claims) + 1 + extra))

    rewriter = FakeModel(reply=reply)
    [result] = rewrite_questions([claims], rewriter, ClaimsConfig())
    assert len(rewriter.prompts) == 2  # one retry
    assert result.questions == ["is there a red circle ?", "is there a blue square ?"]  # exactly one per claim
    assert result.fallback_reason == f"attempt 1: {reason}; attempt 2: {reason} → rule-based questions"


# -- the labeler ----------------------------------------------------------------------------------------------
def test_a_yes_no_tie_is_a_rejection():
    assert not YesNo(0.3, 0.3).accepted() and not YesNo(0.0, 0.0).accepted()
    assert not YesNo(0.6, 0.4).accepted(threshold=0.6) and YesNo(0.61, 0.39).accepted(threshold=0.6)
    scored = _scored(["there is a red circle and a blue square ."], FakeModel(verdict=lambda q: YesNo(0.25, 0.25)))
    row = scored.iloc[0]
    assert list(row["accepted"]) == [False, False] and row["n_rejected"] == 2 and row["score"] == -2


@pytest.mark.parametrize("p_yes, p_no", [(math.nan, 0.1), (0.9, math.nan), (math.nan, math.nan)])
def test_a_nan_yes_no_probability_is_never_accepted(p_yes, p_no):
    assert not YesNo(p_yes, p_no).accepted() and not YesNo(p_yes, p_no).accepted(threshold=0.0)
    scored = _scored(["there is a blue square ."], FakeModel(verdict=lambda q: YesNo(p_yes, p_no)))
    assert list(scored.iloc[0]["accepted"]) == [False] and scored.iloc[0]["score"] == -1


# -- log-probs ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_log_probs_raise_naming_the_model_and_answer(bad):
    prompts = [VisualPrompt(None, "describe the image .")] * 2
    answers = ["there is a red circle .", "there is a blue square ."]
    fine = FakeModel(logps=lambda a: [-1.0, -2.0], name="reference-model")
    broken = FakeModel(logps=lambda a: [-1.0, bad] if "blue" in a else [-1.0, -1.0], name="broken-checkpoint")
    with pytest.raises(NonFiniteLogprobs) as info:
        implicit_reward(broken, fine, prompts, answers)
    message = str(info.value)
    assert "broken-checkpoint" in message and "token 1 of answer 1" in message and "blue square" in message
    with pytest.raises(NonFiniteLogprobs):
        sequence_logprob(broken, prompts, answers)
    with pytest.raises(NonFiniteLogprobs, match="prompt 0: NaN score"):
        best_of_n([answers], [[0.5, math.nan]])


# -- through the loop: the counts reach the stage artifacts and summary.json ---------------------------------
def _text_roles():
    """A splitter that cannot split answers mentioning "red" and a rewriter that drops a question for
    answers with more than one claim."""
    def split_reply(prompt):
        answer = re.search(r"Answer: (.*)", prompt).group(1)
        if "red" in answer:
            return "Sorry, I cannot list facts."
        return "\n".join(f"- {c}" for c in split_claims_rules(answer)) or "- NONE"

    def rewrite_reply(prompt):
        statements = re.findall(r"^\d+\. (.*)$", prompt, flags=re.M)
        keep = statements[:-1] if len(statements) > 1 else statements
        return "\n".join(f"{k}. is it true that {s} ?" for k, s in enumerate(keep, 1))

    return FakeModel(reply=split_reply, name="fake-splitter"), FakeModel(reply=rewrite_reply, name="fake-rewriter")


def test_model_output_faults_are_counted_in_stage_artifacts_and_summary_json(prefect_api, tmp_path, tiny_model_dir,
                                                                             monkeypatch):
    import rlaifv_core.feedback.sampling
    import tasks.claims
    from flows.iterate import iterate

    real_sample = rlaifv_core.feedback.sampling.sample_candidates

    def sample_with_faults(*args, **kwargs):
        frame = real_sample(*args, **kwargs)
        frame.loc[frame["sample_idx"] == 0, "answer"] = ""  # an empty answer per prompt
        frame.loc[frame["sample_idx"] == 1, "answer"] = "there is a red circle ."  # the splitter fails on it
        frame.loc[frame["sample_idx"] == 2, "answer"] = "there is a blue square and a green triangle ."
        return frame

    splitter, rewriter = _text_roles()
    monkeypatch.setattr(rlaifv_core.feedback.sampling, "sample_candidates", sample_with_faults)
    monkeypatch.setattr(tasks.claims, "_role", lambda spec: {"fake-splitter": splitter,
                                                             "fake-rewriter": rewriter}[spec.name_or_path])
    config = tiny_config(tmp_path / "runs", tiny_model_dir, "models.splitter.name_or_path=fake-splitter",
                         "models.rewriter.name_or_path=fake-rewriter", run="outputs")
    summary = iterate(config)

    claims = {k: int(v) for k, v in counts_artifact("outputs-iter-1-claims-parquet-counts").items()}
    assert claims["answers"] == 16 and claims["split_failures"] == 4  # the red-circle answer of each prompt
    assert claims["answers_without_claims"] >= 8  # the empty answers and the failed splits at least
    assert claims["question_fallbacks"] >= 4  # the two-claim answer of each prompt
    pairs = {k: v for k, v in counts_artifact("outputs-iter-1-pairs-parquet-counts").items()}
    assert int(pairs["skipped_split_failure"]) == 4 and int(pairs["skipped_empty_answer"]) == 4
    stored = json.loads((tmp_path / "runs" / "outputs" / "summary.json").read_text())
    assert stored["iterations"][1]["pair_counts"]["skipped_split_failure"] == 4
    assert stored["iterations"][1]["pair_counts"]["skipped_empty_answer"] == 4
    assert summary["iterations"][1]["pair_counts"] == stored["iterations"][1]["pair_counts"]
