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
    config = load_config("configs/llava15-7b.yaml", check_machine=False)
    assert config.models.policy.name_or_path.startswith("llava-hf/")


def test_no_secret_fields():
    names = [name.lower() for name, _ in _fields(RunConfig)]
    assert not [n for n in names if n.endswith(("api_key", "secret", "password", "token"))]


# -- the Prefect run form: choices, bounds, titles, plain help texts ------------------------------------


def _form_schema() -> dict:
    """The parameter schema Prefect builds for the iterate flow (what the UI's run form renders)."""
    from prefect.utilities.callables import parameter_schema

    from flows.iterate import iterate

    return parameter_schema(iterate.fn).model_dump()


def _resolve(schema: dict, node: dict) -> dict:
    for option in node.get("anyOf", [node]):
        if "$ref" in option:
            return schema["definitions"][option["$ref"].rsplit("/", 1)[-1]]
    return node


def test_help_texts_carry_no_markup_the_ui_would_show_raw():
    schema = _form_schema()
    texts = [d.get("description", "") for d in schema["definitions"].values()]
    texts += [p.get("description", "") for d in schema["definitions"].values() for p in d["properties"].values()]
    assert len(texts) > 100 and not [t for t in texts if "`" in t or "**" in t]


def test_every_form_section_has_a_title_in_words():
    schema = _form_schema()
    for name, definition in schema["definitions"].items():
        assert definition["title"] not in schema["definitions"], name  # words, not the class name
        for field, prop in definition["properties"].items():
            section = _resolve(schema, prop)
            if section is not prop:  # a nested section: the form shows the property's title, else the section's
                assert prop.get("title", section["title"]) not in schema["definitions"], (name, field)
    models = schema["definitions"]["ModelsConfig"]["properties"]
    assert [models[k]["title"] for k in ("policy", "labeler")] == ["Policy model", "Labeler model"]


def test_choices_and_bounds_are_in_the_form():
    definitions = _form_schema()["definitions"]
    selection = definitions["SelectionConfig"]["properties"]
    assert "chair_s" in selection["metric"]["enum"] and "shapes.chair_i" in selection["metric"]["enum"]
    assert selection["tie_breaker"]["enum"][0] == "recall"
    assert selection["max_recall_drop"]["minimum"] == 0 and selection["max_recall_drop"]["maximum"] == 1
    sampling = definitions["SamplingConfig"]["properties"]
    assert sampling["n"]["minimum"] == 1 and sampling["top_p"]["exclusiveMinimum"] == 0
    dpo = definitions["DPOConfig"]["properties"]
    assert "cosine" in dpo["lr_scheduler"]["enum"] and "sft" in dpo["loss_type"]["items"]["enum"]
    assert dpo["beta"]["exclusiveMinimum"] == 0


@pytest.mark.parametrize("override, field", [
    ("selection.metric=chairs", "selection.metric"),
    ("selection.tie_breaker=precision", "selection.tie_breaker"),
    ("sampling.n=0", "sampling.n"),
    ("judge.threshold=1.5", "judge.threshold"),
    ("dpo.beta=0", "dpo.beta"),
    ("dpo.loss_type=[sigmoid, dpo]", "dpo.loss_type.1"),
    ("dpo.lr_scheduler=cosine_annealing", "dpo.lr_scheduler"),
    ("iteration.iterations=0", "iteration.iterations"),
    ("models.policy.batch_size=0", "models.policy.batch_size"),
    ("store.run_name=", "store.run_name"),
])
def test_a_bad_value_fails_at_load_naming_the_field(override, field):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as error:
        load_config("configs/shapes.yaml", [override])
    assert [".".join(map(str, e["loc"])) for e in error.value.errors()] == [field]
    assert field in str(error.value)
