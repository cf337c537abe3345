"""Parity of `eval.protocol: rlaifv` with the original RLAIF-V evaluation rules, beside `project`, on hand-made inputs.

Every expected number is worked out by hand from the original's published rules (eval/eval_gpt_obj_halbench.py,
eval/eval_gpt_mmhal.py + summarize_gpt_mmhal_review.py, eval/eval_RefoMB_p0.py + eval_hallucination.py) and
written here; the per-answer mention lists are the hand work, the aggregates their sums.

Why the two protocols differ on these inputs:
- Object HalBench, free text: the original counts every occurrence ("The dog runs. The dog barks" = two dog
  mentions; "a cup, a cup and another cup" = three; "a cat and a kitten" = two cats) and every synonym of a line
  ("a girl and a boy" = two persons), knows no negation ("no cat" is a cat mention, hallucinated when absent) and
  only the classes of its synonym file (here a small stand-in: "sink", "truck" are not in it); the project counts
  one mention per class and answer, skips negated mentions and knows its own larger table.
- Object HalBench, judge lists: the original de-duplicates the refined strings, so two synonyms of one class
  count twice ("mug" + "cup"; "kitten" + "cat"), drops compounds its synonyms do not list ("park bench") and skips
  answers of <= 3 words (still counted in CHAIRs's and recall's denominators); the project de-duplicates by
  class, maps "park bench" to its head noun and judges short answers.
- MMHal: the original's parser takes "rating: s" as a substring (so "Rating: 60" is 6, "rating:5" and
  "Rating: **4**" are nothing) and scores nothing-or-several as 0; the project's requires one unique rating in
  0..6 (spacing and bold allowed) and leaves unparsable replies out of the means.
- RefoMB: the original asks once with the reference as Model A and judges trustworthiness from that review's
  text; the project pools both orders and judges trustworthiness against the description.
"""

from __future__ import annotations

import json
import warnings
from fractions import Fraction
from pathlib import Path

import pytest

from rlaifv_core.evals.chair_rlaifv import OriginalChair, ensure_wordnet, parse_object_list_original
from rlaifv_core.evals.judge import JudgeClient
from rlaifv_core.evals.mmhal import QUESTION_TYPES, evaluate_mmhal, parse_rating, parse_rating_rlaifv
from rlaifv_core.evals.object_halbench import run_object_halbench
from rlaifv_core.evals.original import read_template
from rlaifv_core.evals.refomb import evaluate_refomb
from rlaifv_core.evals.refomb_rlaifv import evaluate_refomb_rlaifv
from tests.test_evals_benchmarks import ScriptedChat

pytestmark = pytest.mark.timeout(300)

try:
    ensure_wordnet()
except RuntimeError as exc:  # .ci/run installs wordnet-base + wordnet-sense-index; this only when that failed
    pytest.skip(f"protocol rlaifv needs WordNet: {exc}", allow_module_level=True)

# A stand-in synonyms file in synonyms_refine.txt's format (not the original's list).
SYNONYMS = """person, girl, boy, man, woman, men, women, people, child, children
dog, puppy
cat, kitten
toilet
chair, seat, stool
dining table, table
teddy bear
bear
hot dog
bench
elephant
car, taxi
bus
cup, mug
couch, sofa
bed
motorcycle, motorbike, motor bike
cell phone, phone
"""

# image id -> (instance categories, captions); GT is the same under both protocols here.
IMAGES = {
    1: (["person", "dog"], ["A man walks a dog."]),
    2: (["toilet"], ["A white toilet in a bathroom."]),
    3: (["elephant"], ["Two elephants in a field."]),
    4: (["teddy bear", "bed"], ["A teddy bear on a bed."]),
    5: (["hot dog", "cup"], ["A hot dog and a cup."]),
    6: (["car", "bus"], ["Cars and a bus on a street."]),
    7: (["cat", "couch"], ["A cat on a sofa."]),
    8: (["dining table", "chair"], ["A table with chairs."]),
    9: (["motorcycle", "person"], ["A woman rides a motorbike."]),
    10: (["cell phone", "person"], ["A boy holds a phone."]),
}
GT = {1: {"person", "dog"}, 2: {"toilet"}, 3: {"elephant"}, 4: {"teddy bear", "bed"}, 5: {"hot dog", "cup"},
      6: {"car", "bus"}, 7: {"cat", "couch"}, 8: {"dining table", "chair"}, 9: {"motorcycle", "person"},
      10: {"cell phone", "person"}}

