"""Library canary: the private / internal APIs of TRL, transformers and accelerate that the trainer
and the HF backend rely on, checked against the installed versions in seconds (no training).

transformers and trl are pinned to the tested minor in pyproject.toml. Before widening a pin,
install the new version and run `pytest -q tests/test_library_canary.py`. A failure names the hook,
what the project expects, what the library has now, and the project file to review.

Every check is a plain function (`check_*`) that raises `CanaryFailure`. It reads the libraries
only, never `rlaifv_core`, so it also runs while the project's own code is broken. The hooks, and
where they are used:

* rlaifv_core/training/trainer.py: `RLAIFVDPOTrainer` overrides `__init__`,
  `create_accelerator_and_postprocess`, `_precompute_ref_logps`, `_load_from_checkpoint` and
  `_set_signature_columns_if_needed`. It sets `precompute_ref_logps`, reads `ref_model`,
  `is_fsdp_enabled` and `is_deepspeed_enabled`, and flips `args.precompute_ref_log_probs` around
  TRL's vision check. While the trainer is built it monkeypatches
  `trl.trainer.dpo_trainer.create_model_from_path`. `ReferenceLogpsVisionCollator` subclasses
  `DataCollatorForVisionPreference`. `load_checkpoint_weights` uses
  `get_model_conversion_mapping`, `WeightRenaming`, `WeightConverter` and `rename_source_key`.
* rlaifv_core/training/reference.py: `add_fused_lm_head` and `model(..., fused_lm_head=True).log_probs`,
  plus TRL's vision collator used on its own (`completion_mask`, chosen rows first).
* rlaifv_core/training/trl_args.py: the TRL `DPOConfig` argument names and their meaning.
* rlaifv_core/training/run.py and rlaifv_core/backends/oom.py: accelerate's
  `should_reduce_batch_size` and `clear_device_cache`.
* rlaifv_core/backends/hf.py: `MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES`, the M-RoPE model types,
  the forward's `cache` / `past_key_values` argument and output, and `Cache.batch_repeat_interleave`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import importlib.metadata
import inspect
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Callable

import pytest

TRAINER = "rlaifv_core/training/trainer.py"
REFERENCE = "rlaifv_core/training/reference.py"
TRL_ARGS = "rlaifv_core/training/trl_args.py"
RUN = "rlaifv_core/training/run.py"
HF_BACKEND = "rlaifv_core/backends/hf.py"
OOM = "rlaifv_core/backends/oom.py"
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


class CanaryFailure(AssertionError):
    """A library hook the project relies on is gone or has changed."""


def _installed(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


REVIEW = "Review that code for the new library version before changing its pin in pyproject.toml."


def _fail(hook: str, *, expected: str, found: str, users: str | tuple[str, ...], advice: str = REVIEW) -> None:
    users = (users,) if isinstance(users, str) else users
    raise CanaryFailure(
        f"library canary: {hook}\n"
        f"  expected: {expected}\n"
        f"  found:    {found}\n"
        f"  relied on by: {', '.join(users)}\n"
        f"  installed: trl {_installed('trl')}, transformers {_installed('transformers')}, "
        f"accelerate {_installed('accelerate')}\n"
        f"  {advice}"
    )


def _resolve(dotted: str, users) -> object:
    """`pkg.module.attr.attr`: import the longest module prefix, then getattr the rest."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for i, attr in enumerate(parts[cut:], start=cut):
            if not hasattr(obj, attr):
                _fail(dotted, expected=f"`{attr}` on {'.'.join(parts[:i])}",
                      found=f"no attribute `{attr}` (has: {_similar(obj, attr)})", users=users)
            obj = getattr(obj, attr)
        return obj
    _fail(dotted, expected=f"importable module {parts[0]}", found="ImportError", users=users)


