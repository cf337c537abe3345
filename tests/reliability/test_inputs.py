"""Bad inputs: every bad prompt row is a counted skip with a reason; an unreadable source or an unusable
prompt set is a clear error naming it, raised before any model runs."""

from __future__ import annotations

import json
import time
import tracemalloc

import pandas as pd
import pytest

from rlaifv_core import training as D
from rlaifv_core.config import PromptsConfig
from rlaifv_core.images import MAX_PIXELS, BadImage, load_image_bytes
from rlaifv_core.feedback.prompts import MAX_QUESTION_CHARS, PromptSourceError, load_prompts, read_prompt_source

from .conftest import b64, bomb_png, counts_artifact, good_records, png_bytes, tiny_config, write_jsonl


def _read(tmp_path, records, data_root=None, name="prompts.jsonl"):
    return read_prompt_source(str(write_jsonl(tmp_path / name, records)), data_root)


def _only_good_rows_kept(frame, good):
    assert list(frame["ds_question_id"]) == [r["ds_question_id"] for r in good]


# -- images -----------------------------------------------------------------------------------------
def test_corrupt_image_bytes_are_a_counted_skip_naming_the_row(tmp_path):
    good = good_records(2)
    corrupt = {"ds_question_id": "bad", "image": b64(b"\x89PNG\r\n\x1a\n" + b"garbage" * 40), "question": "q ?"}
    frame, counts = _read(tmp_path, [good[0], corrupt, good[1]])
    _only_good_rows_kept(frame, good)
    assert counts["rows_in"] == 3 and counts["skipped_bad_image"] == 1
    assert any(e.startswith("row 1:") and "cannot decode image" in e for e in counts["examples"])


def test_missing_image_file_is_a_counted_skip(tmp_path):
    (tmp_path / "data").mkdir()
    good = good_records(1)
    frame, counts = _read(tmp_path, good + [{"ds_question_id": "gone", "image_path": "nope.png", "question": "q ?"}],
                          data_root=str(tmp_path / "data"))
    _only_good_rows_kept(frame, good)
    assert counts["skipped_missing_image"] == 1 and "image file not found: nope.png" in counts["examples"][0]


def _outside_image(tmp_path):
    root = tmp_path / "data"
    root.mkdir(exist_ok=True)
    secret = tmp_path / "outside.png"
    secret.write_bytes(png_bytes(3))
    return root, secret


def test_dotdot_path_escaping_the_data_root_is_refused(tmp_path):
    root, _ = _outside_image(tmp_path)
    frame, counts = _read(tmp_path, good_records(1) + [{"image_path": "../outside.png", "question": "q ?"}], str(root))
    assert len(frame) == 1 and counts["skipped_path_outside_root"] == 1
    assert "'../outside.png' escapes the data root" in counts["examples"][0]


def test_absolute_path_outside_the_data_root_is_refused(tmp_path):
    root, secret = _outside_image(tmp_path)
    frame, counts = _read(tmp_path, good_records(1) + [{"image_path": str(secret), "question": "q ?"}], str(root))
    assert len(frame) == 1 and counts["skipped_path_outside_root"] == 1


def test_symlink_out_of_the_data_root_is_refused(tmp_path):
    root, secret = _outside_image(tmp_path)
    (root / "innocent.png").symlink_to(secret)
    (root / "inside.png").write_bytes(png_bytes(4))
    frame, counts = _read(tmp_path, [{"image_path": "innocent.png", "question": "q ?"},
                                     {"image_path": "inside.png", "question": "q ?"}], str(root))
    assert list(frame["image_path"]) == ["inside.png"]  # a real file inside the root still works
    assert counts["skipped_path_outside_root"] == 1


def test_decompression_bomb_is_refused_from_its_header(tmp_path):
    bomb = bomb_png(20_000, 20_000)
    assert len(bomb) < 300 and 20_000 * 20_000 > MAX_PIXELS
    tracemalloc.start()
    started = time.monotonic()
    with pytest.raises(BadImage) as info:
        load_image_bytes(bomb, "bomb.png")
    elapsed = time.monotonic() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert info.value.reason == "image_too_large" and "bomb.png" in str(info.value)
    assert elapsed < 2 and peak < 20_000_000  # refused from the header: no 1.2 GB pixel buffer
    frame, counts = _read(tmp_path, good_records(1) + [{"image": b64(bomb), "question": "q ?"}])
    assert len(frame) == 1 and counts["skipped_image_too_large"] == 1
    # just over our own limit (below PIL's bomb error) is refused by our check too
    with pytest.raises(BadImage, match="exceeds the 64,000,000-pixel limit"):
        load_image_bytes(bomb_png(8_001, 8_000))