# (image, answer, rlaifv free-text mention classes, project mention classes) — 40 answers.
ANSWERS = [
    (1, "A man walks two dogs in the park.", ["person", "dog"], ["person", "dog"]),
    (1, "The dog runs. The dog barks at a cat.", ["dog", "dog", "cat"], ["dog", "cat"]),  # repeated
    (1, "A dog.", ["dog"], ["dog"]),  # short
    (1, "There is no cat near the men.", ["cat", "person"], []),  # negation; "men" stays "men"
    (2, "A toilet with the toilet seat up.", ["toilet", "toilet"], ["toilet"]),  # double word
    (2, "A toilet next to a seat.", ["toilet"], ["toilet"]),  # "seat" dropped next to a toilet
    (2, "A sink and a toilet.", ["toilet"], ["sink", "toilet"]),  # sink: not in the stand-in list
    (2, "Toilet.", ["toilet"], ["toilet"]),
    (3, "A baby elephant and an adult elephant.", ["elephant", "elephant"], ["elephant"]),
    (3, "Three elephants drink water.", ["elephant"], ["elephant"]),  # plural
    (3, "An elephant and a bear.", ["elephant", "bear"], ["elephant", "bear"]),
    (3, "Elephants near a bench and people.", ["elephant", "bench", "person"], ["elephant", "bench", "person"]),
    (4, "A teddy bear sits on the bed.", ["teddy bear", "bed"], ["teddy bear", "bed"]),
    (4, "Two teddy bears and a bear.", ["teddy bear", "bear"], ["teddy bear", "bear"]),
    (4, "A bed with no teddy bear.", ["bed", "teddy bear"], ["bed"]),
    (4, "A bed, a dog and a cat.", ["bed", "dog", "cat"], ["bed", "dog", "cat"]),
    (5, "Two hot dogs and a mug.", ["hot dog", "cup"], ["hot dog", "cup"]),
    (5, "A hot dog next to a dog.", ["hot dog", "dog"], ["hot dog", "dog"]),
    (5, "A cup, a cup and another cup.", ["cup", "cup", "cup"], ["cup"]),
    (5, "Hot dogs.", ["hot dog"], ["hot dog"]),
    (6, "Cars and a bus on the street.", ["car", "bus"], ["car", "bus"]),
    (6, "A taxi passes a bus.", ["car", "bus"], ["car", "bus"]),
    (6, "A bus, a truck and a motor bike.", ["bus", "motorcycle"], ["bus", "truck", "motorcycle"]),
    (6, "There are no buses, only cars.", ["bus", "car"], ["car"]),
    (7, "A kitten sleeps on a sofa.", ["cat", "couch"], ["cat", "couch"]),
    (7, "A cat and a kitten on the couch.", ["cat", "cat", "couch"], ["cat", "couch"]),
    (7, "A cat on a chair near a dog.", ["cat", "chair", "dog"], ["cat", "chair", "dog"]),
    (7, "Cats.", ["cat"], ["cat"]),
    (8, "A dining table with four chairs.", ["dining table", "chair"], ["dining table", "chair"]),
    (8, "A table and a stool.", ["dining table", "chair"], ["dining table", "chair"]),
    (8, "A table, a seat and a cup.", ["dining table", "chair", "cup"], ["dining table", "cup"]),
    (8, "Chairs around a table near a cat.", ["chair", "dining table", "cat"], ["chair", "dining table", "cat"]),
    (9, "A woman rides a motorbike.", ["person", "motorcycle"], ["person", "motorcycle"]),
    (9, "Two women on motorbikes.", ["person", "motorcycle"], ["person", "motorcycle"]),
    (9, "A man on a motorcycle and a child.", ["person", "motorcycle", "person"], ["person", "motorcycle"]),
    (9, "A woman, a car and a dog.", ["person", "car", "dog"], ["person", "car", "dog"]),
    (10, "A boy holds a cell phone.", ["person", "cell phone"], ["person", "cell phone"]),
    (10, "Children with phones.", ["person", "cell phone"], ["person", "cell phone"]),
    (10, "A girl and a boy share a phone.", ["person", "person", "cell phone"], ["person", "cell phone"]),
    (10, "A phone on a bed.", ["cell phone", "bed"], ["cell phone", "bed"]),
]


