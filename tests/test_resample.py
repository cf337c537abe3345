"""pairs.builder resample: the first rejected claim located, the prefix continued by a scripted policy,
the continuations judged by a scripted labeler, corrected pairs built, failures counted."""

import json

import pandas as pd
import pytest

from rlaifv_core.backends.base import Backend, YesNo
from rlaifv_core.config import ClaimsConfig, JudgeConfig, PairsConfig, SamplingConfig
from rlaifv_core.feedback.claims import split_claims_rules
from rlaifv_core.feedback.judge import score
from rlaifv_core.feedback.pairs import build_pairs
from rlaifv_core.feedback.resample import join_continuation, locate_prefix, resample_corrections


class ScriptedPolicy(Backend):
    """Continues a prefix with scripted sentences; logs every (question, prefix) it was asked."""

    fingerprint, identity = "scripted-policy", {"model": "scripted-policy"}

    def __init__(self, continuations, logprobs=None):
        self.continuations, self.logprobs, self.asked = continuations, logprobs or {}, []

    def generate(self, prompts, settings, seeds=None):
        self.asked.extend((p.question, p.prefix) for p in prompts)
        return [list(self.continuations[p.prefix])[:settings.n] for p in prompts]

    def answer_logprobs(self, prompts, answers):
        return [[self.logprobs.get(a, -10.0)] for a in answers]

    def yes_no(self, image, questions):  # pragma: no cover - not a labeler
        raise AssertionError


class WordLabeler(Backend):
    """Says no to any question naming a word that is not in the (imagined) image."""

    fingerprint, identity = "word-labeler", {"model": "word-labeler"}

    def __init__(self, absent):
        self.absent = absent

    def generate(self, prompts, settings, seeds=None):  # pragma: no cover
        raise AssertionError

    def yes_no(self, image, questions):
        return [YesNo(0.1, 0.9) if any(w in q.lower() for w in self.absent) else YesNo(0.9, 0.1) for q in questions]


ANSWERS = {  # free-form, multi-sentence; the cat and the lamp are hallucinated
    "p1": "The image shows a brown dog lying on a rug. There is a cat on the sofa. The walls are white.",
    "p2": "A brown dog is lying on the rug. A lamp stands in the corner.",
    "p3": "A brown dog is lying on the rug. The walls are white.",  # nothing rejected: no resampling
}


def _scored(labeler):
    rows = []
    for i, (prompt_id, answer) in enumerate(ANSWERS.items()):
        claims = split_claims_rules(answer)
        accepted = [p.accepted() for p in labeler.yes_no(None, claims)]
        rows.append({"prompt_id": prompt_id, "sample_idx": 0, "answer": answer, "claims": claims,
                     "questions": claims, "accepted": accepted, "p_yes": [0.9 if a else 0.1 for a in accepted],
                     "p_no": [0.1 if a else 0.9 for a in accepted], "n_claims": len(claims), "score": score(accepted),
                     "split_failed": False, "skipped": None})
    return pd.DataFrame(rows)


def _prompts():
    return pd.DataFrame([{"prompt_id": p, "question": "Describe the image.", "image": None, "image_path": "",
                          "task": "detailed description"} for p in ANSWERS])


def test_locate_prefix_cuts_at_the_clause_of_the_claim():
    answer = ANSWERS["p1"]
    assert locate_prefix(answer, "There is a cat on the sofa") == "The image shows a brown dog lying on a rug."
    # an LLM splitter's rewording is located by its content words
    assert locate_prefix(answer, "A cat is sitting on the sofa.") == "The image shows a brown dog lying on a rug."
    assert locate_prefix(ANSWERS["p2"], "There is a lamp in the corner") == "A brown dog is lying on the rug."
    # the shapes world's list grammar: cut after the list item before the rejected one
    assert locate_prefix("there is a red circle , a blue square and a green triangle .",
                         "there is a blue square") == "there is a red circle ,"
    assert locate_prefix("there is a red circle , a blue square and a green triangle .",
                         "there is a green triangle") == "there is a red circle , a blue square and"
    assert locate_prefix("A dog.", "There is a zebra") is None
    assert join_continuation("there is a red circle ,", "a blue circle .") == "there is a red circle , a blue circle ."


