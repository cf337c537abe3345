"""Object HalBench, MMHal-Bench, RefoMB, AMBER and the judge client on small hand-built fixtures.

Every expected number below is computed by hand in the comments. The judge is a scripted fake
Backend (no HTTP backend involved)."""

from __future__ import annotations

import base64
import io
import json
import math
import threading
from pathlib import Path

import pytest
from PIL import Image

from rlaifv_core.backends.base import Backend, ChatReply, GenerationSettings
from rlaifv_core.evals.amber import evaluate_amber, parse_yes_no, run_amber
from rlaifv_core.evals.judge import JudgeClient, JudgeRequest
from rlaifv_core.evals.mmhal import QUESTION_TYPES, parse_rating, run_mmhal
from rlaifv_core.evals.common import EVAL_SETTINGS, align_answers
from rlaifv_core.evals.object_halbench import load_coco_ground_truth, parse_object_list, run_object_halbench
from rlaifv_core.evals.refomb import parse_verdict, run_refomb

pytestmark = pytest.mark.timeout(120)


# -- fakes -------------------------------------------------------------------------------------------
class ScriptedChat(Backend):
    """A text judge whose reply is script(user_text, seed); counts real calls."""

    def __init__(self, script, served="judge-model-0613", fail=None):
        self.script = script
        self.served = served
        self.fail = fail
        self.fingerprint = "fake-judge@1"
        self.identity = {"backend": "fake", "base_url": "http://127.0.0.1:9/v1", "model": "judge-model"}
        self.calls = 0
        self.seen: list[list[dict]] = []
        self._lock = threading.Lock()

    def generate(self, prompts, settings):  # pragma: no cover - not a VLM
        raise NotImplementedError

    def yes_no(self, image, questions):  # pragma: no cover - not a VLM
        raise NotImplementedError

    def chat(self, messages, *, temperature=0.0, top_p=1.0, max_new_tokens=512, seed=0):
        with self._lock:
            self.calls += 1
            self.seen.append(messages)
        if self.fail is not None:
            raise self.fail
        text = "\n".join(m["content"] for m in messages)
        return ChatReply(self.script(text, seed), self.served)