@pytest.fixture()
def coco(tmp_path):
    cat_ids = {name: k + 1 for k, name in enumerate(sorted({c for cats, _ in IMAGES.values() for c in cats}))}
    instances = {"images": [{"id": i} for i in IMAGES], "categories": [{"id": v, "name": k} for k, v in cat_ids.items()],
                 "annotations": [{"id": 10 * i + k, "image_id": i, "category_id": cat_ids[c]}
                                 for i, (cats, _) in IMAGES.items() for k, c in enumerate(cats)]}
    captions = {"images": [{"id": i} for i in IMAGES],
                "annotations": [{"id": 10 * i + k, "image_id": i, "caption": c}
                                for i, (_, caps) in IMAGES.items() for k, c in enumerate(caps)]}
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    (tmp_path / "captions.json").write_text(json.dumps(captions))
    (tmp_path / "synonyms_refine.txt").write_text(SYNONYMS)
    rows = [{"question_id": q, "image_id": image, "question": f"Describe image {image} ({q})."}
            for q, (image, *_rest) in enumerate(ANSWERS)]
    bench = tmp_path / "objhal.jsonl"
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    answers = [{"question_id": q, "image_id": image, "text": text} for q, (image, text, *_r) in enumerate(ANSWERS)]
    return tmp_path, bench, answers


class _Original:  # the eval.data keys protocol rlaifv reads
    def __init__(self, root: Path, **extra):
        self.rlaifv_repo = None
        self.coco_synonyms = str(root / "synonyms_refine.txt")
        self.objhal_extraction_prompt = extra.get("objhal_extraction_prompt")


def _classes(record):
    return [[m["class"] for m in item["mentions"]] for item in record["items"]]


def test_ground_truth_is_the_same_under_both_protocols(coco):
    root, *_ = coco
    chair = OriginalChair.from_file(root / "synonyms_refine.txt")
    assert chair.ground_truth([root / "instances.json"], [root / "captions.json"], IMAGES) == GT


def test_object_halbench_free_text_parity(coco):
    root, bench, answers = coco
    args = (bench, root / "instances.json", root / "captions.json")
    rlaifv = run_object_halbench(*args, answers=answers, protocol="rlaifv", original=_Original(root))
    project = run_object_halbench(*args, answers=answers)
    assert _classes(rlaifv) == [a[2] for a in ANSWERS]
    assert _classes(project) == [a[3] for a in ANSWERS]
    r, p = rlaifv["metrics"], project["metrics"]
    # rlaifv: 13 of 40 answers hallucinate, all 40 name an object; 17 of 84 mentions hallucinated; recall 59/72
    assert (r["chair_s"], r["chair_s_refine"], r["chair_i"], r["recall"]) == pytest.approx(
        (13 / 40, 13 / 40, 17 / 84, 59 / 72))
    # project: 13 of 40 hallucinate, 39 name an object ("no cat near the men" names none); 18 of 73; 55/72
    assert (p["chair_s"], p["chair_s_refine"], p["chair_i"], p["recall"]) == pytest.approx(
        (13 / 40, 13 / 39, 18 / 73, 55 / 72))
    assert rlaifv["protocol"] == "rlaifv" and rlaifv["scoring"]["synonyms"].endswith("synonyms_refine.txt")
    assert project["scoring"]["dedupe"] == "by class"


