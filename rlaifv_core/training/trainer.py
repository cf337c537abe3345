"""TRL's DPOTrainer with an explicit reference, and checkpoint weights loaded through the model's own key mapping.

    from rlaifv_core.training import RLAIFVDPOTrainer      # imports TRL on first use
    trainer = RLAIFVDPOTrainer(model=model, args=trl_args, train_dataset=dataset, processing_class=processor)

Reference log-probs are computed once per iteration (`reference.py`) and read from the batch:
`RLAIFVDPOTrainer` enables TRL's precomputed-reference mode, which TRL refuses to *build* for
vision data, by re-enabling the flag in `create_accelerator_and_postprocess` (the hook that runs
between TRL's vision check and its reference-model decision) and by answering TRL's
`_precompute_ref_logps` hook with the cached columns; while the trainer is built, TRL's fallback
loader (`create_model_from_path(config._name_or_path)`, which TRL still takes under FSDP) is
disarmed. No reference model is loaded or held while training: the process holds one model.

transformers 5 saves LLaVA-style checkpoints in their legacy key layout, and `Trainer`'s resume
loads them raw (strict=False), silently keeping the initial weights; the trainer resumes through
the model's own key mapping instead (`load_checkpoint_weights`).

These are TRL and transformers internals: pyproject.toml pins both to the tested minor version
and `tests/test_library_canary.py` fails, naming the hook, when one of them changes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path

from .model_setup import _torch
from .pairs_data import REF_COLUMNS

log = logging.getLogger(__name__)
_GUARD_LOCK = threading.Lock()


def _trl_classes():
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference, DPOTrainer

    return DataCollatorForVisionPreference, DPOTrainer


def _make_classes():
    DataCollatorForVisionPreference, DPOTrainer = _trl_classes()
    from dataclasses import dataclass

    torch = _torch()

    @dataclass
    class ReferenceLogpsVisionCollator(DataCollatorForVisionPreference):
        """TRL's vision preference collator, passing `ref_chosen_logps`/`ref_rejected_logps` through
        (TRL's text collator does; its vision collator drops them)."""

        def torch_call(self, examples):
            refs = {c: [ex[c] for ex in examples] for c in REF_COLUMNS if c in examples[0]}
            examples = [{k: v for k, v in ex.items() if k not in REF_COLUMNS} for ex in examples]
            output = super().torch_call(examples)
            for column, values in refs.items():
                output[column] = torch.tensor(values, dtype=torch.float32)
            return output

    class RLAIFVDPOTrainer(DPOTrainer):
        """TRL's DPOTrainer with an explicit reference: either cached reference log-probs in the
        dataset (`ref_chosen_logps`/`ref_rejected_logps`; no reference model loaded or held) or an
        explicit `ref_model`. TRL's fallback of loading `config._name_or_path` is never used."""

        def __init__(self, model, ref_model=None, args=None, train_dataset=None, processing_class=None,
                     peft_config=None, callbacks=None, data_collator=None, **kwargs):
            if train_dataset is None or args is None or processing_class is None:
                raise ValueError("model, args, train_dataset and processing_class are required")
            columns = set(train_dataset.column_names)
            self._cached_reference = set(REF_COLUMNS) <= columns
            if self._cached_reference and ref_model is not None:
                raise ValueError("pass either cached reference log-probs or a ref_model, not both")
            if not self._cached_reference and ref_model is None:
                raise ValueError("the reference must be explicit: cached reference log-probs in the dataset "
                                 "(compute_reference_logps) or a ref_model — never TRL's config._name_or_path reload")
            if data_collator is None:
                data_collator = ReferenceLogpsVisionCollator(processor=processing_class, max_length=args.max_length,
                                                             pad_to_multiple_of=args.pad_to_multiple_of)
            if self._cached_reference:
                # TRL refuses to *compute* reference log-probs for vision data; ours come precomputed.
                # The flag is off for that check and back on (create_accelerator_and_postprocess) before
                # TRL decides whether it needs a reference model.
                args.precompute_ref_log_probs = False
            with _no_reference_loading(self._cached_reference):
                super().__init__(model=model, ref_model=ref_model, args=args, train_dataset=train_dataset,
                                 processing_class=processing_class, peft_config=peft_config, callbacks=callbacks,
                                 data_collator=data_collator, **kwargs)
            if self._cached_reference:
                self.precompute_ref_logps = True
                if self.ref_model is not None:
                    raise RuntimeError("a reference model was loaded although the reference log-probs are cached")

        def create_accelerator_and_postprocess(self):
            super().create_accelerator_and_postprocess()
            if self._cached_reference:
                self.args.precompute_ref_log_probs = True

        def _precompute_ref_logps(self, dataset, name, batch_size):
            if not self._cached_reference:
                return super()._precompute_ref_logps(dataset, name, batch_size)
            missing = set(REF_COLUMNS) - set(dataset.column_names)
            if missing:
                raise ValueError(f"{name} dataset lacks cached reference log-probs {sorted(missing)}")
            return dataset

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            # transformers 5 saves checkpoints in the original (legacy) key layout and maps the keys back
            # in `from_pretrained`; `Trainer._load_from_checkpoint` loads the raw file with strict=False and
            # so silently resumes renamed models (LLaVA …) from their *initial* weights. Load through the
            # model's own key mapping instead (PEFT adapters, FSDP and DeepSpeed keep Trainer's path).
            from accelerate.utils import is_peft_model

            target = self.accelerator.unwrap_model(model if model is not None else self.model)
            folder = Path(resume_from_checkpoint)
            plain = (folder / "model.safetensors").exists() or (folder / "model.safetensors.index.json").exists()
            if is_peft_model(target) or self.is_fsdp_enabled or self.is_deepspeed_enabled or not plain:
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            load_checkpoint_weights(target, folder)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            for column in REF_COLUMNS:
                if column not in self._signature_columns:
                    self._signature_columns.append(column)

    for cls in (ReferenceLogpsVisionCollator, RLAIFVDPOTrainer):
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
    return ReferenceLogpsVisionCollator, RLAIFVDPOTrainer


def load_checkpoint_weights(model, folder: str | os.PathLike) -> None:
    """Load a `save_pretrained` safetensors folder into `model` in place, renaming keys as
    `from_pretrained` does; every parameter must be covered (tied copies aside)."""
    from safetensors.torch import load_file
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    files = (sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists()
             else ["model.safetensors"])
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    expected = model.state_dict()
    if converters:  # fused/split tensors: let from_pretrained convert them (a transient second copy)
        log.info("checkpoint needs weight converters: loading it through from_pretrained")
        fresh = type(model).from_pretrained(str(folder), dtype=next(model.parameters()).dtype)
        loaded = fresh.state_dict()
    else:
        loaded = {}
        for name in files:
            for key, tensor in load_file(str(folder / name)).items():
                loaded[rename_source_key(key, renamings, converters, model.base_model_prefix, expected)[0]] = tensor
    missing, unexpected = model.load_state_dict(loaded, strict=False)
    pointers = {k: v.data_ptr() for k, v in expected.items()}
    covered = {pointers[k] for k in loaded if k in pointers}
    missing = [k for k in missing if pointers.get(k) not in covered]
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {folder} does not match the model: missing {missing[:5]}, "
                           f"unexpected {list(unexpected)[:5]}")


@contextlib.contextmanager
def _no_reference_loading(active: bool):
    """While a trainer with cached reference log-probs is built, TRL's reference fallback
    (`create_model_from_path(config._name_or_path)`, which TRL still takes under FSDP) loads
    nothing: TRL handles a None reference throughout."""
    if not active:
        yield
        return
    import trl.trainer.dpo_trainer as module

    with _GUARD_LOCK:
        original = module.create_model_from_path

        def refuse(path, *args, **kwargs):
            log.info("reference log-probs are cached: not loading a reference model from %s", path)
            return None

        module.create_model_from_path = refuse
        try:
            yield
        finally:
            module.create_model_from_path = original


_CLASSES: tuple | None = None


def _classes():
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _make_classes()
    return _CLASSES


def __getattr__(name: str):  # lazy: importing this module does not import TRL
    if name == "ReferenceLogpsVisionCollator":
        return _classes()[0]
    if name == "RLAIFVDPOTrainer":
        return _classes()[1]
    raise AttributeError(name)
