"""Fail fast: a config with any of these mistakes fails at load, in well under 2 s, naming the field."""

from __future__ import annotations

import time

import pytest

from rlaifv_core.config import load_config
from rlaifv_core.config_checks import ConfigError, config_problems

JUDGE = "models.eval_judge={backend: openai, name_or_path: judge, base_url: 'http://127.0.0.1:9/v1'}"

# (mistake, overrides, the field the error must name); every override list is otherwise valid
MISTAKES = [
    ("no samples", ["sampling.n=0"], "sampling.n"),
    ("negative learning rate", ["dpo.learning_rate=-1e-5"], "dpo.learning_rate"),
    ("warm-up covers every step", ["dpo.warmup_ratio=1.0"], "dpo.warmup_ratio"),
    ("warm-up a constant schedule ignores", ["dpo.lr_scheduler=constant", "dpo.warmup_ratio=0.1"], "dpo.warmup_ratio"),
    ("batch not divisible by grad_accum", ["dpo.batch_size=8", "dpo.grad_accum=3"], "dpo.batch_size"),
    ("batch not divisible by processes", ["dpo.launcher=accelerate", "dpo.num_processes=3", "dpo.batch_size=8"],
     "dpo.batch_size"),
    ("batch vs the accelerate config's processes", ["dpo.launcher=accelerate", "dpo.accelerate_config=ddp",
                                                    "dpo.batch_size=12"], "dpo.batch_size"),
    ("quantization without LoRA", ["dpo.quantization=4bit", "dpo.lora=false"], "dpo.quantization"),
    ("accelerate config under the in-process launcher", ["dpo.accelerate_config=zero2"], "dpo.accelerate_config"),
    ("accelerate config that is no file", ["dpo.launcher=accelerate", "dpo.accelerate_config=zero9"],
     "dpo.accelerate_config"),
    ("loss weights of another length", ["dpo.loss_type=[sigmoid, sft]", "dpo.loss_weights=[1.0]"], "dpo.loss_weights"),
    ("unknown model scheme", ["models.policy.name_or_path=shapez:policy"], "models.policy.name_or_path"),
    ("local model folder that does not exist", ["models.labeler.name_or_path=./no/such/model"],
     "models.labeler.name_or_path"),
    ("rule-based backend as the policy", ["models.policy.backend=rules"], "models.policy.backend"),
    ("openai backend without a server", ["models.labeler.backend=openai"], "models.labeler.base_url"),
    ("unknown benchmark", ["eval.benchmarks=[shapes, halbench]"], "eval.benchmarks"),
    ("benchmark without its data key", ["eval.benchmarks=[shapes, mmhal]", JUDGE], "eval.data.mmhal"),
    ("benchmark data file that does not exist", ["eval.benchmarks=[shapes, mmhal]", JUDGE,
                                                 "eval.data.mmhal=/no/such/mmhal.jsonl"], "eval.data.mmhal"),
    ("judge-scored benchmark without a judge", ["eval.benchmarks=[shapes, mmhal]", "eval.data.mmhal=x.jsonl"],
     "models.eval_judge"),
    ("selection on a benchmark that is not run", ["selection.metric=object_halbench.chair_s"], "selection.metric"),
    ("several answers under greedy decoding", ["eval.temperature=0", "eval.samples_per_prompt=4"],
     "eval.samples_per_prompt"),
    ("prompt file that does not exist", ["prompts.source=/no/such/prompts.jsonl"], "prompts.source"),
    ("unknown prompt source", ["prompts.source=shapez"], "prompts.source"),
    ("unknown pair builder", ["pairs.builder=minimal_edit"], "pairs.builder"),
    ("resample builder with a chat-API policy", ["pairs.builder=resample", "models.policy.backend=openai",
                                                 "models.policy.base_url=http://localhost:1/v1"], "pairs.builder"),
    ("resample with k out of range", ["pairs.builder=resample", "pairs.resample_k=0"], "pairs.resample_k"),
    ("failed continuations without the resample builder", ["pairs.resample_failed_continuations=true"],
     "pairs.resample_failed_continuations"),
]


@pytest.mark.parametrize("overrides,field", [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_a_mistake_fails_at_load_naming_the_field(overrides, field):
    started = time.perf_counter()
    with pytest.raises(ValueError) as caught:  # ConfigError, or pydantic's ValidationError for a range
        load_config("configs/shapes.yaml", overrides)
    assert time.perf_counter() - started < 2.0
    text = str(caught.value)
    if isinstance(caught.value, ConfigError):
        assert field in [f for f, _ in caught.value.problems], text
    else:  # pydantic names the location as section then field on the line before the message
        assert field.replace(".", "\n  ", 1) in text or field in text, text


def test_at_least_ten_kinds_of_mistake_and_the_shipped_configs_pass():
    assert len(MISTAKES) >= 10
    load_config("configs/shapes.yaml")
    assert config_problems(load_config("configs/llava15-7b.yaml", check_machine=False), check_machine=False) == []


def test_every_problem_is_reported_at_once_and_machine_checks_can_be_skipped():
    overrides = ["prompts.source=/no/such/prompts.jsonl", "dpo.grad_accum=3", "eval.benchmarks=[shapes, nope]"]
    with pytest.raises(ConfigError) as caught:
        load_config("configs/shapes.yaml", overrides)
    assert {f for f, _ in caught.value.problems} == {"prompts.source", "dpo.batch_size", "eval.benchmarks"}
    with pytest.raises(ConfigError) as caught:  # the file check is the machine's: skipped, the rest stays
        load_config("configs/shapes.yaml", overrides, check_machine=False)
    assert {f for f, _ in caught.value.problems} == {"dpo.batch_size", "eval.benchmarks"}


def test_the_iterate_flow_checks_a_config_that_never_went_through_load_config(tmp_path):
    from flows.iterate import _iterate
    from rlaifv_core.config import RunConfig

    config = RunConfig.model_validate(load_config("configs/shapes.yaml", [f"store.url={tmp_path / 'runs'}"])
                                      .model_dump(mode="json"))
    config.dpo.grad_accum = 3  # as a run form could send it
    with pytest.raises(ConfigError, match="dpo.batch_size"):
        _iterate(config)
    assert not (tmp_path / "runs").exists()  # nothing ran, nothing was written