# -- questions ----------------------------------------------------------------------------------------
def test_empty_whitespace_and_placeholder_only_questions_are_counted_skips(tmp_path):
    good = good_records(1)
    image = good[0]["image"]
    bad = [{"image": image, "question": q} for q in ("", "   \n\t ", "<image>\n")] + [{"image": image}]
    frame, counts = _read(tmp_path, good + bad)
    _only_good_rows_kept(frame, good)
    assert counts["skipped_empty_question"] == 4
    assert (frame["question"].str.strip() != "").all()


def test_50000_character_question_is_a_counted_skip(tmp_path):
    good = good_records(1)
    frame, counts = _read(tmp_path, good + [{"image": good[0]["image"], "question": "is it red ? " * 4167}])
    assert len("is it red ? " * 4167) > 50_000 - 12 and MAX_QUESTION_CHARS < 50_000
    _only_good_rows_kept(frame, good)
    assert counts["skipped_question_too_long"] == 1


# -- files --------------------------------------------------------------------------------------------
def test_non_utf8_bytes_in_a_jsonl_are_a_clear_error_naming_file_and_byte(tmp_path):
    path = tmp_path / "latin1.jsonl"
    line = json.dumps(good_records(1)[0]).encode()
    data = line + b"\n" + b'{"question": "caf\xe9 ?", "image": "x.png"}\n'  # Latin-1, not UTF-8
    path.write_bytes(data)
    with pytest.raises(PromptSourceError) as info:
        read_prompt_source(str(path))
    offset = data.index(b"\xe9")
    assert str(path) in str(info.value) and f"(byte {offset})" in str(info.value)
    assert "not UTF-8" in str(info.value)


def test_duplicate_prompts_are_skipped_and_duplicate_ids_counted(tmp_path):
    first, second = good_records(2)
    same_id_other_prompt = dict(second, ds_question_id=first["ds_question_id"])
    frame, counts = _read(tmp_path, [first, dict(first), dict(first, ds_question_id="copy"), same_id_other_prompt])
    assert counts["skipped_duplicate_prompt"] == 2  # same image + question: one prompt, whatever its id
    assert counts["duplicate_ds_question_id"] == 1  # same id, different prompt: both kept, counted
    assert len(frame) == 2 and frame["prompt_id"].is_unique


def test_json_array_prompt_file_is_accepted_like_jsonl(tmp_path):
    records = good_records(3)
    array = tmp_path / "prompts.json"
    array.write_text(json.dumps(records, indent=2))
    from_array, counts_array = read_prompt_source(str(array))
    from_lines, counts_lines = read_prompt_source(str(write_jsonl(tmp_path / "prompts.jsonl", records)))
    pd.testing.assert_frame_equal(from_array.drop(columns="origin_dataset"), from_lines.drop(columns="origin_dataset"))
    assert counts_array == counts_lines == {"rows_in": 3}


@pytest.mark.parametrize("content, message", [
    ("question,image\nwhat ?,a.png\n", "line 1 is neither JSONL nor part of a JSON array"),
    ('[{"question": "q ?", "image": "a.png"}', "looks like a JSON array but does not parse"),
    ('["a", "b"]', "a JSON array of objects is expected"),
    ('{"question": "q ?", "image": "a.png"}\n[1, 2]\n', "line 2 is not a JSON object"),
])
def test_prompt_file_neither_jsonl_nor_array_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "prompts.jsonl"
    path.write_text(content)
    with pytest.raises(PromptSourceError, match=message) as info:
        read_prompt_source(str(path))
    assert str(path) in str(info.value)


def _pairs(k: int = 2) -> pd.DataFrame:
    return pd.DataFrame([{"image": {"bytes": png_bytes(i), "path": None}, "question": "describe the image .",
                          "chosen": "there is a red circle .", "rejected": "there is a blue square ."}
                         for i in range(k)])


@pytest.mark.parametrize("drop, named", [(["rejected"], "'rejected'"), (["question", "chosen"], "'question', 'chosen'"),
                                         (["image"], "'image or image_path'")])
