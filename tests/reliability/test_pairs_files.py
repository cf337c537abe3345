"""Pairs files for `flows/train.py --pairs`: every row is checked before any model loads. Equal, empty,
missing or non-text sides, undecodable or blank images, image placeholders in questions and duplicate rows are
counted skips naming the row; a file that is not parquet, or has no usable pair, is an error naming it."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from rlaifv_core import training as D
from rlaifv_core.training import PairsFileError, check_pairs

from .conftest import counts_artifact, png_bytes, shapes_pairs


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _mixed() -> tuple[pd.DataFrame, list[str]]:
    """4 good pairs, one with `<image>` in its question and one with a 16-bit image (both usable), and one
    row per fault; returns the frame and the `idx` of the rows that must survive, in order."""
    good = shapes_pairs(4).to_dict("records")
    deep = np.tile(np.linspace(0, 65535, 64), (16, 1)).astype(np.uint16)
    image = lambda data: {"bytes": data, "path": None}  # noqa: E731
    rows = [
        dict(good[0], idx="good-0"),
        dict(good[0], idx="equal", rejected=good[0]["chosen"] + "  "),
        dict(good[1], idx="good-1"),
        dict(good[1], idx="empty", rejected=" \n"),
        dict(good[1], idx="none", chosen=None),
        dict(good[1], idx="nan", question=float("nan")),
        dict(good[1], idx="number", rejected=3.5),
        dict(good[2], idx="pad-token", question="<|image_pad|> describe the image ."),
        dict(good[2], idx="image-tag", question="<image>\ndescribe the image .", image=image(png_bytes(7))),
        dict(good[2], idx="not-an-image", image=image(b"GIF89a but not really" * 4)),
        dict(good[2], idx="no-image", image={"bytes": None, "path": None}),
        dict(good[2], idx="blank", image=image(_png(Image.new("RGB", (32, 32), (0, 0, 0))))),
        dict(good[2], idx="good-2"),
        dict(good[1], idx="duplicate"),
        dict(good[3], idx="deep", image=image(_png(Image.fromarray(deep)))),
    ]
    return pd.DataFrame(rows), ["good-0", "good-1", "image-tag", "good-2", "deep"]


EXPECTED = {"rows_in": 15, "pairs": 5, "skipped_equal_sides": 1, "skipped_empty_text": 1, "skipped_missing_text": 2,
            "skipped_non_text": 1, "skipped_placeholder_in_question": 1, "skipped_bad_image": 1,
            "skipped_missing_image": 1, "skipped_blank_image": 1, "skipped_duplicate_pair": 1,
            "image_placeholder_removed": 1, "images_converted": 1}


def test_bad_pair_rows_are_counted_skips_naming_the_row():
    frame, keep = _mixed()
    usable, counts = check_pairs(frame, "mixed.parquet")
    assert list(usable["idx"]) == keep
    assert {k: v for k, v in counts.items() if k != "examples"} == EXPECTED
    examples = counts["examples"]
    assert examples[0] == "row 1 (idx 'equal'): `chosen` and `rejected` are the same text"
    assert examples[3].startswith("row 5 (idx 'nan'): `question` is empty (None/NaN)")
    assert examples[4].startswith("row 6 (idx 'number'): `rejected` is a float, not text")
    texts = [t for column in ("question", "chosen", "rejected") for t in usable[column]]
    assert all(isinstance(t, str) and t.strip() and t not in ("nan", "None") for t in texts)
    assert usable.loc[2, "question"] == "describe the image ."  # `<image>` removed: TRL adds the image itself
    deep = Image.open(io.BytesIO(usable.loc[4, "image"]["bytes"]))
    assert deep.mode == "RGB" and deep.getextrema()[0] == (0, 255)  # stored as a viewer shows it, not white
    assert any(e.startswith("row 9 (idx 'not-an-image'): image: cannot decode image") for e in examples)
    assert any(e.startswith("row 11 (idx 'blank'): ") and "blank image" in e for e in examples)
    assert any(e.startswith("row 13 (idx 'duplicate'): the same image, question and answers") for e in examples)


def test_pairs_file_that_is_not_parquet_missing_or_empty_is_an_error_naming_it(tmp_path):
    csv = tmp_path / "pairs.csv"
    shapes_pairs(2).drop(columns=["image"]).assign(image_path="a.png").to_csv(csv, index=False)
    with pytest.raises(PairsFileError, match="not a parquet file") as info:
        D.load_pairs(str(csv))
    assert str(csv) in str(info.value)
    with pytest.raises(FileNotFoundError, match="nope.parquet: pairs file not found"):
        D.load_pairs(str(tmp_path / "nope.parquet"))  # a file name is never looked up on the hub
    empty = tmp_path / "empty.parquet"
    shapes_pairs(1).iloc[:0].to_parquet(empty)
    with pytest.raises(PairsFileError, match="empty.parquet: no usable pair among 0 rows"):
        check_pairs(D.load_pairs(str(empty)), str(empty))
    bad = tmp_path / "bad.parquet"
    frame = shapes_pairs(2)
    frame["rejected"] = frame["chosen"]
    frame.to_parquet(bad)
    with pytest.raises(PairsFileError, match=r"bad.parquet: no usable pair among 2 rows .*'skipped_equal_sides': 2"):
        check_pairs(D.load_pairs(str(bad)), str(bad))


def test_a_none_text_in_a_parquet_file_is_skipped_not_trained_as_text(tmp_path):
    frame = shapes_pairs(3)
    frame.loc[1, "chosen"] = None
    frame.loc[2, "question"] = float("nan")
    path = tmp_path / "holes.parquet"
    frame.to_parquet(path)
    usable, counts = check_pairs(D.load_pairs(str(path)), str(path))
    assert len(usable) == 1 and counts["skipped_missing_text"] == 2


# -- through the flow ------------------------------------------------------------------------------------
def test_train_flow_counts_pair_skips_and_refuses_unusable_files_before_any_model(prefect_api, tmp_path,
                                                                                   tiny_model_dir, monkeypatch):
    from flows.train import main
    from rlaifv_core.store import RunStore

    frame, keep = _mixed()
    frame = frame[frame["idx"] != "number"]  # a parquet column holds one type: a number is a frame-only fault
    mixed = tmp_path / "mixed.parquet"
    frame.to_parquet(mixed)
    common = [f"store.url={tmp_path / 'runs'}", "dpo.max_steps=1", "dpo.batch_size=2", "dpo.warmup_ratio=0.0",
              "iteration.retry_delay_s=0"]
    result = main(["--pairs", str(mixed), "--model", str(tiny_model_dir), "store.run_name=mixed", *common])
    expected = dict(EXPECTED, rows_in=14, skipped_non_text=0)
    del expected["skipped_non_text"]
    assert {k: v for k, v in result.pair_counts.items() if k != "examples"} == expected
    assert result.num_pairs == 5 and [c.step for c in result.checkpoints] == [1]
    artifact = counts_artifact("mixed-iter-1-pairs-parquet-counts")
    assert {k: int(v) for k, v in artifact.items() if k != "examples"} == expected
    stored = RunStore(str(tmp_path / "runs"), "mixed").read_table("iter-1/pairs.parquet")
    assert list(stored["idx"]) == keep

    calls = []
    real_load = D.load_pairs
    monkeypatch.setattr(D, "load_pairs", lambda *a, **k: calls.append(a) or real_load(*a, **k))
    csv = tmp_path / "pairs.csv"
    csv.write_text("question,chosen,rejected,image_path\nq ?,a,b,x.png\n")
    all_equal = tmp_path / "all-equal.parquet"
    shapes_pairs(2).assign(rejected=lambda f: f["chosen"]).to_parquet(all_equal)
    for path, message in ((csv, "not a parquet file"), (all_equal, "no usable pair among 2 rows")):
        calls.clear()
        with pytest.raises(PairsFileError, match=message) as info:  # the model path does not exist: never loaded
            main(["--pairs", str(path), "--model", str(tmp_path / "no-model"), "store.run_name=bad", *common])
        assert str(path) in str(info.value) and len(calls) == 1  # not retried
    assert not (tmp_path / "runs" / "bad" / "iter-1" / "pairs.parquet").exists()
