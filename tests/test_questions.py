"""Claim → yes/no question: rules (shapes world exact, English with negation and do-support)
and the LLM path against a scripted Backend (prompts, parsing, retry, rule fallback)."""

from __future__ import annotations

import pytest

from tests.fakes import ScriptedBackend
from rlaifv_core.config import ClaimsConfig, ModelSpec
from rlaifv_core.feedback.questions import (
    QuestionResult,
    changeq_prompt_llama3,
    rewrite_questions,
    rewrite_questions_llm,
    rule_question,
)
from rlaifv_core.feedback.llm_lists import parse_list
from rlaifv_core.shapes.world import COLOURS, SHAPES



# --------------------------------------------------------------------------------------------
# rules
# --------------------------------------------------------------------------------------------

def test_shapes_world_questions_unchanged():
    """The tiny labeler was trained on exactly these strings."""
    for colour in COLOURS:
        for shape in SHAPES:
            assert rule_question(f"there is a {colour} {shape}") == f"is there a {colour} {shape} ?"
            assert rule_question(f"there is no {colour} {shape}") == f"is there no {colour} {shape} ?"
    assert rule_question("there are two red circles") == "are there two red circles ?"


@pytest.mark.parametrize("claim, question", [
    # the brief's examples (tokenised, lower-case style)
    ("there is a red circle", "is there a red circle ?"),
    ("there is no red circle", "is there no red circle ?"),
    ("the dog holds a ball", "does the dog hold a ball ?"),
    ("two men ride horses", "do two men ride horses ?"),
    ("the cat is not black", "is the cat not black ?"),
    ("there are no people", "are there no people ?"),
    # natural sentences: capitalised, "?" attached
    ("The dog holds a ball.", "Does the dog hold a ball?"),
    ("The man rode a horse.", "Did the man ride a horse?"),
    ("The cat sat on the mat.", "Did the cat sit on the mat?"),
    ("A man can swim.", "Can a man swim?"),
    ("The cat isn't black.", "Is the cat not black?"),
    ("He can't swim.", "Can he not swim?"),
    ("The dog doesn't bark.", "Does the dog not bark?"),
    ("The man does not wear a hat.", "Does the man not wear a hat?"),
    ("The man never smiles.", "Does the man never smile?"),
    ("Nobody is in the room.", "Is nobody in the room?"),
    ("There's a dog on the sofa.", "Is there a dog on the sofa?"),
    ("There might be a cat.", "Might there be a cat?"),
    ("The man has a hat.", "Does the man have a hat?"),
    ("The woman has red hair.", "Does the woman have red hair?"),
    ("The man has eaten the cake.", "Has the man eaten the cake?"),
    ("The dogs hold a ball.", "Do the dogs hold a ball?"),
    ("Children play in the park.", "Do children play in the park?"),
    ("The brown dog runs on the grass.", "Does the brown dog run on the grass?"),
    ("The man who rides a horse is tall.", "Is the man who rides a horse tall?"),
    ("The dog holds a ball that is red.", "Does the dog hold a ball that is red?"),
    ("The woman holding an umbrella is walking.", "Is the woman holding an umbrella walking?"),
    ("The girl in the red dress holds a balloon.", "Does the girl in the red dress hold a balloon?"),
    ("A group of people stands near the bus.", "Does a group of people stand near the bus?"),
    ("The man cut the cake.", "Did the man cut the cake?"),
    ("The image shows a cat.", "Does the image show a cat?"),
    ("A red circle", "Is there a red circle?"),
    ("Two dogs", "Are there two dogs?"),
])
def test_rule_question(claim, question):
    assert rule_question(claim) == question


def test_rule_question_rejects_empty():
    with pytest.raises(ValueError):
        rule_question("  . ")


# --------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------

def test_parse_list_markers_and_no_first_character_drop():
    text = "### Modified sentences:\n- Is there a dog?\nIs the cat black?\n* Is it raining?\n2) Is it?\n\n"
    assert parse_list(text, require_marker=False)[0] == ["Is there a dog?", "Is the cat black?",
                                                         "Is it raining?", "Is it?"]
    assert parse_list(text, require_marker=True) == (["Is there a dog?", "Is it raining?", "Is it?"],
                                                     [None, None, 2])