def test_pairs_file_missing_a_column_is_a_clear_error(tmp_path, drop, named):
    path = tmp_path / "pairs.parquet"
    _pairs().drop(columns=drop).to_parquet(path)
    with pytest.raises(ValueError) as info:
        D.load_pairs(str(path))
    assert str(path) in str(info.value) and f"missing [{named}]" in str(info.value)
    with pytest.raises(ValueError, match=rf"missing \[{named}\]"):  # a frame handed over directly
        D.to_trl_dataset(_pairs().drop(columns=drop))
    assert len(D.to_trl_dataset(_pairs())) == 2  # the complete file is fine


def test_empty_prompt_set_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(PromptSourceError, match=r"empty.jsonl: no usable prompt among 0 rows"):
        read_prompt_source(str(empty))
    all_bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "", "image": "a.png"}, {"question": "q ?"}])
    with pytest.raises(PromptSourceError, match=r"bad.jsonl: no usable prompt among 2 rows") as info:
        read_prompt_source(str(all_bad))
    assert "skipped_empty_question" in str(info.value) and "skipped_missing_image" in str(info.value)
    config = PromptsConfig(source=str(write_jsonl(tmp_path / "two.jsonl", good_records(2))), per_iteration=2)
    with pytest.raises(PromptSourceError, match="2 usable prompts, not enough for iteration 2"):
        load_prompts(config, iteration=2)


# -- through the flow ------------------------------------------------------------------------------------
def _mixed_prompt_file(tmp_path):
    root, secret = _outside_image(tmp_path)
    (root / "link.png").symlink_to(secret)
    good = good_records(4)
    bad = [
        {"image": b64(b"not an image at all" * 10), "question": "q ?"},
        {"image_path": "missing.png", "question": "q ?"},
        {"image_path": "../outside.png", "question": "q ?"},
        {"image_path": "link.png", "question": "q ?"},
        {"image": b64(bomb_png()), "question": "q ?"},
        {"image": good[0]["image"], "question": "  "},
        {"image": good[0]["image"], "question": "x" * 50_000},
        dict(good[1]),
    ]
    return write_jsonl(tmp_path / "mixed.jsonl", good[:2] + bad + good[2:]), root


def test_bad_rows_are_counted_in_the_prompts_counts_artifact_and_the_run_goes_on(prefect_api, tmp_path,
                                                                                 tiny_model_dir):
    from flows.generate import generate

    source, root = _mixed_prompt_file(tmp_path)
    config = tiny_config(tmp_path / "runs", tiny_model_dir, f"prompts.source={source}", f"prompts.data_root={root}",
                         run="bad-rows")
    result = generate(config, iteration=1)
    expected = {"rows_in": 12, "prompts": 4, "skipped_bad_image": 1, "skipped_missing_image": 1,
                "skipped_path_outside_root": 2, "skipped_image_too_large": 1, "skipped_empty_question": 1,
                "skipped_question_too_long": 1, "skipped_duplicate_prompt": 1}
    counts = {k: v for k, v in result.counts["prompts"].items() if k != "examples"}
    assert counts == expected
    artifact = counts_artifact("bad-rows-iter-1-prompts")
    assert {k: int(v) for k, v in artifact.items() if k != "examples"} == expected
    assert result.prompts.rows == 4 and result.candidates.rows == 16  # the good rows went on


def test_unusable_prompt_source_stops_the_flow_before_any_model_runs(prefect_api, tmp_path, tiny_model_dir,
                                                                    monkeypatch):
    from flows.generate import generate
    import rlaifv_core.feedback.sampling

    def never(*args, **kwargs):
        raise AssertionError("sampling ran on an unusable prompt set")

    monkeypatch.setattr(rlaifv_core.feedback.sampling, "sample_candidates", never)
    source = write_jsonl(tmp_path / "all-bad.jsonl", [{"question": " ", "image": "a.png"}, {"question": "q ?"}])
    config = tiny_config(tmp_path / "runs", tiny_model_dir, f"prompts.source={source}", run="no-prompts")
    with pytest.raises(PromptSourceError, match="all-bad.jsonl: no usable prompt among 2 rows"):
        generate(config, iteration=1)
    assert not (tmp_path / "runs" / "no-prompts" / "iter-1" / "prompts.parquet").exists()
    assert not (tmp_path / "runs" / "no-prompts" / "iter-1" / "candidates.parquet").exists()