# judge lists for 12 of the answers (index into ANSWERS) -> (reply, rlaifv classes, project classes)
JUDGED = {
    0: ('["man", "dogs", "dog", "park"]', ["person", "dog"], ["person", "dog"]),
    4: ('["toilet", "toilet seat"]', ["toilet"], ["toilet"]),
    8: ('["baby elephant", "adult elephant"]', ["elephant"], ["elephant"]),
    12: ('["teddy bear", "bed", "wooden bench"]', ["teddy bear", "bed", "bench"], ["teddy bear", "bed", "bench"]),
    16: ('["hot dogs", "mug", "cup"]', ["hot dog", "cup", "cup"], ["hot dog", "cup"]),
    20: ('["cars", "bus", "street"]', ["car", "bus"], ["car", "bus"]),
    24: ('["kitten", "sofa", "cat"]', ["cat", "couch", "cat"], ["cat", "couch"]),
    28: ('["dining table", "chairs", "park bench"]', ["dining table", "chair"], ["dining table", "chair", "bench"]),
    32: ('["woman", "motorbike"]', ["person", "motorcycle"], ["person", "motorcycle"]),
    36: ('["boy", "cell phone", "red car"]', ["person", "cell phone", "car"], ["person", "cell phone", "car"]),
    2: ('["dog"]', [], ["dog"]),  # "A dog." (2 words): the original skips the judge
    27: ('["cats"]', [], ["cat"]),  # "Cats." (1 word)
}


def test_object_halbench_judge_path_parity(coco, tmp_path):
    root, bench, answers = coco
    keep = sorted(JUDGED)
    rows = [json.loads(line) for line in bench.read_text().splitlines()]
    sub = tmp_path / "sub.jsonl"
    sub.write_text("".join(json.dumps(rows[q]) + "\n" for q in keep))
    by_text = {ANSWERS[q][1]: JUDGED[q][0] for q in keep}
    template = tmp_path / "extraction.txt"
    template.write_text("Extract the objects.\nQuestion: {question}\nAnswer: {answer}\nReply with a JSON list.")

    def judge(original_prompt: bool):
        fake = ScriptedChat(lambda text, seed: next(v for k, v in by_text.items() if f"{k}\n" in text + "\n"))
        return fake, JudgeClient(fake, max_attempts=2)

    fake_r, client_r = judge(True)
    args = (sub, root / "instances.json", root / "captions.json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rlaifv = run_object_halbench(*args, answers=[answers[q] for q in keep], judge=client_r, protocol="rlaifv",
                                     original=_Original(root, objhal_extraction_prompt=str(template)))
    fake_p, client_p = judge(False)
    project = run_object_halbench(*args, answers=[answers[q] for q in keep], judge=client_p)
    assert _classes(rlaifv) == [JUDGED[q][1] for q in keep]
    assert _classes(project) == [JUDGED[q][2] for q in keep]
    assert fake_r.calls == 10 and fake_p.calls == 12  # the two short answers never reach the original's judge
    assert fake_r.seen[0][0]["content"].startswith("Extract the objects.\nQuestion: Describe image 1")
    r, p = rlaifv["metrics"], project["metrics"]
    # rlaifv: 12 answers, hallucinating: teddy (bench), boy (car) = 2; 10 name an object; mentions
    # 2+1+1+3+3+2+3+2+2+3 = 22, hallucinated 2; recall: correct classes 2+1+1+2+2+2+2+2+2+2+0+0 = 18 of GT 22
    assert (r["chair_s"], r["chair_s_refine"], r["chair_i"], r["recall"]) == pytest.approx(
        (2 / 12, 2 / 10, 2 / 22, 18 / 22))
    # project: + the park bench (answer 28) hallucinating = 3 of 12, all 12 name one; mentions
    # 2+1+1+3+2+2+2+3+2+3+1+1 = 23, hallucinated 3; correct 18 + dog + cat = 20 of 22
    assert (p["chair_s"], p["chair_s_refine"], p["chair_i"], p["recall"]) == pytest.approx(
        (3 / 12, 3 / 12, 3 / 23, 20 / 22))
    scoring = rlaifv["scoring"]
    assert scoring["prompt_sha256"] == read_template(template, "objhal_extraction_prompt").sha256
    assert scoring["parser"].startswith("rlaifv") and scoring["skip_short_words"] == 3
    assert any("gpt-3.5-turbo-0613 is retired" in str(w.message) for w in caught)
    assert "approximately" in scoring["comparability"]


def test_original_object_list_parser():
    assert parse_object_list_original('```json\n["dog", "cat"]\n```') == ["dog", "cat"]
    assert parse_object_list_original('Objects:\n["dog", "cat"]') == ["dog", "cat"]
    assert parse_object_list_original("[]") is None and parse_object_list_original("()") is None  # asked again
    assert parse_object_list_original('["dog",\n"cat"]') is None  # the last line alone is no JSON