def _similar(obj, name: str) -> str:
    words = set(re.findall(r"[a-z]+", name.lower())) - {"", "self"}
    near = sorted(a for a in dir(obj) if words & set(re.findall(r"[a-z]+", a.lower())))
    return ", ".join(near[:12]) or "nothing similar"


def _params(func) -> list[inspect.Parameter]:
    return list(inspect.signature(func).parameters.values())


def _describe(func) -> str:
    return f"({', '.join(str(p) for p in _params(func))})".replace("\n", " ")


def _expect_params(hook: str, func, expected: list[str], users, *, exact: bool = False,
                   defaults: dict | None = None) -> None:
    """The leading parameters of `func` are named `expected`, in that order (all of them when `exact`),
    with the given default values."""
    names = [p.name for p in _params(func)]
    ok = names == expected if exact else names[:len(expected)] == expected
    if ok and defaults:
        params = inspect.signature(func).parameters
        ok = all(params[name].default == value for name, value in defaults.items())
    if not ok:
        want = ", ".join(f"{n}={defaults[n]!r}" if defaults and n in defaults else n for n in expected)
        _fail(hook, expected=f"({want}{'' if exact else ', ...'})", found=_describe(func), users=users)


def _expect_keywords(hook: str, func, names: list[str], users) -> None:
    """`func` accepts each of `names` as a keyword argument."""
    params = inspect.signature(func).parameters
    missing = [n for n in names if n not in params or params[n].kind is inspect.Parameter.POSITIONAL_ONLY]
    if missing:
        _fail(hook, expected=f"keyword parameters {names}", found=f"missing {missing}; signature {_describe(func)}",
              users=users)


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _expect_source_order(hook: str, func, snippets: list[str], users, why: str) -> None:
    """The snippets occur in the source of `func` in this order (whitespace ignored)."""
    source = _squash(inspect.getsource(func))
    position = 0
    for snippet in snippets:
        found = source.find(_squash(snippet), position)
        if found < 0:
            where = "not at all" if source.find(_squash(snippet)) < 0 else "only before the previous step"
            _fail(hook, expected=f"{why}; in order: " + " -> ".join(f"`{s}`" for s in snippets),
                  found=f"`{snippet}` occurs {where} in {func.__qualname__}", users=users)
        position = found + len(_squash(snippet))


# -- tiny objects built in code (for the few checks that need a forward) -----------------------------------
WORDS = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "user", "assistant", ":", "what", "is", "it", "?",
         "a", "red", "blue", "square", "circle", "."]
# the shapes world's template: a plain LLaVA-style user/assistant turn with an <image> placeholder
from rlaifv_core.shapes.models import CHAT_TEMPLATE  # noqa: E402

IMAGE_SIZE, PATCH = 8, 4  # 4 image tokens


@functools.lru_cache(maxsize=None)
def tiny_processor():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPImageProcessorPil, LlavaProcessor, PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>",
                                        bos_token="<s>", eos_token="</s>",
                                        extra_special_tokens={"image_token": "<image>"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE,
                          patch_size=PATCH, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1, image_token="<image>")


