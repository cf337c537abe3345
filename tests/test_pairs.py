"""Every rule of pair assembly, on hand-made scored answers with hand-computed results."""

import json

import datasets
import pandas as pd
import pytest

from rlaifv_core.backends.base import YesNo
from rlaifv_core.config import PairsConfig
from rlaifv_core.feedback.judge import score
from rlaifv_core import plugins
from rlaifv_core.feedback.pairs import PAIR_COLUMNS, audit_pairs, build_pairs, candidate_pairs, length_balance
from rlaifv_core.shapes.pair_builders import remove_claims, swap_claim


def _scored(prompt_id, answers_and_verdicts):
    rows = []
    for i, (answer, accepted) in enumerate(answers_and_verdicts):
        claims = [f"there is {item}" for item in answer.removeprefix("there is ").rstrip(" .").replace(" and ", " , ").split(" , ")] if accepted else []
        rows.append({"prompt_id": prompt_id, "sample_idx": i, "answer": answer, "claims": claims,
                     "questions": [f"is {c} ?" for c in claims], "accepted": accepted,
                     "p_yes": [0.9 if a else 0.1 for a in accepted], "p_no": [0.1 if a else 0.9 for a in accepted],
                     "n_claims": len(accepted), "score": score(accepted), "split_failed": False})
    return pd.DataFrame(rows)


def _prompts(*ids):
    return pd.DataFrame([{"prompt_id": p, "question": "describe the image .", "image": b"png", "image_path": "",
                          "task": "detailed description", "ds_question_id": p} for p in ids])


def test_score_is_minus_rejected_and_tie_is_rejected():
    assert score([True, False, False]) == -2 and score([]) == 0
    assert YesNo(0.4, 0.4).accepted() is False  # tie → rejected
    assert YesNo(0.41, 0.4).accepted() is True
    assert YesNo(0.0, 0.0).accepted() is False
    assert YesNo(0.6, 0.3).accepted(threshold=0.7) is False  # 0.667 ≤ 0.7


def test_gap_filter_and_direction():
    frame = _scored("p", [("there is a red circle .", [True]), ("there is a blue square .", [False]),
                          ("there is a red circle and a blue square .", [True, False]),
                          ("there is a red circle , a blue square and a green circle .", [True, False, False])])
    # scores: 0, -1, -1, -2 → gap ≥ 1 pairs: (0,1) (0,2) (0,3) (1,3) (2,3); (1,2) gap 0 dropped
    pairs = candidate_pairs(frame, min_gap=1)
    assert sorted(pairs) == sorted([(0, 1), (0, 2), (0, 3), (1, 3), (2, 3)])
    assert candidate_pairs(frame, min_gap=2) == [(0, 3)]


def test_per_prompt_cap_is_seeded_and_drops_identical():
    frame = _scored("p", [("there is a red circle .", [True]), ("there is a red circle .", [False]),
                          ("there is a blue square .", [False]), ("there is a green circle .", [False])])
    config = PairsConfig(builder="paper", per_prompt=2, length_balance=False, seed=3)
    first, counts = build_pairs(frame, _prompts("p"), config, policy_id="pol", labeler_id="lab")
    again, _ = build_pairs(frame, _prompts("p"), config, policy_id="pol", labeler_id="lab")
    assert counts["candidate_pairs"] == 3 and counts["dropped_identical"] == 1
    assert counts["dropped_per_prompt_cap"] == 0 and len(first) == 2
    assert first[["chosen", "rejected"]].equals(again[["chosen", "rejected"]])
    frame2 = _scored("p", [("there is a red circle .", [True])] + [(f"there is a {c} square .", [False]) for c in
                                                                    ("blue", "green", "yellow", "red")])
    capped, counts2 = build_pairs(frame2, _prompts("p"), config, policy_id="pol", labeler_id="lab")
    assert len(capped) == 2 and counts2["dropped_per_prompt_cap"] == 2
    other, _ = build_pairs(frame2, _prompts("p"), config.model_copy(update={"seed": 99}), policy_id="pol", labeler_id="lab")
    assert len(other) == 2