def test_resample_pairs_keep_the_prefix_and_replace_the_rejected_continuation():
    labeler = WordLabeler(absent={"cat", "lamp", "sofa", "chair"})
    p1 = "The image shows a brown dog lying on a rug."
    p2 = "A brown dog is lying on the rug."
    policy = ScriptedPolicy({
        # p1: one continuation still hallucinates; two are clean, the longer (more accepted claims) wins
        p1: ["There is a cat on a chair.", "The walls are white.", "The walls are white and the rug is red."],
        # p2: every continuation hallucinates: no correction found, counted (the first repeats the answer)
        p2: ["A lamp stands in the corner.", "A cat sits on a chair.", "There is a lamp."],
    }, logprobs={})
    scored = _scored(labeler)
    corrections, counts = resample_corrections(scored, _prompts(), policy, "rules", "rules", labeler, ClaimsConfig(),
                                               JudgeConfig(), SamplingConfig(), k=3, seed=0)
    assert sorted(policy.asked) == sorted([("Describe the image.", p1), ("Describe the image.", p2)])
    assert counts == {"answers_with_rejected_claim": 2, "not_located": 0, "continuations": 6, "corrected": 1,
                      "not_corrected": 1, "skipped_prompt_too_long": 0}
    fixed = corrections.set_index("prompt_id")
    assert fixed.at["p1", "correction"] == p1 + " The walls are white and the rug is red."
    assert fixed.at["p1", "rejected_claim"] == "There is a cat on the sofa"
    assert all(fixed.at["p1", "correction_accepted"]) and len(fixed.at["p1", "correction_claims"]) == 3
    assert pd.isna(fixed.at["p2", "correction"]) and fixed.at["p2", "tried"] == 3

    merged = scored.merge(corrections, on=["prompt_id", "sample_idx"], how="left")
    pairs, pair_counts = build_pairs(merged, _prompts(), PairsConfig(builder="resample", length_balance=False),
                                     policy_id="scripted-policy", labeler_id="word-labeler")
    assert len(pairs) == 1 and pair_counts["resample_prompts_without_correction"] == 2  # p2 (none found), p3 (none needed)
    pair = pairs.iloc[0]
    assert pair.pair_kind == "resample" and pair.rejected == ANSWERS["p1"]
    assert pair.chosen.startswith(pair.chosen_prefix) and pair.chosen_prefix == p1
    assert "cat" not in pair.chosen and pair.chosen_score == 0 and pair.rejected_score == -1

    # the second rejected side: the policy's most likely continuation that still fails (never the answer itself)
    assert fixed.at["p1", "failed_continuation"] == p1 + " There is a cat on a chair."
    assert fixed.at["p2", "failed_continuation"] == p2 + " A cat sits on a chair."
    assert fixed.at["p1", "failed_accepted"] == [True, False]
    both, _ = build_pairs(merged, _prompts(), PairsConfig(builder="resample", length_balance=False,
                                                          resample_failed_continuations=True),
                          policy_id="scripted-policy", labeler_id="word-labeler")
    assert list(both["pair_kind"]) == ["resample", "resample_continuation"]  # p2 has no correction: no pair
    extra = both.iloc[1]
    assert extra.chosen == pair.chosen and extra.rejected == p1 + " There is a cat on a chair."
    assert extra.rejected_score == -1 and extra.chosen_prefix == p1


def test_chunks_and_progress_change_nothing_but_report_each_phase():
    labeler = WordLabeler(absent={"cat", "lamp", "sofa", "chair"})
    policy = ScriptedPolicy({
        "The image shows a brown dog lying on a rug.": ["The walls are white.", "There is a cat.", "A cat sits."],
        "A brown dog is lying on the rug.": ["A lamp is on.", "A chair.", "The walls are white."]})
    args = (_prompts(), policy, "rules", "rules", labeler, ClaimsConfig(), JudgeConfig(), SamplingConfig())
    reported = []
    whole, counts = resample_corrections(_scored(labeler), *args, k=3)
    # answers in another order than the judge's (prompt order): each correction still gets its own verdicts
    chunked, chunked_counts = resample_corrections(
        _scored(labeler).iloc[::-1], *args, k=3, chunk=1,
        progress=lambda phase: lambda done, total: reported.append((phase, done, total)))
    pd.testing.assert_frame_equal(whole, chunked.iloc[::-1].reset_index(drop=True))
    assert whole.set_index("prompt_id").at["p2", "correction"] == "A brown dog is lying on the rug. The walls are white."
    assert counts == chunked_counts and counts["corrected"] == 2
    assert [r for r in reported if r[0] == "continuing"] == [("continuing", 1, 2), ("continuing", 2, 2)]
    assert reported[-1] == ("judging", 2, 2)  # the continuations of both prompts, judged per prompt


def test_ties_go_to_the_policy_likelihood():
    labeler = WordLabeler(absent={"cat", "lamp", "sofa"})
    p1 = "The image shows a brown dog lying on a rug."
    policy = ScriptedPolicy({p1: ["The walls are white.", "The rug is red."],
                             "A brown dog is lying on the rug.": ["The walls are white."]},
                            logprobs={p1 + " The rug is red.": -1.0})
    corrections, _ = resample_corrections(_scored(labeler), _prompts(), policy, "rules", "rules", labeler,
                                          ClaimsConfig(), JudgeConfig(), SamplingConfig(), k=2)
    assert corrections.set_index("prompt_id").at["p1", "correction"] == p1 + " The rug is red."


