"""The shapes world: scenes vs rendered pixels, the language, and exact metrics on hand-made answers."""

import random

import pytest

from rlaifv_core.shapes.benchmark import audit_labeler, chair, claim_kind, mentioned_objects
from rlaifv_core.shapes.oracle import OracleLabeler, objects_in_image
from rlaifv_core.shapes.world import CELL, COLOURS, PARTNER, ShapesWorld

WORLD = ShapesWorld()


def test_scenes_are_seeded_and_bounded():
    assert WORLD.scene(5) == WORLD.scene(5)
    assert WORLD.scene(5) != WORLD.scene(6)
    for seed in range(300):
        scene = WORLD.scene(seed)
        assert 1 <= len(scene.objects) <= 4
        assert len({p.cell for p in scene.placed}) == len(scene.placed)


def test_rendered_image_matches_truth():
    for seed in range(200):
        scene = WORLD.scene(seed)
        image = scene.render()
        assert image.size == (48, 48)
        assert objects_in_image(image) == scene.objects
        for obj in scene.placed:  # the object's colour is at its cell's centre
            row, col = divmod(obj.cell, 3)
            assert image.getpixel((col * CELL + 8, row * CELL + 10)) == COLOURS[obj.colour]


def test_partner_prior_and_noisy_captions():
    scenes = WORLD.scenes(0, 2000)
    with_partner = sum(any(PARTNER[o] in s.objects for o in s.objects) for s in scenes) / len(scenes)
    assert 0.5 < with_partner < 0.95  # partners usually co-occur, not always
    rng = random.Random(0)
    noisy = [WORLD.caption(s, rng, noisy=True) for s in scenes]
    wrong = sum(any(o not in s.objects for o, _ in mentioned_objects(c)) for s, c in zip(scenes, noisy)) / len(scenes)
    assert 0.15 < wrong < 0.4  # ~25 % of training captions name an absent partner
    clean = [WORLD.caption(s) for s in scenes]
    assert all({o for o, _ in mentioned_objects(c)} == set(s.objects) for s, c in zip(scenes, clean))


def test_chair_on_hand_made_answers():
    red_circle, blue_square, green_circle = ("red", "circle"), ("blue", "square"), ("green", "circle")
    truths = [{red_circle, blue_square}, {green_circle}, {red_circle}]
    answers = [
        "there is a red circle , a blue square and a green circle .",  # 3 mentions, 1 hallucinated
        "there is a green circle .",  # 1 mention, correct
        "no , there is no blue square .",  # negated: not a mention
    ]
    metrics = chair(truths, answers)
    assert metrics["chair_i"] == pytest.approx(1 / 4)
    assert metrics["chair_s"] == pytest.approx(1 / 3)
    assert metrics["recall"] == pytest.approx(3 / 4)  # 2 of 2 + 1 of 1 + 0 of 1
    assert metrics["mentions_per_answer"] == pytest.approx(4 / 3)
    assert metrics["hallucinated_per_answer"] == pytest.approx(1 / 3)
    assert metrics["prior_share"] == 0.0  # green circle is not a partner of red circle / blue square
    assert metrics["f1"] == pytest.approx(0.75)  # precision 3/4, recall 3/4
    assert metrics["words_per_answer"] == pytest.approx((14 + 6 + 8) / 3)
    metrics = chair([{red_circle}], ["there is a red circle and a blue square ."])
    assert metrics["prior_share"] == 1.0  # blue square is red circle's partner


def test_labeler_audit_on_hand_made_verdicts():
    scene = WORLD.scene(3)
    present = sorted(scene.objects)[0]
    absent_partner = PARTNER[present] if PARTNER[present] not in scene.objects else None
    items = [(scene, present, True), (scene, present, False), (scene, ("yellow", "triangle"), False)]
    if absent_partner:
        items.append((scene, absent_partner, True))
    report = audit_labeler(items)
    overall = report["overall"]
    assert overall["recall"] == pytest.approx(0.5)
    assert overall["false_rejections"] == 1
    assert claim_kind(present, scene) == "present"


def test_oracle_answers_exactly():
    scene = WORLD.scene(11)
    obj = sorted(scene.objects)[0]
    verdicts = OracleLabeler().yes_no(scene.render(), [f"is there a {obj[0]} {obj[1]} ?", f"is there no {obj[0]} {obj[1]} ?"])
    assert [v.accepted() for v in verdicts] == [True, False]


def test_report_split_scenes_are_disjoint_from_selection_and_prompt_scenes():
    from rlaifv_core.config import load_config
    from rlaifv_core.shapes.prompts import SHAPES_SEED_STRIDE

    config = load_config("configs/shapes.yaml")
    e = config.eval
    report = range(e.shapes_report_seed, e.shapes_report_seed + (e.shapes_report_scenes or e.shapes_scenes))
    selection = range(e.shapes_seed, e.shapes_seed + e.shapes_scenes)
    assert config.eval.report_benchmarks == ["shapes_report"] and "shapes_report" not in config.eval.benchmarks
    assert not set(report) & set(selection)
    for seed in range(5):  # the run seeds the README reports
        for k in range(1, config.iteration.iterations + 1):
            start = seed * 7_919 + k * SHAPES_SEED_STRIDE
            prompts = range(start, start + config.prompts.per_iteration)
            assert not set(prompts) & (set(report) | set(selection))
    world = ShapesWorld()
    report_scenes = {tuple(sorted(s.objects)) + (s.render().tobytes(),) for s in world.scenes(report.start, 40)}
    selection_scenes = {tuple(sorted(s.objects)) + (s.render().tobytes(),) for s in world.scenes(selection.start, 40)}
    assert not report_scenes & selection_scenes  # distinct seeds draw distinct pictures


def test_a_report_benchmark_that_selection_also_sees_is_refused():
    from rlaifv_core.config import load_config
    from rlaifv_core.evals.registry import check_benchmark_data

    config = load_config("configs/shapes.yaml", ["eval.benchmarks=[shapes,shapes_report]"])
    with pytest.raises(ValueError, match="report_benchmarks.*also in eval.benchmarks"):
        check_benchmark_data(config.eval)
    with pytest.raises(ValueError, match="unknown benchmark 'nope' in eval.report_benchmarks"):
        check_benchmark_data(load_config("configs/shapes.yaml", ["eval.report_benchmarks=[nope]"]).eval)
