"""Reference log-probs of every pair, computed once per iteration exactly as TRL would compute them live.

    from rlaifv_core.training import compute_reference_logps
    ref = compute_reference_logps("runs/…/policy-k-1", pairs, dpo=config.dpo)   # one row per pair

The reference is always explicit (the policy selected at the end of iteration k−1, as a folder or
an already loaded model): TRL's own vision collator, labels and fused LM head, in the training
precision, give summed and per-token log-probs of the chosen and rejected answers.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable

import pandas as pd

from ..config import DPOConfig
from .model_setup import _torch, has_cuda, load_training_model, precision
from .pairs_data import pair_keys, to_trl_dataset
from .trainer import _trl_classes


def compute_reference_logps(reference_model_dir: str | os.PathLike, pairs_frame: pd.DataFrame, *,
                            dpo: DPOConfig | None = None, batch_size: int | None = None,
                            data_root: str | None = None, device: str | None = None,
                            progress: Callable[[int, int], None] | None = None, model=None,
                            processor=None, spec=None) -> pd.DataFrame:
    """Summed and per-token log-probs of every pair's chosen and rejected answer under the reference
    model, computed as TRL's `DPOTrainer.compute_ref_log_probs` does (same collator, labels and fused
    LM head, same precision as training). One row per pair, in order: pair_key, ref_chosen_logps,
    ref_rejected_logps, ref_chosen_token_logps, ref_rejected_token_logps.

    The reference is always explicit: a folder (or an already loaded `model` + `processor`)."""
    torch = _torch()
    from trl.trainer.utils import add_fused_lm_head

    dpo = dpo or DPOConfig()
    batch_size = batch_size or dpo.ref_batch_size
    if model is None:
        model, processor = load_training_model(reference_model_dir, dpo, spec=spec)
    device = torch.device(device or ("cuda" if has_cuda() else "cpu"))
    model.to(device).eval()
    if not getattr(model, "_rlaifv_fused_head", False):
        add_fused_lm_head(model)
        model._rlaifv_fused_head = True
    _, bf16 = precision(dpo)
    Collator = _trl_classes()[0]
    collator = Collator(processor=processor, max_length=None, pad_to_multiple_of=None)
    dataset = to_trl_dataset(pairs_frame, data_root=data_root)
    chosen_sum, rejected_sum, chosen_tok, rejected_tok = [], [], [], []
    total = len(dataset)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if bf16 and device.type == "cuda"
                else contextlib.nullcontext())
    for start in range(0, total, batch_size):
        batch = collator([dataset[i] for i in range(start, min(start + batch_size, total))])
        batch = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}
        completion_mask = batch.pop("completion_mask")
        labels = batch["input_ids"].masked_fill(completion_mask == 0, -100)
        with torch.no_grad(), autocast:
            per_token = model(**batch, use_cache=False, labels=labels, fused_lm_head=True).log_probs
        shift_mask = completion_mask[..., 1:]
        per_token = per_token[:, -shift_mask.size(1):].float()
        sums = per_token.sum(dim=1).cpu()
        half = sums.shape[0] // 2
        chosen_sum.extend(sums[:half].tolist())
        rejected_sum.extend(sums[half:].tolist())
        tokens = [row[mask.bool()].cpu().tolist() for row, mask in zip(per_token, shift_mask)]
        chosen_tok.extend(tokens[:half])
        rejected_tok.extend(tokens[half:])
        if progress:
            progress(min(start + batch_size, total), total)
    return pd.DataFrame({
        "pair_key": pair_keys(pairs_frame, data_root),
        "ref_chosen_logps": chosen_sum,
        "ref_rejected_logps": rejected_sum,
        "ref_chosen_token_logps": chosen_tok,
        "ref_rejected_token_logps": rejected_tok,
    })