class ScriptedVLM(Backend):
    """A policy that answers each question with a fixed text and records the settings it got."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers
        self.fingerprint = "fake-vlm@1"
        self.identity = {"backend": "fake", "model": "fake-vlm"}
        self.settings_seen: list[GenerationSettings] = []

    def generate(self, prompts, settings):
        self.settings_seen.append(settings)
        assert all(p.image is not None and p.image.size == (8, 8) for p in prompts)
        return [[self.answers[p.question]] for p in prompts]

    def yes_no(self, image, questions):  # pragma: no cover
        raise NotImplementedError


def _png_b64() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# -- Object HalBench fixture ----------------------------------------------------------------------------
CATEGORIES = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 58, "name": "hot dog"},
              {"id": 88, "name": "teddy bear"}, {"id": 65, "name": "bed"}]
INSTANCES = [(1, 1), (1, 18), (1, 18), (2, 58), (3, 88), (3, 65)]  # (image, category)
CAPTIONS = {
    1: ["A man and his dog on a couch.", "Two people sit with a puppy."],  # + couch
    2: ["A hot dog on a plate next to a cup of coffee."],  # + cup (hot dog already there)
    3: ["A view of a quiet bedroom.", "The sky at dusk through the window."],  # no COCO object
    4: ["A snowy mountain landscape under a blue sky.", "A skier far away on the slope."],  # person (captions only)
}
# GT: 1 {person, dog, couch}; 2 {hot dog, cup}; 3 {teddy bear, bed}; 4 {person}
QUESTION = "Describe this image in detail."
ANSWERS = {
    1: "Two dogs and a man relax on a sofa. A cat sleeps nearby.",  # dog, person, couch, cat(H); 13 words
    2: "A hot dog sits on a plate.",  # hot dog; 7 words
    3: "A teddy bear lies on the bed next to a laptop and a dog.",  # teddy bear, bed, laptop(H), dog(H); 14 words
    4: "Snow covers the mountains.",  # nothing; 4 words
}


@pytest.fixture()
def objhal_files(tmp_path):
    instances = {"images": [{"id": i} for i in CAPTIONS], "categories": CATEGORIES,
                 "annotations": [{"id": k, "image_id": im, "category_id": c} for k, (im, c) in enumerate(INSTANCES)]}
    captions = {"images": [{"id": i} for i in CAPTIONS],
                "annotations": [{"id": 100 + k, "image_id": im, "caption": cap}
                                for k, (im, caps) in enumerate(CAPTIONS.items()) for cap in caps]}
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    (tmp_path / "captions.json").write_text(json.dumps(captions))
    image = _png_b64()
    bench = _write_jsonl(tmp_path / "objhal.jsonl", [
        {"image_id": i, "question": f"{QUESTION} ({i})", "image": image} for i in CAPTIONS])
    # answers in another order, carrying image_id (and a running question_id, as muffin_vqa writes)
    answers = _write_jsonl(tmp_path / "answers.jsonl", [
        {"question_id": k, "image_id": i, "prompt": QUESTION, "text": ANSWERS[i]}
        for k, i in enumerate([3, 1, 4, 2])])
    return tmp_path, bench, answers


def test_coco_ground_truth_is_instances_plus_captions(objhal_files):
    root, _, _ = objhal_files
    truth = load_coco_ground_truth(root / "instances.json", root / "captions.json", [1, 2, 3, 4])
    assert truth == {1: {"person", "dog", "couch"}, 2: {"hot dog", "cup"}, 3: {"teddy bear", "bed"}, 4: {"person"}}


def test_object_halbench_llm_free(objhal_files):
    root, bench, answers = objhal_files
    rec = run_object_halbench(bench, root / "instances.json", root / "captions.json", answers=answers)
    m = rec["metrics"]
    # answers hallucinating: 1 (cat), 3 (laptop, dog) -> 2 of 4; with a COCO mention: 1, 2, 3
    assert m["chair_s"] == pytest.approx(2 / 4)
    assert m["chair_s_refine"] == pytest.approx(2 / 3)
    assert m["response_hall"] == pytest.approx(100 * 2 / 3)
    # mentions: 4 + 1 + 4 + 0 = 9, hallucinated 1 + 2 = 3
    assert m["chair_i"] == pytest.approx(3 / 9)
    assert m["object_hall"] == pytest.approx(100 / 3)
    # correct distinct classes 3 + 1 + 2 + 0 over GT sizes 3 + 2 + 2 + 1
    assert m["recall"] == pytest.approx(6 / 8)
    assert m["words_per_answer"] == pytest.approx((13 + 7 + 14 + 4) / 4)
    assert rec["n"] == 4 and rec["n_unparsed"] == 0
    assert rec["extractor"] == "llm-free" and rec["judge"] == "llm-free"
    assert rec["generation"]["source"].endswith("answers.jsonl")
    item3 = rec["items"][2]
    assert [(x["class"], x["hallucinated"]) for x in item3["mentions"]] == [
        ("teddy bear", False), ("bed", False), ("laptop", True), ("dog", True)]


def test_object_halbench_generates_with_the_original_settings(objhal_files):
    root, bench, _ = objhal_files
    policy = ScriptedVLM({f"{QUESTION} ({i})": text for i, text in ANSWERS.items()})
    rec = run_object_halbench(bench, root / "instances.json", root / "captions.json", backend=policy)
    assert policy.settings_seen == [EVAL_SETTINGS]
    assert EVAL_SETTINGS.num_beams == 3 and EVAL_SETTINGS.temperature == 0 and EVAL_SETTINGS.max_new_tokens == 1024
    gen = rec["generation"]
    assert gen["settings"]["num_beams"] == 3 and gen["settings"]["max_new_tokens"] == 1024
    assert gen["model"] == {"backend": "fake", "model": "fake-vlm"}
    assert rec["metrics"]["chair_i"] == pytest.approx(3 / 9)


def _objhal_judge_script(text, seed):
    if ANSWERS[1] in text:
        return '["dog", "man", "sofa", "cat"]'
    if ANSWERS[2] in text:
        return 'The objects are:\n["hot dog", "plate"]'
    if ANSWERS[3] in text:
        return "I am sorry, I cannot help with that."  # never parses
    return "[]"


def test_object_halbench_with_judge_unparsable_and_cache(objhal_files, tmp_path):
    root, bench, answers = objhal_files
    cache = tmp_path / "judge_cache.jsonl"
    fake = ScriptedChat(_objhal_judge_script)
    rec = run_object_halbench(bench, root / "instances.json", root / "captions.json", answers=answers,
                              judge=JudgeClient(fake, cache_path=cache, max_attempts=3))
    # answer 3 is unparsed after 3 attempts and left out: scored answers 1, 2, 4
    assert rec["n"] == 3 and rec["n_unparsed"] == 1 and rec["unparsed_items"] == [2]
    assert rec["items"][2]["judge"]["parsed"] is False
    assert rec["items"][2]["judge"]["attempts"] == 3
    assert "cannot help" in rec["items"][2]["judge"]["raw"]
    m = rec["metrics"]
    assert m["chair_s"] == pytest.approx(1 / 3)  # only answer 1 hallucinates (cat)
    assert m["chair_s_refine"] == pytest.approx(1 / 2)  # answers 1 and 2 name an object
    assert m["chair_i"] == pytest.approx(1 / 5)  # mentions dog, man, sofa, cat + hot dog ("plate" is no COCO class)
    assert m["recall"] == pytest.approx(4 / 6)  # (3 + 1 + 0) / (3 + 2 + 1)
    assert m["words_per_answer"] == pytest.approx((13 + 7 + 4) / 3)
    assert fake.calls == 1 + 1 + 3 + 1
    judge = rec["judge"]
    assert judge["endpoint"] == "http://127.0.0.1:9/v1" and judge["model_requested"] == "judge-model"
    assert judge["served_models"] == ["judge-model-0613"] and judge["temperature"] == 0.2
    assert rec["extractor"] == "llm-judge"
    # one system-role message with the original prompt
    assert len(fake.seen[0]) == 1 and fake.seen[0][0]["role"] == "system"
    assert "[Start of Examiner's Answer]" in fake.seen[0][0]["content"]

    # a re-run with the same cache file pays for nothing and gives the same numbers
    fake2 = ScriptedChat(_objhal_judge_script)
    rec2 = run_object_halbench(bench, root / "instances.json", root / "captions.json", answers=answers,
                               judge=JudgeClient(fake2, cache_path=cache, max_attempts=3))
    assert fake2.calls == 0
    assert rec2["metrics"] == rec["metrics"]


def test_parse_object_list():
    assert parse_object_list('["dog", "cat"]') == ["dog", "cat"]
    assert parse_object_list('Sure!\n```json\n["dog"]\n```') == ["dog"]
    assert parse_object_list("['dog', 'teddy bear']") == ["dog", "teddy bear"]
    assert parse_object_list("[]") == [] and parse_object_list("()") == []
    assert parse_object_list("dog, cat") is None
    assert parse_object_list("[Start of Question]") is None


def test_align_answers_by_id_position_or_error():
    rows = [{"image_id": 2, "text": "b"}, {"image_id": 1, "text": "a"}]
    assert align_answers(2, {"image_id": [1, 2]}, rows) == ["a", "b"]
    assert align_answers(2, {}, [{"text": "a"}, {"text": "b"}]) == ["a", "b"]
    with pytest.raises(ValueError, match="position"):
        align_answers(3, {}, [{"text": "a"}, {"text": "b"}])
    with pytest.raises(ValueError, match="no answer"):
        align_answers(3, {"image_id": [1, 2, 3]}, rows)


# -- judge client -------------------------------------------------------------------------------------
def test_judge_timeout_is_a_recorded_failure_after_bounded_attempts(tmp_path):
    fake = ScriptedChat(lambda t, s: "unused", fail=TimeoutError("read timed out"))
    judge = JudgeClient(fake, cache_path=tmp_path / "c.jsonl", max_attempts=3)
    answer = judge.ask([{"role": "user", "content": "hi"}], temperature=0.0, max_new_tokens=8, parse=parse_rating)
    assert answer.parsed is False and answer.value is None and answer.raw is None
    assert answer.attempts == 3 and fake.calls == 3
    assert len(answer.errors) == 3 and all("TimeoutError" in e for e in answer.errors)
    assert answer.judge["model_requested"] == "judge-model" and answer.judge["temperature"] == 0.0
    assert not (tmp_path / "c.jsonl").exists() or (tmp_path / "c.jsonl").read_text() == ""  # failures not cached


def test_judge_retries_with_new_seeds_until_parsed_and_ask_many_keeps_order():
    fake = ScriptedChat(lambda text, seed: "Rating: 5" if seed >= 2 else "no idea")
    judge = JudgeClient(fake, max_attempts=3)
    answer = judge.ask([{"role": "user", "content": "x"}], parse=parse_rating)
    assert answer.parsed and answer.value == 5 and answer.attempts == 3 and answer.served_model == "judge-model-0613"

    echo = ScriptedChat(lambda text, seed: f"Rating: {int(text[-1])}")
    judge = JudgeClient(echo, max_concurrency=4)
    replies = judge.ask_many([JudgeRequest([{"role": "user", "content": f"q{i % 7}"}], parse_rating, tag=i)
                              for i in range(20)])
    assert [r.value for r in replies] == [i % 7 for i in range(20)]
    assert [r.tag for r in replies] == list(range(20))


# -- MMHal-Bench ----------------------------------------------------------------------------------------
MMHAL_REPLIES = {
    "attribute": "The answer is accurate and detailed.\nRating: 6",
    "adversarial": "Good.\nrating: 5",
    "comparison": "Contains a false claim. Rating: 2",
    "counting": "garbled output without any score",  # unparsed
    "relation": "Wrong relation. **Rating:** 0",
    "environment": "Not informative. Rating: 3",
    "holistic": "Rating: 4. Final: rating: 4",  # the same value twice: parsed
    "other": "Rating: 2 ... on reflection, Rating: 5",  # two different values: unparsed
}


def _mmhal_items():
    return [{"question_type": t, "question_topic": "topic", "image_id": f"img{i}", "image_src": f"https://x/{i}.jpg",
             "image_content": ["Dog", "Ball"], "question": f"Question about {t}?", "gt_answer": f"gt {t}",
             "model_answer": ""} for i, t in enumerate(QUESTION_TYPES)]


def _mmhal_script(text, seed):
    for t, reply in MMHAL_REPLIES.items():
        if f"Question about {t}?" in text:
            return reply
    raise AssertionError("unknown question")


def test_parse_rating():
    assert parse_rating("blah\nRating: 6") == 6
    assert parse_rating("Rating: 4. Final: rating: 4") == 4
    assert parse_rating("Rating: 2 then Rating: 5") is None
    assert parse_rating("Rating: 10") is None
    assert parse_rating("no score") is None


def test_mmhal_scores_unparsed_and_merging(tmp_path):
    items = _mmhal_items()
    questions = tmp_path / "mmhal.json"
    questions.write_text(json.dumps(items))
    # answers carry the running question_id (as the generation script writes), shuffled
    answers = _write_jsonl(tmp_path / "answers.jsonl",
                           [{"question_id": i, "text": f"answer {i}"} for i in reversed(range(8))])
    fake = ScriptedChat(_mmhal_script)
    rec = run_mmhal(questions, JudgeClient(fake, max_attempts=3), answers=answers)
    m = rec["metrics"]
    # parsed: 6, 5, 2, 0, 3, 4 (counting and other unparsed)
    assert rec["n"] == 6 and rec["n_unparsed"] == 2 and rec["unparsed_items"] == [3, 7]
    assert m["score"] == pytest.approx(20 / 6)
    assert m["hallucination_rate"] == pytest.approx(2 / 6)  # scores 2 and 0
    assert m["hallucination_rate_pct"] == pytest.approx(100 * 2 / 6)
    # informativeness: (3 + 2 + 2 + 0 + 0 + 1) / 6 / 3 * 100
    assert m["informativeness"] == pytest.approx(8 / 6 / 3 * 100)
    assert m["score_attribute"] == 6 and m["score_relation"] == 0 and "score_counting" not in m
    assert rec["per_type"]["counting"] == {"mean": None, "n": 0, "n_unparsed": 1}
    assert all(isinstance(v, (int, float)) for v in m.values())  # flat numbers
    assert rec["items"][3]["score"] is None and "garbled" in rec["items"][3]["judge"]["raw"]
    assert rec["items"][0]["answer"] == "answer 0"  # merged by question id, not by file order
    assert fake.calls == 6 + 3 + 3  # the two unparsable ones tried 3 times each
    assert rec["judge"]["temperature"] == 0.0 and rec["judge"]["served_model_mismatch"] == 8
    prompt = fake.seen[0][0]["content"]
    assert "### Image Contents\nDog, Ball" in prompt and "Rating: 6, very informative" in prompt


def test_mmhal_positional_merge_only_when_counts_match(tmp_path):
    items = _mmhal_items()
    questions = _write_jsonl(tmp_path / "mmhal.jsonl", items)
    fake = ScriptedChat(_mmhal_script)
    rec = run_mmhal(questions, JudgeClient(fake), answers=[{"text": f"a{i}"} for i in range(8)])
    assert rec["items"][7]["answer"] == "a7"
    with pytest.raises(ValueError, match="position"):
        run_mmhal(questions, JudgeClient(fake), answers=[{"text": "a"}] * 7)


# -- RefoMB ---------------------------------------------------------------------------------------------
REFOMB_ITEMS = [
    {"id": "r1", "image_url": "https://example.invalid/1.jpg", "question": "Q1?", "description": "DESC-1",
     "type": "Coarse Perception", "split": "dev"},
    {"id": "r2", "image_url": "https://example.invalid/2.jpg", "question": "Q2?", "gt_description": "DESC-2",
     "type": "OCR", "split": "dev"},
    {"id": "r3", "image_url": "https://example.invalid/3.jpg", "question": "Q3?", "description": "DESC-3",
     "type": "Relation reasoning", "split": "dev"},
]


def _refomb_script(text, seed):
    if "fewer hallucinations" in text and "Ignore helpfulness" in text:
        return "Both are equally faithful. [[C]]"  # trustworthiness pass: always a tie
    a_part = text.split("[The Start of Assistant A's Answer]")[1].split("[The End of Assistant A's Answer]")[0]
    if "DESC-1" in text:  # the model's answer is better, in either position
        return "Verdict: [[A]]" if "MODEL" in a_part else "Verdict: [[B]] (not [[A]])"
    if "DESC-2" in text:  # a tie, except one garbled repeat when the reference comes first
        if 1000 <= seed < 2000 and "REF" in a_part:
            return "Verdict: A is better"  # no [[...]]: unparsable
        return "[[C]]"
    return "[[A]]"  # DESC-3: a judge that always picks position A


def test_refomb_both_orders_repeats_and_trustworthiness(tmp_path):
    items = _write_jsonl(tmp_path / "refomb.jsonl", REFOMB_ITEMS)
    refs = _write_jsonl(tmp_path / "refs.jsonl", [{"id": f"r{i}", "answer": f"REF answer {i}"} for i in (3, 1, 2)])
    mine = [{"id": f"r{i}", "text": f"MODEL answer {i}"} for i in (1, 2, 3)]
    fake = ScriptedChat(_refomb_script)
    rec = run_refomb(items, refs, JudgeClient(fake, max_attempts=3), answers=mine, repeats=3)
    m = rec["metrics"]
    # per repeat (model side): r1 win+win, r2 tie+tie, r3 loss (ref first) + win (ref second)
    # -> (1 + 1 + .5 + .5 + 0 + 1) / 6 = 2/3; repeat 1 lost r2's reference-first judgment -> 3.5 / 5
    assert rec["win_rate_per_repeat"] == pytest.approx([2 / 3, 7 / 10, 2 / 3])
    assert m["win_rate"] == pytest.approx(61 / 90)
    assert m["win_rate_std"] == pytest.approx(math.sqrt(3) / 90)
    assert m["win_rate_reference_first"] == pytest.approx(0.5)  # (1 + .5 + 0)/3, (1 + 0)/2, (1 + .5 + 0)/3
    assert m["win_rate_reference_second"] == pytest.approx(5 / 6)  # (1 + .5 + 1)/3 each repeat
    assert m["order_consistency"] == pytest.approx(5 / 8)  # r3 never agrees; r2 in repeat 1 not comparable
    assert rec["per_type"]["Coarse Perception"] == {"win_rate": 1.0, "n": 6}
    assert rec["per_type"]["OCR"] == {"win_rate": 0.5, "n": 5}
    assert rec["per_type"]["Relation reasoning"] == {"win_rate": 0.5, "n": 6}
    assert m["trustworthiness"] == 0.5 and m["trustworthiness_std"] == 0.0
    assert rec["n_unparsed"] == 1
    bad = rec["unparsed"]["overall"][0]
    assert (bad["id"], bad["repeat"], bad["order"]) == ("r2", 1, "reference_first") and "A is better" in bad["raw"]
    # 18 + 2 retries in the overall pass, 18 in the trustworthiness pass
    assert fake.calls == 38
    # the judge never sees the image or its URL, only the description; URLs pass through
    assert all("example.invalid" not in msg["content"] for msgs in fake.seen for msg in msgs)
    assert rec["items"][0]["image_url"] == "https://example.invalid/1.jpg"
    assert rec["items"][1]["reference"] == "REF answer 2"
    assert rec["judge"]["overall"]["temperature"] == 1e-5 and rec["judge"]["model_requested"] == "judge-model"


def test_parse_verdict_takes_the_first():
    assert parse_verdict("[[B]] but maybe [[A]]") == "B"
    assert parse_verdict("[[ C ]]") == "C"
    assert parse_verdict("A is better") is None


# -- AMBER ----------------------------------------------------------------------------------------------
AMBER_ANNOTATIONS = [
    {"id": 1, "type": "generative", "truth": ["dog", "grass", "person"], "hallu": ["frisbee", "cat", "car"]},
    {"id": 2, "type": "generative", "truth": ["pizza", "table", "bottle"], "hallu": ["knife", "cup"]},
    {"id": 3, "type": "discriminative-hallucination", "truth": "no"},
    {"id": 4, "type": "discriminative-hallucination", "truth": "yes"},
    {"id": 5, "type": "discriminative-attribute-state", "truth": "yes"},
    {"id": 6, "type": "discriminative-attribute-number", "truth": "no"},
    {"id": 7, "type": "discriminative-relation", "truth": "no"},
    {"id": 8, "type": "discriminative-attribute-action", "truth": "yes"},
]
AMBER_RELATION = {"dog": [], "grass": ["ground"], "person": ["people", "man", "woman", "boy", "girl"],
                  "frisbee": [], "cat": ["kitten"], "car": ["vehicle"], "pizza": ["cheese"], "table": ["desk"],
                  "bottle": [], "knife": [], "cup": ["mug"], "tree": [], "sky": [], "orange": []}
AMBER_RESPONSES = [
    # dog, ground(grass), frisbee(H, cog frisbee), man(person), woman(person), kitten(H, cog cat), tree(H);
    # "no car" is negated and skipped -> 7 mentions, 3 hallucinated, truth 3/3, hallu 2/3
    {"id": 1, "response": "Two dogs play on the ground with a frisbee while a man and a woman watch. "
                          "A kitten hides under a tree. There is no car."},
    # pizza, cheese(pizza), desk(table), orange(safe word), pizza -> 5 mentions, 0 hallucinated, truth 2/3, hallu 0/2
    {"id": 2, "response": "A pizza with extra cheese on a wooden desk next to an orange. The pizza looks tasty."},
    {"id": 3, "response": "No, there is no dog."},  # truth no, said no
    {"id": 4, "response": "No."},  # truth yes, said no
    {"id": 5, "response": "Yes"},  # truth yes, said yes
    {"id": 6, "response": "Yes, there are two."},  # truth no, said yes
    {"id": 7, "response": "no"},  # truth no, said no
    {"id": 8, "response": "The man is running."},  # truth yes, unparsed
]


def test_amber_generative_and_discriminative(tmp_path):
    (tmp_path / "annotations.json").write_text(json.dumps(AMBER_ANNOTATIONS))
    (tmp_path / "relation.json").write_text(json.dumps(AMBER_RELATION))
    (tmp_path / "safe_words.txt").write_text("orange\nsnack\n")
    (tmp_path / "responses.json").write_text(json.dumps(AMBER_RESPONSES))
    rec = run_amber(tmp_path / "annotations.json", responses=tmp_path / "responses.json",
                    relation=tmp_path / "relation.json", safe_words=tmp_path / "safe_words.txt", keep_items=True)
    g = rec["generative"]
    assert (g["mentions"], g["hallucinated_mentions"]) == (12, 3)
    assert g["chair"] == pytest.approx(3 / 12)
    assert g["cover"] == pytest.approx(5 / 6)  # (3 + 2) / (3 + 3)
    assert g["hal"] == pytest.approx(1 / 2)
    assert g["cog"] == pytest.approx(2 / 5)  # (2 + 0) / (3 + 2)
    d = rec["discriminative"]
    # all: correct 3, 5, 7 of 6; answered "no" 3, 4, 7 of which truly no 3, 7; truth "no" 3, 6, 7
    assert d["all"]["accuracy"] == pytest.approx(3 / 6)
    assert d["all"]["precision"] == pytest.approx(2 / 3) and d["all"]["recall"] == pytest.approx(2 / 3)
    assert d["all"]["f1"] == pytest.approx(2 / 3) and d["all"]["n_unparsed"] == 1
    assert d["existence"]["accuracy"] == pytest.approx(1 / 2)
    assert d["existence"]["precision"] == pytest.approx(1 / 2) and d["existence"]["recall"] == 1.0
    assert d["existence"]["f1"] == pytest.approx(2 / 3)
    assert d["attribute"]["accuracy"] == pytest.approx(1 / 3) and d["attribute"]["f1"] == 0.0
    assert d["relation"] == {"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0, "n": 1, "n_unparsed": 0}
    assert rec["metrics"]["amber_score"] == pytest.approx((1 - 0.25 + 2 / 3) / 2)
    flat = rec["metrics"]
    assert flat["chair"] == pytest.approx(0.25) and flat["f1"] == pytest.approx(2 / 3)
    assert flat["existence_accuracy"] == pytest.approx(1 / 2) and flat["relation_f1"] == 1.0
    item1 = rec["items"][0]
    assert item1["mentions"] == ["dog", "ground", "frisbee", "man", "woman", "kitten", "tree"]
    assert item1["covered_hallu"] == ["cat", "frisbee"]


def test_amber_negated_mentions_count_when_asked():
    anns = {a["id"]: a for a in AMBER_ANNOTATIONS[:1]}
    rec = evaluate_amber(anns, AMBER_RESPONSES[:1], relation=AMBER_RELATION, include_negated=True)
    g = rec["generative"]
    assert (g["mentions"], g["hallucinated_mentions"]) == (8, 4)  # + car (hallucinated, covers hallu "car")
    assert g["cog"] == pytest.approx(3 / 3)


def test_parse_yes_no():
    assert parse_yes_no("Yes, there is.") == "yes" and parse_yes_no(" no") == "no"
    assert parse_yes_no("There is a dog.") is None and parse_yes_no("") is None