def tiny_llava():
    """A fresh ~20k-parameter LlavaForConditionalGeneration (the architecture of the shapes world and LLaVA-1.5)."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    text = LlamaConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                       pad_token_id=0, bos_token_id=2, eos_token_id=3, tie_word_embeddings=False)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=16)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=WORDS.index("<image>"),
                         vision_feature_select_strategy="default", vision_feature_layer=-1,
                         image_seq_length=(IMAGE_SIZE // PATCH) ** 2)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(config).eval()


def _tiny_batch(batch: int = 2, length: int = 6):
    import torch

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, len(WORDS), (batch, length), generator=generator)
    return ids, torch.ones_like(ids)


# -- TRL: DPOTrainer hooks (rlaifv_core/training/trainer.py) -----------------------------------------------
def check_create_model_from_path() -> None:
    hook = "trl.trainer.dpo_trainer.create_model_from_path"
    module = importlib.import_module("trl.trainer.dpo_trainer")
    func = _resolve(hook, TRAINER)
    _expect_params(hook, func, ["model_id"], TRAINER)
    trainer_init = module.DPOTrainer.__init__
    if trainer_init.__globals__ is not vars(module) or "create_model_from_path" not in trainer_init.__code__.co_names:
        _fail(hook, expected="DPOTrainer.__init__ looks up `create_model_from_path` as a global of "
                             "trl.trainer.dpo_trainer (so patching that module attribute disarms the reference reload)",
              found="DPOTrainer.__init__ does not reference the module-level name", users=TRAINER)
    _expect_source_order(hook, trainer_init,
                         ["if ref_model is None:", "ref_model_path = get_config_model_id(self.model.config)",
                          "self.ref_model = create_model_from_path(ref_model_path"], TRAINER,
                         "the fallback reference comes from create_model_from_path(config._name_or_path) and is "
                         "stored as self.ref_model (the patch returns None)")


def check_dpo_trainer_init() -> None:
    hook = "trl.trainer.dpo_trainer.DPOTrainer.__init__"
    func = _resolve(hook, TRAINER)
    _expect_params(hook, func, ["self", "model", "ref_model", "args"], TRAINER)
    _expect_keywords(hook, func, ["model", "ref_model", "args", "data_collator", "train_dataset", "processing_class",
                                  "callbacks", "peft_config"], TRAINER)


def check_precompute_flag_order() -> None:
    """The cached-reference trick: the flag is off for TRL's vision check, back on (our
    create_accelerator_and_postprocess, called from Trainer.__init__) for the reference decision."""
    hook = "DPOTrainer.__init__ order: vision check / Trainer.__init__ / reference decision / _precompute_ref_logps"
    from transformers import Trainer
    from trl.trainer.dpo_trainer import DPOTrainer

    _expect_source_order(hook, DPOTrainer.__init__, [
        "if self._is_vision_dataset and args.precompute_ref_log_probs:",
        "self.precompute_ref_logps = args.precompute_ref_log_probs",
        "super().__init__(",
        "if is_peft_model(self.model) or (args.precompute_ref_log_probs and not self.is_fsdp_enabled):",
        "self.ref_model = None",
        "if args.precompute_ref_log_probs:",
        "self.train_dataset = self._precompute_ref_logps(",
    ], TRAINER, "TRL refuses precompute_ref_log_probs for vision data before Trainer.__init__ and decides on the "
                "reference model after it, then calls self._precompute_ref_logps(dataset, name, batch_size)")
    _expect_source_order(hook, Trainer.__init__, ["self.args = args", "self.create_accelerator_and_postprocess()"],
                         TRAINER, "Trainer.__init__ calls self.create_accelerator_and_postprocess() after storing args")


def check_create_accelerator_and_postprocess() -> None:
    hook = "DPOTrainer.create_accelerator_and_postprocess"
    func = _resolve(f"trl.trainer.dpo_trainer.{hook}", TRAINER)
    _expect_params(hook, func, ["self"], TRAINER, exact=True)
    _expect_source_order("is_deepspeed_enabled / is_fsdp_enabled", func,
                         ["self.is_deepspeed_enabled =", "self.is_fsdp_enabled ="], TRAINER,
                         "the Trainer attributes are set in create_accelerator_and_postprocess")


def check_precompute_ref_logps() -> None:
    hook = "DPOTrainer._precompute_ref_logps"
    func = _resolve(f"trl.trainer.dpo_trainer.{hook}", TRAINER)
    _expect_params(hook, func, ["self", "dataset", "name", "batch_size"], TRAINER, exact=True)


def check_precomputed_columns_read() -> None:
    hook = "DPOTrainer._compute_loss reads precomputed reference log-probs"
    from trl.trainer.dpo_trainer import DPOTrainer

    if not hasattr(DPOTrainer, "_compute_loss"):
        _fail(hook, expected="DPOTrainer._compute_loss", found=f"none (has: {_similar(DPOTrainer, 'compute_loss')})",
              users=TRAINER)
    _expect_source_order(hook, DPOTrainer._compute_loss, [
        'inputs["completion_mask"]',
        "if self.precompute_ref_logps:",
        'inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]',
    ], TRAINER, "with self.precompute_ref_logps the loss takes ref_chosen_logps / ref_rejected_logps from the batch")


def check_signature_columns() -> None:
    hook = "DPOTrainer._set_signature_columns_if_needed / _signature_columns"
    from transformers import Trainer
    from trl.trainer.dpo_trainer import DPOTrainer

    func = _resolve("trl.trainer.dpo_trainer.DPOTrainer._set_signature_columns_if_needed", TRAINER)
    _expect_params(hook, func, ["self"], TRAINER, exact=True)
    _expect_source_order(hook, Trainer.__init__, ["self._signature_columns = None"], TRAINER,
                         "Trainer.__init__ initialises self._signature_columns to None")
    _expect_source_order(hook, DPOTrainer._set_signature_columns_if_needed,
                         ["if self._signature_columns is None:", "if self._is_vision_dataset:",
                          "self._signature_columns = ["], TRAINER,
                         "TRL fills self._signature_columns with a list (appended to by the override)")


def check_load_from_checkpoint() -> None:
    hook = "transformers.Trainer._load_from_checkpoint"
    func = _resolve(hook, TRAINER)
    _expect_params(hook, func, ["self", "resume_from_checkpoint", "model"], TRAINER, exact=True,
                   defaults={"model": None})
    from transformers import Trainer
    from trl.trainer.dpo_trainer import DPOTrainer

    if DPOTrainer._load_from_checkpoint is not Trainer._load_from_checkpoint:
        _expect_params("DPOTrainer._load_from_checkpoint", DPOTrainer._load_from_checkpoint,
                       ["self", "resume_from_checkpoint", "model"], TRAINER, exact=True, defaults={"model": None})
    _expect_source_order(hook, Trainer.train, ["self._load_from_checkpoint(resume_from_checkpoint)"], TRAINER,
                         "Trainer.train resumes the weights through self._load_from_checkpoint")


def check_dpo_config_fields() -> None:
    hook = "trl.DPOConfig fields"
    from trl import DPOConfig

    fields = {f.name: f for f in dataclasses.fields(DPOConfig)}
    wanted = ["output_dir", "beta", "loss_type", "loss_weights", "learning_rate", "lr_scheduler_type",
              "warmup_steps", "weight_decay", "optim", "num_train_epochs", "max_steps",
              "per_device_train_batch_size", "gradient_accumulation_steps", "save_strategy", "save_steps",
              "logging_steps", "seed", "report_to", "remove_unused_columns", "use_cpu", "bf16",
              "activation_checkpointing", "max_length", "pad_to_multiple_of", "dataloader_num_workers",
              "disable_tqdm", "precompute_ref_log_probs"]
    missing = [name for name in wanted if name not in fields]
    if missing:
        _fail(hook, expected=f"DPOConfig fields {wanted}",
              found=f"missing {missing} (similar: {[n for n in fields if any(m.split('_')[0] in n for m in missing)]})",
              users=(TRL_ARGS, TRAINER))


def check_dpo_config_semantics() -> None:
    """A DPOConfig built as trl_args.build_trl_config builds it means what the recipe says."""
    hook = "trl.DPOConfig(...) values"
    import torch
    from accelerate.state import AcceleratorState, PartialState
    from trl import DPOConfig

    saved = dict(PartialState._shared_state), dict(AcceleratorState._shared_state)
    try:  # building TrainingArguments initialises accelerate's process state; put it back afterwards
        with tempfile.TemporaryDirectory() as out:
            config = DPOConfig(output_dir=out, beta=0.1, loss_type=["sigmoid"], loss_weights=None,
                               lr_scheduler_type="cosine", warmup_steps=0.05, weight_decay=0.01, optim="adamw_torch",
                               save_strategy="steps", save_steps=3, report_to="none", remove_unused_columns=False,
                               use_cpu=not torch.cuda.is_available(), activation_checkpointing=False,
                               max_length=None, pad_to_multiple_of=None, disable_tqdm=True)
    finally:
        for state, before in zip((PartialState._shared_state, AcceleratorState._shared_state), saved):
            state.clear()
            state.update(before)
    checks = {
        "warmup_steps=0.05 is a ratio: get_warmup_steps(100) == 5": lambda: config.get_warmup_steps(100) == 5,
        "activation_checkpointing=False wins over TRL's gradient_checkpointing=True default":
            lambda: config.activation_checkpointing is False and config.gradient_checkpointing is False,
        "loss_type stays the list ['sigmoid']": lambda: config.loss_type == ["sigmoid"],
        "max_length=None and pad_to_multiple_of=None are kept": lambda: config.max_length is None
            and config.pad_to_multiple_of is None,
        "precompute_ref_log_probs defaults to False": lambda: config.precompute_ref_log_probs is False,
    }
    for expectation, holds in checks.items():
        if not holds():
            _fail(hook, expected=expectation,
                  found=f"warmup_steps={config.warmup_steps!r} (get_warmup_steps(100)={config.get_warmup_steps(100)}), "
                        f"activation_checkpointing={config.activation_checkpointing!r}, "
                        f"gradient_checkpointing={config.gradient_checkpointing!r}, loss_type={config.loss_type!r}, "
                        f"max_length={config.max_length!r}, pad_to_multiple_of={config.pad_to_multiple_of!r}, "
                        f"precompute_ref_log_probs={config.precompute_ref_log_probs!r}", users=TRL_ARGS)


# -- TRL: the vision collator (trainer.py subclasses it, reference.py uses it) -------------------------------
def check_vision_collator_api() -> None:
    hook = "trl.trainer.dpo_trainer.DataCollatorForVisionPreference"
    cls = _resolve(hook, (TRAINER, REFERENCE))
    if not dataclasses.is_dataclass(cls):
        _fail(hook, expected="a dataclass (the subclass is decorated with @dataclass)", found=repr(cls),
              users=TRAINER)
    fields = [f.name for f in dataclasses.fields(cls)]
    if fields[:3] != ["processor", "max_length", "pad_to_multiple_of"]:
        _fail(hook, expected="fields (processor, max_length, pad_to_multiple_of, ...)", found=f"fields {fields}",
              users=(TRAINER, REFERENCE))
    _expect_params(f"{hook}.torch_call", cls.torch_call, ["self", "examples"], TRAINER, exact=True)


def check_vision_collator_output() -> None:
    """Output keys and row order that reference.py relies on: `completion_mask`, chosen rows then rejected rows."""
    hook = "DataCollatorForVisionPreference(...)(examples) output"
    from PIL import Image
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    processor = tiny_processor()
    examples = [{"prompt": [{"role": "user", "content": "what is it ?"}],
                 "chosen": [{"role": "assistant", "content": "a red square ."}],
                 "rejected": [{"role": "assistant", "content": "a blue circle ."}],
                 "images": [Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), color)]}
                for color in ("red", "blue")]
    collator = DataCollatorForVisionPreference(processor=processor, max_length=None, pad_to_multiple_of=None)
    output = collator([dict(example) for example in examples])
    missing = [key for key in ("input_ids", "attention_mask", "pixel_values", "completion_mask") if key not in output]
    if missing:
        _fail(hook, expected="keys input_ids, attention_mask, pixel_values, completion_mask",
              found=f"keys {sorted(output)}", users=REFERENCE)
    rows = output["input_ids"].shape[0]
    completions = [processor.tokenizer.decode(ids[mask.bool()], skip_special_tokens=True).split()
                   for ids, mask in zip(output["input_ids"], output["completion_mask"])]
    texts = [" ".join(words) for words in completions]
    want = ["a red square .", "a red square .", "a blue circle .", "a blue circle ."]
    if rows != 4 or texts != want:
        _fail(hook, expected=f"2×batch rows, chosen first then rejected: completions {want}",
              found=f"{rows} rows, completions {texts}", users=REFERENCE)


def check_fused_lm_head() -> None:
    hook = "trl.trainer.utils.add_fused_lm_head + forward(fused_lm_head=True).log_probs"
    add_fused_lm_head = _resolve("trl.trainer.utils.add_fused_lm_head", REFERENCE)
    _expect_params("trl.trainer.utils.add_fused_lm_head", add_fused_lm_head, ["model"], REFERENCE)
    import torch

    model = tiny_llava()
    add_fused_lm_head(model)
    ids, mask = _tiny_batch()
    labels = ids.masked_fill(torch.arange(ids.shape[1])[None, :] < 3, -100)
    try:
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, use_cache=False, labels=labels, fused_lm_head=True)
    except TypeError as error:
        _fail(hook, expected="model(..., labels=..., fused_lm_head=True) after add_fused_lm_head(model)",
              found=f"TypeError: {error}", users=REFERENCE)
    log_probs = getattr(out, "log_probs", None)
    shape = tuple(ids.shape[0:1]) + (ids.shape[1] - 1,)
    if log_probs is None or tuple(log_probs.shape) != shape:
        _fail(hook, expected=f"an output with .log_probs of shape {shape} (per shifted token)",
              found=f"{type(out).__name__} with log_probs "
                    f"{None if log_probs is None else tuple(log_probs.shape)}", users=REFERENCE)


# -- transformers: checkpoint key mapping (trainer.py load_checkpoint_weights) ---------------------------------
def check_conversion_mapping_api() -> None:
    users = TRAINER
    get_mapping = _resolve("transformers.conversion_mapping.get_model_conversion_mapping", users)
    _expect_params("transformers.conversion_mapping.get_model_conversion_mapping", get_mapping, ["model"], users)
    for name in ("WeightRenaming", "WeightConverter"):
        if not inspect.isclass(_resolve(f"transformers.core_model_loading.{name}", users)):
            _fail(f"transformers.core_model_loading.{name}", expected="a class", found="not a class", users=users)
    rename = _resolve("transformers.core_model_loading.rename_source_key", users)
    _expect_params("transformers.core_model_loading.rename_source_key", rename,
                   ["source_key", "weight_renamings", "weight_converters", "base_model_prefix", "meta_state_dict"],
                   users)
    result = rename("lm_head.weight", [], [], None, None)
    if not (isinstance(result, tuple) and len(result) == 2 and result[0] == "lm_head.weight"):
        _fail("transformers.core_model_loading.rename_source_key return value",
              expected="a tuple (renamed_key, converter_pattern_or_None); the code takes [0]",
              found=repr(result), users=users)


def check_checkpoint_key_roundtrip() -> None:
    """save_pretrained keys, renamed as load_checkpoint_weights renames them, are exactly the model's keys."""
    hook = "get_model_conversion_mapping + rename_source_key on a saved LLaVA checkpoint"
    from safetensors.torch import load_file
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    model = tiny_llava()
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    expected = model.state_dict()
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, safe_serialization=True)
        saved = load_file(str(Path(folder) / "model.safetensors"))
    renamed = {rename_source_key(key, renamings, converters, model.base_model_prefix, expected)[0] for key in saved}
    missing, unexpected = sorted(set(expected) - renamed), sorted(renamed - set(expected))
    if missing or unexpected:
        _fail(hook, expected="every saved key maps onto model.state_dict() (no converters for LLaVA)",
              found=f"missing {missing[:4]}, unexpected {unexpected[:4]}, saved e.g. {sorted(saved)[:3]}, "
                    f"transforms {[type(t).__name__ for t in transforms]}", users=TRAINER)


