"""Claim splitting: rules (exact on the shapes world, sensible on simple English) and the LLM
path against a scripted Backend (prompt formats, parsing, chunking, retry, failure)."""

from __future__ import annotations

import itertools
import re

import pytest

from tests.fakes import ScriptedBackend
from rlaifv_core.feedback.claims import (
    ClaimResult,
    chunk_answer,
    split_claims,
    split_claims_llm,
    split_claims_rules,
    split_prompt_llama3,
)
from rlaifv_core.config import ClaimsConfig, ModelSpec
from rlaifv_core.shapes.world import OBJECT_TYPES, ShapesWorld, canonical_order, object_name


# --------------------------------------------------------------------------------------------
# rules: the shapes world, exactly
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("answer, claims", [
    ("there is a red circle , a blue square and a green triangle .",
     ["there is a red circle", "there is a blue square", "there is a green triangle"]),
    ("yes , there is a red circle .", ["there is a red circle"]),
    ("no , there is no red circle .", ["there is no red circle"]),
    ("there is nothing .", []),
    ("there is a yellow triangle .", ["there is a yellow triangle"]),
    ("there is a red circle and a blue square .", ["there is a red circle", "there is a blue square"]),
    ("", []),
])
def test_shapes_sentences_exact(answer, claims):
    assert split_claims_rules(answer) == claims


def test_every_shapes_caption_and_presence_answer():
    for k in range(5):
        for objects in itertools.combinations(OBJECT_TYPES, k):
            expected = [f"there is a {object_name(o)}" for o in canonical_order(objects)]
            assert split_claims_rules(ShapesWorld.describe(objects)) == expected
    for obj in OBJECT_TYPES:
        assert split_claims_rules(ShapesWorld.presence_answer(obj, True)) == [f"there is a {object_name(obj)}"]
        assert split_claims_rules(ShapesWorld.presence_answer(obj, False)) == [f"there is no {object_name(obj)}"]


# --------------------------------------------------------------------------------------------
# rules: simple real English
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("answer, claims", [
    ("The dog holds a ball. The cat sleeps on the sofa.", ["The dog holds a ball", "The cat sleeps on the sofa"]),
    ("The image shows a cat, a dog and a bird.", ["There is a cat", "There is a dog", "There is a bird"]),
    ("Yes, there is a dog on the sofa.", ["There is a dog on the sofa"]),
    ("No, there are no people in the street.", ["There are no people in the street"]),
    ("There are two cats and a dog on the bed.", ["There are two cats on the bed", "There is a dog on the bed"]),
    ("A man rides a horse and a woman holds an umbrella.", ["A man rides a horse", "A woman holds an umbrella"]),
    ("In the image, there is a black and white cat.", ["There is a black and white cat"]),
    ("There are no people or cars in the street.",
     ["There are no people in the street", "There are no cars in the street"]),
    ("I can see a red car, a blue bus and two bicycles.",
     ["There is a red car", "There is a blue bus", "There are two bicycles"]),
    ("The sky is blue; the grass is green.", ["The sky is blue", "The grass is green"]),
    ("Additionally, the dog is wearing a collar.", ["The dog is wearing a collar"]),
    ("There's a large, red ball in the garden.", ["There is a large, red ball in the garden"]),
    ("The man holds a cup and drinks coffee.", ["The man holds a cup and drinks coffee"]),
    ("There is a plate with bread and butter.", ["There is a plate with bread and butter"]),
    ("Is there a dog? Yes.", []),
    ("The cat is not black.", ["The cat is not black"]),
])
def test_real_english(answer, claims):
    assert split_claims_rules(answer) == claims


# --------------------------------------------------------------------------------------------
# LLM path
# --------------------------------------------------------------------------------------------

def test_project_prompt_and_parsing():
    reply = "Here are the facts:\n- The dog is brown.\n* The dog holds a ball.\n1. There is a tree.\n\nNote: done"
    backend = ScriptedBackend([reply])
    config = ClaimsConfig()
    result = split_claims_llm(backend, "Describe the image.", "A brown dog holds a ball under a tree.", config)
    assert result == ClaimResult(["The dog is brown.", "The dog holds a ball.", "There is a tree."], None, [reply])
    call = backend.calls[0]
    prompt = call["messages"][0]["content"]
    assert call["messages"][0]["role"] == "user" and len(call["messages"]) == 1
    assert 'starting with "- "' in prompt and "self-contained" in prompt
    assert "Question: Describe the image.\nAnswer: A brown dog holds a ball under a tree.\n\nFacts:" in prompt
    assert (call["temperature"], call["top_p"], call["max_new_tokens"]) == (0.2, 0.9, 256)


def test_project_explicit_none_is_empty_not_failure():
    result = split_claims_llm(ScriptedBackend(["- NONE"]), "What is this?", "I am not sure.", ClaimsConfig())
    assert result.claims == [] and result.failure is None and result.raw == ["- NONE"]


