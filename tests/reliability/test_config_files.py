"""Config files: a duplicate key or a repeated section, an empty file and a file that is not a mapping are
errors naming the file (and the key and its lines), raised before anything runs, through `load_config` and
the flows' `--config`."""

from __future__ import annotations

import pytest

from flows.cli import parse_config
from rlaifv_core.config import CONFIG_DIR, load_config
from rlaifv_core.config_yaml import ConfigFileError, read_config_file

from .conftest import ROOT


def _write(tmp_path, text, name="run.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("text, key, lines", [
    ("dpo:\n  beta: 0.1\n  epochs: 2\n  beta: 0.5\n", "beta", (2, 4)),  # the later one would win
    ("dpo:\n  beta: 0.5\nsampling:\n  n: 4\ndpo:\n  epochs: 2\n", "dpo", (1, 5)),  # the whole first section lost
    ("store:\n  run_name: a\nstore:\n", "store", (1, 3)),  # an empty repeat: the defaults would return
])
def test_duplicate_keys_and_repeated_sections_are_errors_naming_key_and_lines(tmp_path, text, key, lines):
    path = _write(tmp_path, text)
    for load in (lambda: load_config(path), lambda: parse_config("test", ["--config", str(path)])):
        with pytest.raises(ConfigFileError) as info:
            load()
        message = str(info.value)
        assert str(path) in message and f"duplicate key {key!r}" in message
        assert f"line {lines[1]}" in message and f"first at line {lines[0]}" in message


@pytest.mark.parametrize("text, says", [
    ("", "the config file is empty"),
    ("# only a comment\n\n", "the config file is empty"),
    ("- dpo\n- sampling\n", "must be a YAML mapping of sections, not a list"),
    ("dpo.beta=0.1\n", "must be a YAML mapping of sections, not a str"),
    ("dpo: [1,\n", "not valid YAML"),
])
def test_empty_non_mapping_or_broken_config_file_is_an_error_naming_it(tmp_path, text, says):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigFileError, match=says) as info:
        load_config(path)
    assert str(path) in str(info.value)
    with pytest.raises(ConfigFileError, match=says):
        parse_config("test", ["--config", str(path)])


def test_shipped_configs_and_merge_keys_still_load(tmp_path):
    """The control: every shipped config (and the deployments' prefect.yaml, which uses anchors) reads
    strictly; a key may override what a `<<:` merge brought in."""
    for path in sorted(CONFIG_DIR.glob("*.yaml")) + [ROOT / "deployments" / "prefect.yaml"]:
        assert isinstance(read_config_file(path), dict), path
    merged = _write(tmp_path, "base: &base\n  beta: 0.1\n  epochs: 2\ndpo:\n  <<: *base\n  beta: 0.3\n")
    assert read_config_file(merged)["dpo"] == {"beta": 0.3, "epochs": 2}
    # the 7B defaults' models and benchmark data are not on this machine: the file is what is checked here
    text = "dpo:\n  beta: 0.3\nsampling:\n  n: 2\neval:\n  benchmarks: [shapes]\nselection:\n  metric: shapes.chair_s\n"
    config = load_config(_write(tmp_path, text, "ok.yaml"), check_machine=False)
    assert config.dpo.beta == 0.3 and config.sampling.n == 2