# -- transformers: the HF backend (rlaifv_core/backends/hf.py) --------------------------------------------------
def check_image_text_to_text_names() -> None:
    hook = "transformers.models.auto.modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES"
    names = _resolve(hook, HF_BACKEND)
    found = {t: (t in names) for t in ("llava", "qwen2_vl", "llama")} if hasattr(names, "__contains__") else names
    if found != {"llava": True, "qwen2_vl": True, "llama": False}:
        _fail(hook, expected="a mapping keyed by model_type: contains 'llava' and 'qwen2_vl', not 'llama'",
              found=repr(found), users=HF_BACKEND)


def check_mrope_model_types() -> None:
    hook = "model types of HFBackend's _MROPE_TYPES"
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    mrope = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "glm4v"]
    unknown = [t for t in mrope if t not in CONFIG_MAPPING_NAMES]
    if unknown:
        _fail(hook, expected=f"known model_type names {mrope}", found=f"unknown now: {unknown}", users=HF_BACKEND)


def check_cache_protocol() -> None:
    """The shared-prefix fast path: the forward takes the cache as `cache` (or `past_key_values`), returns it
    the same way, the cache can be deep-copied, `batch_repeat_interleave(n)`-ed and fed back."""
    hook = "forward cache argument / output / Cache.batch_repeat_interleave"
    import torch

    model = tiny_llava()
    params = inspect.signature(model.forward).parameters
    kwarg = "cache" if "cache" in params else "past_key_values" if "past_key_values" in params else None
    if kwarg is None:
        _fail(hook, expected="LlavaForConditionalGeneration.forward takes `cache` or `past_key_values`",
              found=_describe(model.forward), users=HF_BACKEND)
    ids, mask = _tiny_batch(batch=1)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, use_cache=True)
    cache = getattr(out, "cache", None)
    cache = cache if cache is not None else getattr(out, "past_key_values", None)
    if cache is None:
        _fail(hook, expected="outputs.cache (or outputs.past_key_values) with use_cache=True",
              found=f"{type(out).__name__} keys {list(out.keys())}", users=HF_BACKEND)
    if not callable(getattr(cache, "batch_repeat_interleave", None)):
        _fail(f"{type(cache).__name__}.batch_repeat_interleave", expected="a method batch_repeat_interleave(repeats)",
              found=f"{type(cache).__name__} has: {_similar(cache, 'batch_repeat_interleave')}", users=HF_BACKEND)
    _expect_params(f"{type(cache).__name__}.batch_repeat_interleave", cache.batch_repeat_interleave, ["repeats"],
                   HF_BACKEND)
    cache = copy.deepcopy(cache)
    cache.batch_repeat_interleave(3)
    step = ids[:, -1:].repeat(3, 1)
    with torch.no_grad():
        out = model(input_ids=step, attention_mask=torch.ones(3, ids.shape[1] + 1, dtype=torch.long),
                    position_ids=torch.full((3, 1), ids.shape[1]), use_cache=True, **{kwarg: cache})
    if tuple(out.logits.shape[:2]) != (3, 1):
        _fail(hook, expected=f"a decode step on the repeated cache (via `{kwarg}=`) gives logits (3, 1, vocab)",
              found=f"logits {tuple(out.logits.shape)}", users=HF_BACKEND)