# --------------------------------------------------------------------------------------------
# LLM path
# --------------------------------------------------------------------------------------------

CLAIMS = ["There is a dog.", "The cat is not black."]


def test_project_prompt_and_parsing():
    backend = ScriptedBackend(["1. Is there a dog?\n2. Is the cat not black?"])
    result = rewrite_questions_llm(backend, CLAIMS, ClaimsConfig())
    assert result == QuestionResult(["Is there a dog?", "Is the cat not black?"], None,
                                    ["1. Is there a dog?\n2. Is the cat not black?"])
    prompt = backend.calls[0]["messages"][0]["content"]
    assert "Statements:\n1. There is a dog.\n2. The cat is not black.\n\nQuestions:" in prompt
    assert "Keep every negation" in prompt


def test_llama3_changeq_prompt_verbatim():
    backend = ScriptedBackend(["### Modified sentences:\n- Is there a dog?\n- Is the cat not black?"])
    result = rewrite_questions_llm(backend, CLAIMS, ClaimsConfig(preset="rlaifv-llama3"))
    assert result.questions == ["Is there a dog?", "Is the cat not black?"] and result.fallback_reason is None
    expected = (
        "You are an expert at modifying a given declarative sentence into a general question sentence. "
        "Your task is to modify the given declarative sentences one by one into a general question form. "
        "Do not change tenses or add extra content.\n    If the given declarative sentence contains not, "
        "no or negative meaning words, you need to check the modified general interrogative sentence to "
        "make sure that the generated general question sentence retains words with not , no or negative "
        "meaning words.\n\nYou should present your result in the following format:\n### Modified "
        "sentences:\n- {Modified sentence 1}\n- {Modified sentence 2}\n- ...\n\n### Declarative sentences:"
        "\n- There is a dog.\n\n- The cat is not black.\n"
    )
    assert backend.calls[0]["messages"] == [{"role": "user", "content": expected}]
    assert changeq_prompt_llama3(["x"]).endswith("### Declarative sentences:\n- x\n")


def test_count_mismatch_then_ok_uses_the_retry():
    backend = ScriptedBackend(["1. Is there a dog?", "1. Is there a dog?\n2. Is the cat not black?"])
    result = rewrite_questions_llm(backend, CLAIMS, ClaimsConfig())
    assert result.questions == ["Is there a dog?", "Is the cat not black?"] and result.fallback_reason is None
    assert backend.calls[0]["seed"] != backend.calls[1]["seed"]


def test_count_mismatch_twice_falls_back_to_rules_for_the_whole_answer():
    backend = ScriptedBackend(["1. Is there a dog?",
                               "1. Is there a dog?\n2. Is the cat black?\n3. Is there a ball?"])
    result = rewrite_questions_llm(backend, CLAIMS, ClaimsConfig())
    assert result.questions == [rule_question(c) for c in CLAIMS] == ["Is there a dog?", "Is the cat not black?"]
    assert "1 questions for 2 claims" in result.fallback_reason
    assert "3 questions for 2 claims" in result.fallback_reason
    assert len(result.raw) == 2


def test_lost_negation_is_not_accepted():
    backend = ScriptedBackend(["1. Is there a dog?\n2. Is the cat black?"] * 2)
    result = rewrite_questions_llm(backend, CLAIMS, ClaimsConfig())
    assert "negation" in result.fallback_reason
    assert result.questions[1] == "Is the cat not black?"


def test_rewrite_questions_dispatch():
    claim_lists = [["there is a red circle", "there is no blue square"], []]
    expected = [["is there a red circle ?", "is there no blue square ?"], []]
    for spec in ("rules", None, ModelSpec(backend="rules", name_or_path="rules")):
        results = rewrite_questions(claim_lists, spec, ClaimsConfig())
        assert [r.questions for r in results] == expected
        assert all(r.fallback_reason is None for r in results)
    backend = ScriptedBackend(["1. Is there a red circle?\n2. Is there no blue square?"])
    results = rewrite_questions(claim_lists, backend, ClaimsConfig())
    assert [r.questions for r in results] == [["Is there a red circle?", "Is there no blue square?"], []]
    assert len(backend.calls) == 1  # an answer without claims costs no call
