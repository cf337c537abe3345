"""Degenerate feedback is never a quiet `Completed`: the flows end "Completed with warnings" (flows/outcome.py)."""

from __future__ import annotations

import asyncio

import pytest

from flows.outcome import WARNED, finish, warnings_of
from rlaifv_core.config import load_config
from tests.test_iterate import tiny_overrides


def test_finish_is_the_result_itself_without_warnings_and_a_warned_completed_state_with_them():
    result = {"run": "r"}
    assert finish(result, []) is result
    state = finish(result, ["iteration 1: 0 preference pairs from 4 prompts", "iteration 2: the labeler accepted 9 of 9"])
    assert state.is_completed() and state.name == WARNED
    assert state.message.startswith("2 warnings: iteration 1: 0 preference pairs") and "accepted 9 of 9" in state.message
    assert state.data is result
    assert warnings_of({"pairs": 3}) == [] and warnings_of(None) == [] and warnings_of({"warnings": ["x"]}) == ["x"]


def _flow_runs():
    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            return await client.read_flow_runs()

    return {run.name: run for run in asyncio.run(read())}


@pytest.mark.slow
def test_a_labeler_accepting_everything_ends_the_run_completed_with_warnings(prefect_server, tmp_path, tiny_model_dir):
    from flows.iterate import iterate

    # threshold 0: every claim with P(yes) > 0 is accepted; equal scores make 0 pairs
    config = load_config("configs/shapes.yaml", tiny_overrides(tmp_path / "runs", tiny_model_dir, run="warned")
                         + ["iteration.iterations=1", "judge.threshold=0", "pairs.builder=paper"])
    summary = iterate(config)  # a caller still gets the summary dict
    assert isinstance(summary, dict) and summary["iterations"][1]["pairs"] == 0
    assert any("accepted" in w for w in summary["warnings"]) and any("0 preference pairs" in w for w in summary["warnings"])
    runs = _flow_runs()
    for name in ("warned", "iteration-1", "generate-iter-1"):
        state = runs[name].state
        assert state.is_completed() and state.name == WARNED, (name, state)
        assert "0 preference pairs" in state.message and "the labeler accepted" in state.message, (name, state.message)
    assert runs["warned"].state.message.startswith(f"{len(summary['warnings'])} warnings: iteration 1: ")
    assert runs["evaluate-iter-0"].state.name == "Completed"  # stages without warnings stay plain

    again = iterate(config, return_state=True)  # cached rerun: the same warned state, the summary as its data
    assert again.name == WARNED and again.result()["warnings"] == summary["warnings"]


@pytest.mark.slow
def test_a_discriminating_labeler_leaves_the_generate_run_plainly_completed(prefect_server, tmp_path, tiny_model_dir):
    from flows.generate import GenerateResult, generate

    # a random labeler's P(yes)/(P(yes)+P(no)) sits just above 0.5: 0.508 splits its verdicts (tests/reliability)
    config = load_config("configs/shapes.yaml", tiny_overrides(tmp_path / "runs", tiny_model_dir, run="plain")
                         + ["judge.threshold=0.508", "pairs.builder=paper"])
    state = generate(config, iteration=1, return_state=True)
    result = state.result()
    assert isinstance(result, GenerateResult) and result.pairs.rows > 0 and result.counts["pairs"]["warnings"] == []
    assert state.is_completed() and state.name == "Completed" and not state.message