# -- accelerate (training/run.py OOM back-off, backends/oom.py, trainer.py resume) -------------------------------
def check_oom_helpers() -> None:
    users = (RUN, OOM)
    should = _resolve("accelerate.utils.memory.should_reduce_batch_size", users)
    clear = _resolve("accelerate.utils.memory.clear_device_cache", users)
    _expect_params("accelerate.utils.memory.should_reduce_batch_size", should, ["exception"], users, exact=True)
    _expect_keywords("accelerate.utils.memory.clear_device_cache", clear, ["garbage_collection"], users)
    import torch

    verdicts = {"CUDA out of memory. Tried to allocate 2.00 GiB": should(torch.cuda.OutOfMemoryError(
                    "CUDA out of memory. Tried to allocate 2.00 GiB")),
                "DefaultCPUAllocator: can't allocate memory": should(RuntimeError(
                    "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")),
                "ValueError('bad shape')": should(ValueError("bad shape"))}
    if verdicts != {"CUDA out of memory. Tried to allocate 2.00 GiB": True,
                    "DefaultCPUAllocator: can't allocate memory": True, "ValueError('bad shape')": False}:
        _fail("accelerate.utils.memory.should_reduce_batch_size", expected="True for CUDA and CPU OOM, False otherwise",
              found=repr(verdicts), users=users)


