"""Out-of-memory back-off: the batch halves, the log says so, and the work completes."""

import logging

import pytest
import torch

from rlaifv_core.backends.base import GenerationSettings, VisualPrompt
from rlaifv_core.backends.oom import run_with_oom_backoff
from rlaifv_core.shapes.world import ShapesWorld


def test_simulated_oom_in_sampling_halves_batch_and_completes(tiny_backend, monkeypatch, caplog):
    real = tiny_backend._sample_chunk
    seen = []

    def oom_when_big(prompts, seeds, settings):
        seen.append(len(prompts) * settings.n)
        if len(prompts) * settings.n > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return real(prompts, seeds, settings)

    monkeypatch.setattr(tiny_backend, "_sample_chunk", oom_when_big)
    tiny_backend.batch_size = 8
    prompts = [VisualPrompt(ShapesWorld().scene(i).render(), "describe the image .") for i in range(3)]
    settings = GenerationSettings(n=2, temperature=1.0, max_new_tokens=4)
    with caplog.at_level(logging.WARNING):
        answers = run_with_oom_backoff(tiny_backend, lambda: tiny_backend.generate(prompts, settings, seeds=[1, 2, 3]))
    assert len(answers) == 3 and all(len(a) == 2 for a in answers)
    assert tiny_backend.batch_size == 4
    assert "batch size halved to 4" in caplog.text


def test_other_errors_are_not_swallowed(tiny_backend):
    def broken():
        raise ValueError("not memory")

    with pytest.raises(ValueError, match="not memory"):
        run_with_oom_backoff(tiny_backend, broken)


def test_world_size_is_read_from_the_launchers_environment(monkeypatch):
    from rlaifv_core.backends import oom

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert oom.world_size() == 1
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert oom.world_size() == 8


@pytest.mark.parametrize("ranks", [1, 2])
def test_dpo_oom_backs_off_alone_but_is_refused_under_a_multi_process_launch(tiny_model_dir, tmp_path, monkeypatch,
                                                                             caplog, ranks):
    """One rank halving its batch alone would leave the others waiting forever in the next
    collective: under WORLD_SIZE > 1 the OOM is an error that says what to set instead."""
    from rlaifv_core import training as D
    from rlaifv_core.backends import oom
    from rlaifv_core.training import trainer as trainer_module
    from test_dpo import _fast, _job, make_pairs

    pairs = make_pairs(4)
    ref = D.compute_reference_logps(tiny_model_dir, pairs, dpo=_fast(), batch_size=4)
    attempts = []

    def out_of_memory(self, *args, **kwargs):
        attempts.append(self.args.per_device_train_batch_size)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")

    monkeypatch.setattr(trainer_module._classes()[1], "train", out_of_memory)
    monkeypatch.setattr(oom, "world_size", lambda: ranks)
    job = _job(tiny_model_dir, tmp_path / "out", _fast(batch_size=4))
    if ranks == 1:
        with caplog.at_level(logging.INFO), pytest.raises(torch.OutOfMemoryError):
            D.train(job, pairs=pairs, ref_logps=ref, log_fn=logging.getLogger("t").info)
        assert attempts == [4, 2, 1]  # halved until one pair per step, then the OOM stands
        assert "per-device batch halved to 2 (gradient accumulation 2)" in caplog.text
    else:
        with pytest.raises(oom.MultiProcessOOM, match=r"WORLD_SIZE=2.*set dpo.grad_accum=2 \(a per-device batch of 2"):
            D.train(job, pairs=pairs, ref_logps=ref)
        assert attempts == [4]  # no rank retried on its own
