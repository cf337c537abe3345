"""pytest fixtures of the zoo: each replica built once per session (vocabularies cached across sessions).

    from tests.zoo.fixtures import zoo      # in a test module; then:
    def test_x(zoo): folder = zoo("qwen2_vl")

Skips (saying why) only when the real vocabularies cannot be fetched (PyPI unreachable).
"""

from __future__ import annotations

import pytest

from .builders import build
from .vocab import VocabUnavailable


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    built: dict[tuple[str, int], object] = {}
    root = tmp_path_factory.mktemp("zoo")

    def get(name: str, seed: int = 0):
        key = (name, seed)
        if key not in built:
            try:
                built[key] = build(name, root / f"{name}-{seed}", seed=seed)
            except VocabUnavailable as error:
                pytest.skip(f"real vocabularies unavailable: {error}")
        return built[key]

    return get
