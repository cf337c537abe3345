"""Shared fixtures: tiny random-init LLaVA models built in code (seconds), offline settings."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from rlaifv_core.backends.hf import HFBackend
from rlaifv_core.shapes.models import ModelSize, build_model, build_processor

TINY = ModelSize(text_hidden=32, text_layers=2, text_heads=2, vision_hidden=32, vision_layers=1, vision_heads=2)


def _save_tiny(path, seed: int, edit=None):
    """Build the TINY LLaVA with `seed`, let `edit(model, processor)` change it (if given), and save it
    (and its processor) to `path`; returns `path`."""
    processor = build_processor()
    model = build_model(processor, TINY, seed=seed)
    if edit is not None:
        edit(model, processor)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny LLaVA saved with save_pretrained (safetensors), reloadable through the Auto classes."""
    return _save_tiny(tmp_path_factory.mktemp("tiny-llava"), seed=0)


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory):
    """A second tiny model (another seed): a reference that differs from the starting policy."""
    return _save_tiny(tmp_path_factory.mktemp("tiny-llava-other"), seed=1)


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture()
def logging_handlers_restored():
    """Every logger's handlers as they were before the test. A flow run inside `capfd` lets Prefect
    configure its console handler on pytest's capture file, which is closed after the test: later
    tests then failed with "I/O operation on closed file" when Prefect logged."""
    import logging

    def loggers():
        return [logging.getLogger(), *(value for value in logging.Logger.manager.loggerDict.values()
                                       if isinstance(value, logging.Logger))]

    saved = {logger: list(logger.handlers) for logger in loggers()}
    yield
    for logger in loggers():
        logger.handlers = saved.get(logger, [])


@pytest.fixture()
def tiny_backend(tiny_model_dir):
    from rlaifv_core.config import ModelSpec

    torch.manual_seed(0)
    return HFBackend.from_spec(ModelSpec(name_or_path=str(tiny_model_dir), batch_size=8))