def test_resample_with_an_llm_splitter_that_rewords_the_claims():
    """The LLM splitter's claims are not substrings of the answer; the prefix is still found by their words."""
    from tests.fakes import ScriptedBackend

    reworded = {"There is a cat on the sofa.": "A cat is sitting on the sofa.", "The walls are white.": "The walls are white.",
                "The image shows a brown dog lying on a rug.": "A brown dog is lying on a rug.",
                "A lamp stands in the corner.": "A lamp is in the corner.", "The rug is red.": "The rug is red.",
                "A brown dog is lying on the rug.": "A brown dog is lying on the rug."}

    def facts(content):
        answer = content.split("Answer: ", 1)[1].split("\n\nFacts:")[0]
        sentences = [s.strip() + "." for s in answer.split(".") if s.strip()]
        return "\n".join("- " + reworded[s] for s in sentences)

    splitter, labeler = ScriptedBackend(facts), WordLabeler(absent={"cat", "lamp", "sofa"})
    p1 = "The image shows a brown dog lying on a rug."
    policy = ScriptedPolicy({p1: ["There is a cat on the sofa.", "The rug is red."],
                             "A brown dog is lying on the rug.": ["A lamp stands in the corner."]})
    scored = _scored(labeler)
    scored["claims"] = [[reworded[s.strip() + "."] for s in a.split(".") if s.strip()] for a in scored["answer"]]
    scored["accepted"] = [[p.accepted() for p in labeler.yes_no(None, c)] for c in scored["claims"]]
    corrections, counts = resample_corrections(scored, _prompts(), policy, splitter, "rules", labeler, ClaimsConfig(),
                                               JudgeConfig(), SamplingConfig(), k=2)
    fixed = corrections.set_index("prompt_id")
    assert fixed.at["p1", "prefix"] == p1 and fixed.at["p1", "correction"] == p1 + " The rug is red."
    assert fixed.at["p1", "correction_claims"] == ["A brown dog is lying on a rug.", "The rug is red."]
    assert counts["corrected"] == 1 and counts["not_corrected"] == 1 and len(splitter.calls) == 3


@pytest.mark.slow
def test_generate_flow_with_resample_on_the_shapes_world(prefect_server, tmp_path, monkeypatch):
    """The bootstrapped shapes policy continues the prefixes; the pairs are audited against the pixels."""
    from rlaifv_core.shapes.bootstrap import bootstrap_dir

    if not (bootstrap_dir() / "policy").is_dir():
        pytest.skip("the shapes bootstrap is not built (python -m rlaifv_core.shapes.bootstrap)")
    from flows.generate import generate
    from rlaifv_core.config import load_config
    from rlaifv_core.shapes.pair_audit import audit_pairs

    config = load_config("configs/shapes.yaml", [f"store.url={tmp_path / 'runs'}", "store.run_name=t",
                                                 "prompts.per_iteration=8", "sampling.n=4", "pairs.builder=resample",
                                                 "pairs.resample_k=4", "pairs.length_balance=false",
                                                 "iteration.retry_delay_s=0"])
    result = generate(config, iteration=1)
    counts = result.counts["resample"]
    corrections = pd.read_parquet(result.pairs.uri.replace("pairs.parquet", "resample.parquet"))
    assert len(corrections) == counts["answers_with_rejected_claim"] - counts["not_located"] > 0
    assert counts["corrected"] + counts["not_corrected"] == len(corrections)
    assert counts["continuations"] == 4 * len(corrections)
    pairs = pd.read_parquet(result.pairs.uri)
    assert len(pairs) >= 1 and set(pairs["pair_kind"]) == {"resample"}
    without = result.counts["pairs"]["resample_prompts_without_correction"]
    assert without == 8 - pairs["prompt_id"].nunique()
    for row in pairs.itertuples():
        assert row.chosen.startswith(row.chosen_prefix) and row.chosen != row.rejected
        assert row.rejected.startswith(row.chosen_prefix)  # the prefix is the original answer's start
        assert all(v["accepted"] for v in json.loads(row.chosen_verdicts))
    audit = audit_pairs(pairs)
    assert audit["pairs"] == len(pairs) and audit["chosen_more_hallucinations"] <= audit["chosen_fewer_hallucinations"]

    import rlaifv_core.feedback.resample

    def boom(*args, **kwargs):
        raise AssertionError("the resample stage ran although its inputs were unchanged")

    monkeypatch.setattr(rlaifv_core.feedback.resample, "resample_corrections", boom)
    assert generate(config, iteration=1) == result  # cached like the other stages


def test_the_hf_backend_continues_the_prefix_as_the_start_of_the_assistant_turn(tiny_backend, monkeypatch):
    from rlaifv_core.backends.base import GenerationSettings, VisualPrompt

    seen = []
    encode = tiny_backend.encode
    monkeypatch.setattr(tiny_backend, "encode", lambda texts, *a, **k: seen.extend(texts) or encode(texts, *a, **k))
    settings = GenerationSettings(n=2, max_new_tokens=4, seed=3)
    plain = tiny_backend.generate([VisualPrompt(None, "Describe the image.")], settings, seeds=[5])
    seen.clear()
    continued = tiny_backend.generate([VisualPrompt(None, "Describe the image.", "There is a dog ,")], settings, seeds=[5])
    rendered = tiny_backend.render("Describe the image.", with_image=False)
    assert seen and all(t == rendered + "There is a dog ," for t in seen)  # the rendered prompt + the prefix
    assert len(continued[0]) == 2 and len(plain[0]) == 2  # (a random tiny model's continuation is noise)