def test_length_balance_hand_computed():
    # word counts (chosen, rejected): (2, 10), (9, 10), (10, 10)
    # r=0.00 keeps pairs with (rej-ch)/rej ≤ 0 → only (10,10): |10-10|/10 = 0 → best, first r on ties
    keep, ratio = length_balance([2, 9, 10], [10, 10, 10])
    assert keep == [False, False, True] and ratio == 0.0
    # (4, 5): ratio 0.2; (6, 5): −0.2 → r=0 keeps (6,5): |6−5|/5 = 0.2; r=0.2 keeps both: |5−5|/5 = 0 → r=0.2
    keep, ratio = length_balance([4, 6], [5, 5])
    assert keep == [True, True] and ratio == pytest.approx(0.2)
    # empty rejected answer: no division by zero
    keep, _ = length_balance([3], [0])
    assert keep == [True]


def test_zero_claim_answers_are_scored_but_never_chosen():
    frame = _scored("p", [("there is nothing .", []), ("there is a red circle .", [False]),
                          ("there is a blue square .", [True])])
    assert list(frame["score"]) == [0, -1, 0] and list(frame["n_claims"]) == [0, 1, 1]
    pairs, counts = build_pairs(frame, _prompts("p"), PairsConfig(length_balance=False), policy_id="a", labeler_id="b")
    # score-gap pairs: nothing ≻ red circle (dropped: says nothing), blue square ≻ red circle (kept)
    assert [(p.chosen, p.rejected) for p in pairs.itertuples()] == [("there is a blue square .", "there is a red circle .")]
    assert counts["skipped_zero_claim_chosen"] == 1 and counts["pairs"] == 1
    best, counts = build_pairs(frame.iloc[:2], _prompts("p"), PairsConfig(builder="best_of_n", length_balance=False),
                               policy_id="a", labeler_id="b")
    assert best.empty and counts["skipped_zero_claim_chosen"] == 1  # the control's top answer said nothing


def test_minimal_edit_and_omission_anchor():
    assert remove_claims("there is a red circle , a blue square and a green circle .", ["there is a blue square"]) == \
        "there is a red circle and a green circle ."
    assert remove_claims("yes , there is a red circle .", ["there is a red circle"]) is None
    assert remove_claims("there is a red circle .", ["there is a cat"]) is None
    frame = _scored("p", [("there is a red circle and a blue square .", [True, False]),
                          ("there is a red circle , a green circle and a yellow square .", [True, True, True])])
    config = PairsConfig(builder="minimal_edit_anchor", anchor="omission", length_balance=False, anchors_per_prompt=1,
                         seed=0)
    pairs, counts = build_pairs(frame, _prompts("p"), config, policy_id="a", labeler_id="b")
    kinds = dict(zip(pairs["pair_kind"], zip(pairs["chosen"], pairs["rejected"])))
    assert kinds["minimal_edit"] == ("there is a red circle .", "there is a red circle and a blue square .")
    chosen, rejected = kinds["omission_anchor"]
    assert chosen == "there is a red circle , a green circle and a yellow square ."
    assert len(rejected.split(",")) + rejected.count(" and ") == 2  # one object fewer
    assert counts["omission_anchors"] == 1