def check_is_peft_model() -> None:
    hook = "accelerate.utils.is_peft_model"
    is_peft_model = _resolve(hook, TRAINER)
    import torch

    if is_peft_model(torch.nn.Linear(2, 2)) is not False:
        _fail(hook, expected="is_peft_model(plain nn.Module) is False", found="not False", users=TRAINER)


HOOKS: dict[str, Callable[[], None]] = {
    "create_model_from_path": check_create_model_from_path,
    "DPOTrainer.__init__": check_dpo_trainer_init,
    "precompute_flag_order": check_precompute_flag_order,
    "create_accelerator_and_postprocess": check_create_accelerator_and_postprocess,
    "_precompute_ref_logps": check_precompute_ref_logps,
    "precomputed_columns_read": check_precomputed_columns_read,
    "_set_signature_columns_if_needed": check_signature_columns,
    "_load_from_checkpoint": check_load_from_checkpoint,
    "DPOConfig_fields": check_dpo_config_fields,
    "DPOConfig_semantics": check_dpo_config_semantics,
    "DataCollatorForVisionPreference": check_vision_collator_api,
    "DataCollatorForVisionPreference_output": check_vision_collator_output,
    "add_fused_lm_head": check_fused_lm_head,
    "conversion_mapping_api": check_conversion_mapping_api,
    "checkpoint_key_roundtrip": check_checkpoint_key_roundtrip,
    "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES": check_image_text_to_text_names,
    "mrope_model_types": check_mrope_model_types,
    "cache_protocol": check_cache_protocol,
    "accelerate_oom_helpers": check_oom_helpers,
    "accelerate_is_peft_model": check_is_peft_model,
}


