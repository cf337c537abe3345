"""A prompts file edited in place recomputes the prompts stage and everything after it; touched, nothing.

One tiny iteration (iterate: start evaluation, generate, reference log-probs, DPO, evaluation) three times
on the same store, with the test-only stage log (tasks.common.stage_hook) telling which stage bodies ran.
"""

from __future__ import annotations

import os

import pytest

from .conftest import good_records, tiny_config, write_jsonl

AFTER_PROMPTS = {"prompts", "sample", "claims", "judge", "pairs", "reference", "dpo", "evaluate"}


def _stages(log) -> list[str]:
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.slow
def test_prompt_file_edited_in_place_recomputes_prompts_and_everything_after(prefect_api, tmp_path, tiny_model_dir,
                                                                             monkeypatch):
    from flows.iterate import iterate

    source = write_jsonl(tmp_path / "prompts.jsonl", good_records(4))
    config = tiny_config(tmp_path / "runs", tiny_model_dir, f"prompts.source={source}",
                         run="content-keys")
    log = tmp_path / "stages.log"
    monkeypatch.setenv("RLAIFV_TEST_STAGE_LOG", str(log))
    iterate(config)
    assert AFTER_PROMPTS <= set(_stages(log))

    log.unlink()
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns + 10**10, stat.st_mtime_ns + 10**10))  # touched, not changed
    iterate(config)
    assert _stages(log) == []  # all cache hits

    text = source.read_text()
    source.write_text(text.replace("describe the image .", "describe the photo .", 1))  # edited in place
    iterate(config)
    ran = _stages(log)
    assert AFTER_PROMPTS <= set(ran)
    evaluated = [line.split()[1] for line in log.read_text().splitlines() if line.startswith("evaluate ")]
    assert evaluated and not any(path.startswith("iter-0/") for path in evaluated)  # the start does not see prompts