def test_swap_anchor_replaces_a_true_object_with_a_rejected_one():
    assert swap_claim("there is a red circle , a blue square and a green circle .", "there is a blue square",
                      "there is a blue circle") == "there is a red circle , a blue circle and a green circle ."
    assert swap_claim("yes , there is a red circle .", "there is a red circle", "there is a red square") == \
        "yes , there is a red square ."
    assert swap_claim("there is a red circle .", "there is a cat", "there is a dog") is None
    assert swap_claim("there is a red circle and a dog .", "there is a red circle", "there is a dog") is None
    frame = _scored("p", [("there is a red circle and a blue square .", [True, False]),
                          ("there is a red circle , a green circle and a yellow square .", [True, True, True])])
    config = PairsConfig(builder="minimal_edit_anchor", anchor="swap", length_balance=False, seed=0)
    pairs, counts = build_pairs(frame, _prompts("p"), config, policy_id="a", labeler_id="b")
    anchor = pairs[pairs["pair_kind"] == "swap_anchor"].iloc[0]
    assert anchor["chosen"] == "there is a red circle , a green circle and a yellow square ."
    rejected_items = anchor["rejected"].removeprefix("there is ").rstrip(" .").replace(" and ", " , ").split(" , ")
    assert len(rejected_items) == 3 and "a blue square" in rejected_items  # same length, one object swapped
    assert sorted(set(anchor["chosen_claims"]) - set(anchor["rejected_claims"])) != []
    assert "there is a blue square" in list(anchor["rejected_claims"])
    assert (anchor["chosen_score"], anchor["rejected_score"]) == (0, -1)
    assert [v["accepted"] for v in json.loads(anchor["rejected_verdicts"])].count(False) == 1
    assert counts["swap_anchors"] == 1
    # omission_swap (the default): one object fewer *and* one of the rest replaced by the rejected object
    pairs, counts = build_pairs(frame, _prompts("p"), config.model_copy(update={"anchor": "omission_swap"}),
                                policy_id="a", labeler_id="b")
    anchor = pairs[pairs["pair_kind"] == "omission_swap_anchor"].iloc[0]
    assert anchor["chosen"] == "there is a red circle , a green circle and a yellow square ."
    rejected_items = anchor["rejected"].removeprefix("there is ").rstrip(" .").split(" and ")
    chosen_items = {"a red circle", "a green circle", "a yellow square"}
    assert len(rejected_items) == 2 and "a blue square" in rejected_items
    assert len(chosen_items & set(rejected_items)) == 1  # one true object kept, one dropped, one swapped
    assert len(anchor["rejected_claims"]) == 2 and "there is a blue square" in list(anchor["rejected_claims"])
    assert (anchor["chosen_score"], anchor["rejected_score"]) == (0, -1)
    assert counts["omission_swap_anchors"] == 1
    # no rejected object anywhere in the prompt's answers: no swap anchor, and it is counted
    clean_only = _scored("q", [("there is a red circle and a green circle .", [True, True])])
    pairs, counts = build_pairs(clean_only, _prompts("q"), config, policy_id="a", labeler_id="b")
    assert pairs.empty and counts["no_swap_anchor_without_rejected_object"] == 1


def test_parquet_schema_loads_with_datasets(tmp_path):
    frame = _scored("p", [("there is a red circle .", [True]), ("there is a blue square .", [False])])
    pairs, _ = build_pairs(frame, _prompts("p"), PairsConfig(length_balance=False), policy_id="a", labeler_id="b")
    path = tmp_path / "pairs.parquet"
    pairs.to_parquet(path)
    loaded = datasets.load_dataset("parquet", data_files=str(path), split="train")
    assert set(PAIR_COLUMNS) <= set(loaded.column_names)
    row = loaded[0]
    assert row["image"]["bytes"] == b"png" and json.loads(row["origin_split"])["feedback"] == "b"
    assert row["chosen"] == "there is a red circle ." and row["idx"]


def test_pairs_are_audited_by_the_plugin_that_knows_their_origin(monkeypatch):
    seen = []

    def audit(frame):
        seen.append(len(frame))
        return {"chosen_fewer_hallucinations": 2 / 3}

    monkeypatch.setitem(plugins.pair_audits._items, "counted-world", audit)
    frame = pd.DataFrame({"origin_dataset": ["counted-world"] * 3})
    assert audit_pairs(frame) == {"audit_chosen_fewer_hallucinations": 0.6667} and seen == [3]
    assert audit_pairs(pd.DataFrame({"origin_dataset": ["nobody-knows"]})) == {}  # no plug-in: no audit, no error
    assert audit_pairs(pd.DataFrame({"origin_dataset": ["counted-world", "nobody-knows"]})) == {}  # mixed origins