# MMHal: 24 judge replies (3 per question type) -> (strict, original)
MMHAL_REPLIES = [
    ("Good answer. Rating: 5", 5, 5), ("rating:5", 5, 0), ("Rating: **4**", 4, 0), ("Rating: 2. So: Rating: 2", 2, 2),
    ("Rating: 3, then Rating: 5", None, 0), ("no rating here", None, 0), ("Rating: 60", None, 6), ("Rating: 0", 0, 0),
    ("rating: 6, very informative", 6, 6), ("Rating: 7", None, 0), ("RATING: 1", 1, 1), ("Rating: 4", 4, 4),
    ("Explanation ... Rating: 3", 3, 3), ("Rating: 2", 2, 2), ("", None, 0), ("Rating - 5", None, 0),
    ("Rating: 1", 1, 1), ("Rating: 6", 6, 6), ("Rating: 5", 5, 5), ("Rating:\t3", 3, 0),
    ("Rating: 0", 0, 0), ("Rating: 4", 4, 4), ("Rating: 2", 2, 2), ("Rating: 5\nRating: 1", None, 0),
]


def test_mmhal_parsers_by_hand():
    for reply, strict, original in MMHAL_REPLIES:
        assert (parse_rating(reply), parse_rating_rlaifv(reply)) == (strict, original), reply


def test_mmhal_parity(tmp_path):
    items = [{"question_type": QUESTION_TYPES[i % 8], "image_content": ["Dog"], "question": f"Q{i}?",
              "gt_answer": "A dog."} for i in range(24)]
    answers = [f"answer number {i}." for i in range(24)]
    replies = {a: r for a, (r, _, _) in zip(answers, MMHAL_REPLIES)}
    script = lambda text, seed: next(v for k, v in replies.items() if k in text)  # noqa: E731
    template = tmp_path / "mmhal.txt"
    template.write_text("Judge.\n### Image Contents\n{}\n### Question\n{}\n### Answer\n{}\n### Response\n{}\n")
    fake_r = ScriptedChat(script)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rlaifv = evaluate_mmhal(items, answers, JudgeClient(fake_r, max_attempts=3), protocol="rlaifv",
                                template=read_template(template, "mmhal_judge_prompt"))
    fake_p = ScriptedChat(script)
    project = evaluate_mmhal(items, answers, JudgeClient(fake_p, max_attempts=3))
    assert fake_r.calls == 24  # the original never re-asks for an unparsable rating
    assert fake_p.calls == 24 + 2 * 7  # 7 strict-unparsable replies, each asked 3 times
    # original: sum of the 24 ratings 5+0+0+2+0+0+6+0+6+0+1+4+3+2+0+0+1+6+5+0+0+4+2+0 = 47; >= 3: 5, 6, 6, 4,
    # 3, 6, 5, 4, so below 3: 16 of 24;
    # informativeness: (2+0+0+2+0+0+3+0+3+0+1+1+0+2+0+0+1+3+2+0+0+1+2+0) = 23 -> 23/24/3*100
    r = rlaifv["metrics"]
    assert (r["score"], r["hallucination_rate"], r["informativeness"]) == pytest.approx((47 / 24, 16 / 24, 2300 / 72))
    # strict: 17 parsed (7 unparsable left out), 5+5+4+2+0+6+1+4+3+2+1+6+5+3+0+4+2 = 53
    p = project["metrics"]
    assert project["n_unparsed"] == 7 and project["n"] == 17
    # below 3 among the 17: 2, 0, 1, 2, 1, 0, 2 = 7; informativeness 2+2+1+2+0+3+1+1+0+2+1+3+2+0+0+1+2 = 23
    assert (p["score"], p["hallucination_rate"], p["informativeness"]) == pytest.approx((53 / 17, 7 / 17, 2300 / 51))
    # each reports the other parser's aggregates on the same replies
    assert r["score_strict_parser"] == pytest.approx(53 / 17) and p["score_rlaifv_parser"] == pytest.approx(47 / 24)
    assert rlaifv["scoring"]["prompt_sha256"] == read_template(template, "mmhal_judge_prompt").sha256
    assert rlaifv["scoring"]["parser"].startswith("rlaifv") and project["scoring"]["parser"].startswith("strict")
    assert "Q0?" in fake_r.seen[0][0]["content"] and fake_r.seen[0][0]["content"].startswith("Judge.")


