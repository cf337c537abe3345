import subprocess
import sys

import pytest
import yaml
from pydantic import BaseModel

from rlaifv_core.config import RunConfig, apply_overrides, dump_config, load_config


def _fields(model_cls, prefix=""):
    for name, field in model_cls.model_fields.items():
        yield f"{prefix}{name}", field
        annotation = field.annotation
        for candidate in getattr(annotation, "__args__", (annotation,)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                yield from _fields(candidate, f"{prefix}{name}.")


def test_every_field_has_help():
    missing = [name for name, field in _fields(RunConfig) if not field.description]
    assert missing == []


def test_defaults_are_the_papers():
    config = RunConfig()
    assert config.sampling.n == 10 and config.sampling.temperature == 0.7 and config.sampling.max_new_tokens == 512
    assert config.dpo.beta == 0.1 and config.dpo.learning_rate == 5e-7 and config.dpo.lora_r == 64
    assert config.pairs.min_gap == 1 and config.pairs.per_prompt == 2
    assert config.iteration.iterations == 4


def test_yaml_round_trip(tmp_path):
    config = load_config("configs/shapes.yaml")
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


def test_overrides_from_command_line():
    config = load_config("configs/shapes.yaml", ["dpo.beta=0.25", "dpo.loss_type=[sigmoid, sft]", "sampling.top_k=null"])
    assert config.dpo.beta == 0.25 and config.dpo.loss_type == ["sigmoid", "sft"] and config.sampling.top_k is None
    out = subprocess.run([sys.executable, "-m", "rlaifv_core.config", "configs/shapes.yaml", "sampling.n=3"],
                         capture_output=True, text=True, check=True).stdout
    assert yaml.safe_load(out)["sampling"]["n"] == 3


def test_bad_override_and_unknown_field_are_clear_errors():
    with pytest.raises(ValueError, match="section.field=value"):
        apply_overrides({}, ["nonsense"])
    with pytest.raises(Exception, match="bogus"):
        load_config("configs/shapes.yaml", ["dpo.bogus=1"])


def test_paper_recipe_config_loads():
    config = load_config("configs/llava15-7b.yaml")
    assert config.models.policy.name_or_path.startswith("llava-hf/")


def test_no_secret_fields():
    names = [name.lower() for name, _ in _fields(RunConfig)]
    assert not [n for n in names if n.endswith(("api_key", "secret", "password", "token"))]