@pytest.mark.parametrize("check", list(HOOKS.values()), ids=list(HOOKS))
def test_library_hook(check: Callable[[], None]) -> None:
    check()


PIN_ADVICE = ("Install the version you mean to allow, run this canary and fix what it reports, then set the pin "
              "to that minor (>=X.Y,<X.Y+1).")


def check_pinned_version(package: str) -> None:
    """The installed version is inside the pyproject pin, and the pin has an upper bound (the canary
    was run for the minor it allows)."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    requirement = next((Requirement(d) for d in dependencies if Requirement(d).name == package), None)
    installed = _installed(package)
    if requirement is None:
        _fail(f"pin of {package}", expected=f"{package} in [project].dependencies", found="no such dependency",
              users="pyproject.toml", advice=PIN_ADVICE)
    if not any(spec.operator in ("<", "<=", "==", "~=") for spec in requirement.specifier):
        _fail(f"pin of {package}", expected="an upper bound on the tested minor (e.g. <X.Y+1)",
              found=str(requirement), users="pyproject.toml", advice=PIN_ADVICE)
    if installed == "not installed" or Version(installed) not in requirement.specifier:
        _fail(f"pin of {package}", expected=f"installed version within {requirement.specifier}",
              found=f"{package} {installed}", users="pyproject.toml", advice=PIN_ADVICE)


@pytest.mark.parametrize("package", ["transformers", "trl"])
def test_installed_versions_within_pins(package: str) -> None:
    check_pinned_version(package)