# RefoMB: 10 items -> (verdict with the reference as A, verdict with the reference as B, review verdict of the
# first reply, project trust verdict with the reference as A, with the reference as B)
REFOMB = [("B", "A", "B", "B", "A"), ("A", "A", "A", "A", "A"), ("C", "C", "C", "C", "C"), ("A", "B", "C", "A", "B"),
          ("B", "B", "B", "B", "A"), ("A", "B", "A", "C", "C"), ("B", "A", "C", "B", "A"), ("C", "A", "B", "C", "A"),
          ("A", "C", "A", "A", "B"), ("B", "A", "B", "B", "A")]


def test_refomb_parity(tmp_path):
    items = [{"id": i, "type": "t", "question": f"Q{i}?", "description": f"desc {i}"} for i in range(10)]
    refs = [f"reference answer {i}" for i in range(10)]
    answers = [f"model answer {i}" for i in range(10)]
    judge_tpl = tmp_path / "refomb.txt"
    judge_tpl.write_text("Compare.\n[Desc]\n{description}\n[Q]\n{question}\n[A]\n{answer_a}\n[B]\n{answer_b}\n")
    review_tpl = tmp_path / "review.txt"
    review_tpl.write_text("Which has fewer hallucinations?\n[Review]\n{review}\n")

    def script(text, seed):
        i = int(text.split("[Q]\nQ")[1].split("?")[0]) if "[Q]\nQ" in text else None
        if "Which has fewer hallucinations?" in text:
            k = int(text.split("review of item ")[1].split(":")[0])
            return f"[[{REFOMB[k][2]}]]"
        if i is not None:  # the user's rlaifv template
            first = text.index("[A]\n") < text.index(f"reference answer {i}") < text.index("[B]\n")
            return f"review of item {i}: [[{REFOMB[i][0 if first else 1]}]]"
        i = int(text.split("[Question]\nQ")[1].split("?")[0])  # the project's prompts
        first = text.index(f"reference answer {i}") < text.index(f"model answer {i}")
        if "Ignore helpfulness" in text:  # the project's trustworthiness prompt
            return f"[[{REFOMB[i][3 if first else 4]}]]"
        return f"[[{REFOMB[i][0 if first else 1]}]]"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rlaifv = evaluate_refomb_rlaifv(items, refs, answers, JudgeClient(ScriptedChat(script)),
                                        read_template(judge_tpl, "refomb_judge_prompt"),
                                        read_template(review_tpl, "refomb_review_prompt"))
    project = evaluate_refomb(items, refs, answers, JudgeClient(ScriptedChat(script)), repeats=1)
    r, p = rlaifv["metrics"], project["metrics"]
    # reference first (model = B): B B B B = wins at items 0, 4, 6, 9; ties 2, 7 -> (4 + 1) / 10
    assert r["win_rate"] == pytest.approx(0.5)
    # reference second (model = A): A at 0, 1, 6, 7, 9 = wins; C at 2, 8 = ties -> (5 + 1) / 10
    assert r["win_rate_reference_second"] == pytest.approx(0.6)
    assert r["win_rate_pooled"] == pytest.approx(1.1 / 2) and p["win_rate"] == pytest.approx(1.1 / 2)
    # the review pass (model = B): B at 0, 4, 7, 9 -> 4 wins; C at 2, 3, 6 -> 3 ties: (4 + 1.5) / 10
    assert r["trustworthiness"] == pytest.approx(0.55)
    # project trust, reference first: B at 0, 4, 6, 9 = 4, C at 2, 5, 7 = 1.5 -> 5.5; second (model = A): A at
    # 0, 1, 4, 6, 7, 9 = 6, C at 2, 5 = 1 -> 7; pooled 12.5 / 20
    assert p["trustworthiness"] == pytest.approx(12.5 / 20)
    assert p["win_rate_reference_first"] == pytest.approx(r["win_rate"])
    assert rlaifv["scoring"]["prompt_sha256"] == read_template(judge_tpl, "refomb_judge_prompt").sha256
    assert rlaifv["protocol"] == "rlaifv" and project["protocol"] == "project"