def test_llama3_preset_prompt_verbatim_and_fixed_parsing():
    backend = ScriptedBackend(["### Facts:\n- The dog is brown.\nThe cat sleeps.\n- {Extracted fact 2}\n"])
    config = ClaimsConfig(preset="rlaifv-llama3")
    result = split_claims_llm(backend, "Describe the image.", "A brown dog and a sleeping cat.", config)
    # no first-character drop: "The cat sleeps." keeps its "T"; template echoes are dropped
    assert result.claims == ["The dog is brown.", "The cat sleeps."]
    expected = ("You are an expert in extracting facts from the given question-answer pair for an image. "
                "Your task is to extract and rewrite the facts mentioned in the question-answer pair into "
                "self-contained sentences. Exclude opinions or subjective statements.\n\nYou should present "
                "your result in the following format:\n### Facts:\n- {Extracted fact 1}\n- {Extracted fact 2}\n"
                "- ...\n\n### Question-answer pair:\nQuestion: Describe the image.\n"
                "Answer: A brown dog and a sleeping cat.")
    assert backend.calls[0]["messages"] == [{"role": "user", "content": expected}]
    assert split_prompt_llama3("Q", "A").endswith("\nQuestion: Q\nAnswer: A")


def _long_answer(sentences: int = 200) -> tuple[str, list[str]]:
    facts = [f"Object number {k} is red." for k in range(sentences)]  # 5 words each
    return " ".join(facts), facts


@pytest.mark.parametrize("preset", ["project", "rlaifv-llama3"])
def test_long_answer_is_chunked_and_no_claim_is_lost(preset):
    answer, facts = _long_answer()
    assert len(answer.split()) == 1000

    def echo(prompt: str) -> str:
        part = re.search(r"Answer[^:]*: (.*?)(\n\nFacts:|$)", prompt, re.S).group(1)
        return "### Facts:\n" + "\n".join(f"- {s}" for s in re.findall(r"[^.]+\.", part))

    backend = ScriptedBackend(echo)
    config = ClaimsConfig(preset=preset, chunk_words=250)
    result = split_claims_llm(backend, "Describe the image.", answer, config)
    assert result.failure is None
    assert [c.strip() for c in result.claims] == facts
    assert len(backend.calls) == 4
    for call in backend.calls:
        part = re.search(r"Answer[^:]*: (.*?)(\n\nFacts:|$)", call["messages"][0]["content"], re.S).group(1)
        assert len(part.split()) <= 250
        assert part.endswith(".")  # sentence-aligned


def test_chunk_answer_covers_every_word_even_for_a_run_on_sentence():
    answer = " ".join(f"w{k}" for k in range(620)) + ". Short end."
    chunks = chunk_answer(answer, 250)
    assert " ".join(chunks).split() == answer.split()
    assert all(len(c.split()) <= 250 for c in chunks)
    assert chunk_answer("short answer .", 250) == ["short answer ."]


def test_unparsable_then_ok_is_retried_with_another_seed():
    backend = ScriptedBackend(["I cannot help with that.", "- There is a dog."])
    result = split_claims_llm(backend, "What is this?", "A dog.", ClaimsConfig(), seed=3)
    assert result.claims == ["There is a dog."] and result.failure is None
    assert result.raw == ["I cannot help with that.", "- There is a dog."]
    assert backend.calls[0]["seed"] != backend.calls[1]["seed"]


def test_unparsable_twice_is_a_recorded_failure():
    backend = ScriptedBackend(["Sure!", "### Facts:"])
    result = split_claims_llm(backend, "What is this?", "A dog.", ClaimsConfig())
    assert result.claims == [] and result.failure and "2 attempts" in result.failure
    assert result.raw == ["Sure!", "### Facts:"]


def test_failure_in_one_chunk_fails_the_whole_answer():
    answer, _ = _long_answer(100)  # 500 words → 2 chunks
    replies = ["- a fact.", "nothing useful", "still nothing"]
    result = split_claims_llm(ScriptedBackend(replies), "Q", answer, ClaimsConfig(chunk_words=250))
    assert result.claims == [] and result.failure.startswith("chunk 2/2")
    assert len(result.raw) == 3


def test_seeds_are_reproducible():
    a, b = ScriptedBackend(["- x."]), ScriptedBackend(["- x."])
    split_claims_llm(a, "Q", "Answer one.", ClaimsConfig(), seed=5)
    split_claims_llm(b, "Q", "Answer one.", ClaimsConfig(), seed=5)
    assert a.calls[0]["seed"] == b.calls[0]["seed"]


def test_split_claims_dispatch():
    answers = [("describe the image .", "there is a red circle and a blue square ."),
               ("is there a red circle in the image ?", "no , there is no red circle .")]
    expected = [["there is a red circle", "there is a blue square"], ["there is no red circle"]]
    for spec in ("rules", None, ModelSpec(backend="rules", name_or_path="rules")):
        results = split_claims(answers, spec, ClaimsConfig())
        assert [r.claims for r in results] == expected
        assert all(r.failure is None and r.raw == [] for r in results)
    backend = ScriptedBackend(["- A.", "- B."])
    results = split_claims(answers, backend, ClaimsConfig())
    assert [r.claims for r in results] == [["A."], ["B."]]
    with pytest.raises(TypeError):
        split_claims(answers, 42, ClaimsConfig())
