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
