"""A LLaVA-1.5-7B-shaped model through one short iteration on one device: peak memory and throughput per stage.

    python bench/rehearsal_7b.py                              # full size, one GPU (bf16); ~14 GB of weights
    python bench/rehearsal_7b.py --width reduced              # same code path, a few layers, small width (CPU, < 5 min)
    python bench/rehearsal_7b.py --out bench/results/rehearsal_7b_gpu.json

The model has LLaVA-1.5-7B's configuration numbers (llava-hf/llava-1.5-7b-hf): a CLIP ViT-L/14 tower at
336 px (24 layers, 1024 wide, 576 image tokens, features of layer -2), a 2-layer GELU projector and a
32-layer, 4096-wide Llama (11008 MLP, 32 heads, vocabulary 32064), with random weights in bf16 (the
CPU's reduced width runs in float32). Prompts are random token ids around 576 image tokens and random
pixels, so the script needs no download: torch, transformers, peft only, and no Prefect, TRL or datasets
(the GPU machine has none of them). The stages follow the pipeline's iteration (docs/method.md), each
holding only the model it needs and freeing it at its end (the memory left behind is printed):

1. sampling     `--prompts` prompts, `--n` samples each at T 0.7, top-k 50 (`generate`, KV cache);
2. reference    summed answer log-probs of every pair under the reference (the policy as sampled), once;
3. dpo_full     `--dpo-steps` sigmoid-DPO steps (β 0.1, docs/method.md §7) of full fine-tuning: vision tower
                frozen, language model + projector train, AdamW in bf16, gradient checkpointing;
4. dpo_lora     the same steps with LoRA (r 64, α 16) on every linear layer of the language model;
5. evaluation   beam search (`--beams` 3, as configs/llava15-7b.yaml) on `--eval-prompts` prompts.

Pairs are the n samples of a prompt taken two by two (chosen, rejected), so the reference is exact: at
DPO's first step the policy equals the reference and the loss is ln 2 — the script checks it, which
proves the reference pass and the training forward compute the same numbers. Weights are re-created from
the same seed in every stage (the reference is the sampled policy without a copy held in between).
Prints one table row per stage and writes `--out` (JSON, with the machine).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

IMAGE_TOKEN = 32000
VOCAB = 32064
# llava-hf/llava-1.5-7b-hf's config.json numbers; "reduced" keeps the shapes of the data (336 px, 576 image
# tokens, the vocabulary) and cuts depth and width.
SIZES = {
    "full": {"vision": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
             "text": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                          num_key_value_heads=32)},
    "reduced": {"vision": dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4),
                "text": dict(hidden_size=128, intermediate_size=352, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=4)},
}
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def llava_config(width: str):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    size = SIZES[width]
    vision = CLIPVisionConfig(image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu",
                              layer_norm_eps=1e-5, **size["vision"])
    text = LlamaConfig(vocab_size=VOCAB, max_position_embeddings=4096, rms_norm_eps=1e-5, hidden_act="silu",
                       pad_token_id=0, bos_token_id=1, eos_token_id=2, **size["text"])
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN, image_seq_length=576,
                       projector_hidden_act="gelu", vision_feature_layer=-2, vision_feature_select_strategy="default",
                       tie_word_embeddings=False)


def build_model(args, device, dtype):
    """The policy with the rehearsal's seed: the same weights in every stage."""
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(args.seed)
    with torch.device(device):
        try:
            model = LlavaForConditionalGeneration._from_config(llava_config(args.width), dtype=dtype)
        except TypeError:  # an older transformers: torch_dtype
            model = LlavaForConditionalGeneration._from_config(llava_config(args.width), torch_dtype=dtype)
    return model.to(device=device, dtype=dtype)


def prompts(args, count: int, seed: int):
    """`count` prompts: BOS, a random question with the 576 image tokens in it, the answer cue; random pixels."""
    g = torch.Generator().manual_seed(seed)
    before = torch.randint(3, IMAGE_TOKEN, (count, 6), generator=g)
    after = torch.randint(3, IMAGE_TOKEN, (count, args.question_tokens), generator=g)
    ids = torch.cat([torch.ones(count, 1, dtype=torch.long), before,
                     torch.full((count, 576), IMAGE_TOKEN), after], dim=1)
    pixels = torch.randn(count, 3, 336, 336, generator=g)
    return ids, pixels


class Stage:
    """Times a stage, resets and reads peak memory (GPU: allocated/reserved; CPU: the process's max RSS)."""

    rows: list[dict] = []

    def __init__(self, name: str, device: torch.device):
        self.name, self.device, self.row = name, device, {"stage": name}

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.row["gpu_allocated_at_start_gb"] = torch.cuda.memory_allocated(self.device) / 2**30
        self.start = time.perf_counter()
        return self.row

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.row["seconds"] = time.perf_counter() - self.start
        if self.device.type == "cuda":
            self.row["peak_gpu_allocated_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
            self.row["peak_gpu_reserved_gb"] = torch.cuda.max_memory_reserved(self.device) / 2**30
        self.row["max_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        if exc[0] is None:
            Stage.rows.append(self.row)
        return False


def freed(device: torch.device) -> float:
    """GiB still allocated on the device after the stage's model is gone (0 when it was freed)."""
    gc.collect()
    if device.type != "cuda":
        return 0.0
    torch.cuda.empty_cache()
    return torch.cuda.memory_allocated(device) / 2**30


def sample(args, device, dtype, row) -> torch.Tensor:
    model = build_model(args, device, dtype).eval()
    ids, pixels = prompts(args, args.prompts, args.seed + 1)
    answers = []
    for start in range(0, args.prompts, args.sample_batch):
        batch = slice(start, start + args.sample_batch)
        with torch.no_grad():
            out = model.generate(input_ids=ids[batch].to(device), pixel_values=pixels[batch].to(device, dtype),
                                 attention_mask=torch.ones_like(ids[batch]).to(device), do_sample=True,
                                 temperature=0.7, top_k=50, num_return_sequences=args.n,
                                 max_new_tokens=args.answer_tokens, min_new_tokens=args.answer_tokens,
                                 pad_token_id=0)
        answers.append(out[:, ids.shape[1]:].cpu())
    row.update(parameters=sum(p.numel() for p in model.parameters()), samples=args.prompts * args.n)
    del model
    return torch.cat(answers).view(args.prompts, args.n, args.answer_tokens)


def pairs_of(args, answers: torch.Tensor):
    """Samples two by two: (chosen, rejected) = (0, 1), (2, 3), …; the prompts repeated per pair."""
    ids, pixels = prompts(args, args.prompts, args.seed + 1)
    per = args.n // 2
    chosen = answers[:, 0::2][:, :per].reshape(-1, args.answer_tokens)
    rejected = answers[:, 1::2][:, :per].reshape(-1, args.answer_tokens)
    return ids.repeat_interleave(per, 0), pixels.repeat_interleave(per, 0), chosen, rejected


def answer_logps(model, ids, pixels, chosen, rejected, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of the chosen and rejected answers: one forward over [chosen; rejected]."""
    answers = torch.cat([chosen, rejected]).to(device)
    full = torch.cat([torch.cat([ids, ids]).to(device), answers], dim=1)
    out = model(input_ids=full, pixel_values=torch.cat([pixels, pixels]).to(device, dtype),
                attention_mask=torch.ones_like(full), use_cache=False, logits_to_keep=answers.shape[1] + 1)
    logits = out.logits[:, :-1].float()
    logps = torch.gather(logits.log_softmax(-1), 2, answers.unsqueeze(-1)).squeeze(-1).sum(-1)
    half = chosen.shape[0]
    return logps[:half], logps[half:]


def reference(args, pairs, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    model = build_model(args, device, dtype).eval()
    ids, pixels, chosen, rejected = pairs
    ref_c, ref_r = [], []
    for start in range(0, len(ids), args.ref_batch):
        s = slice(start, start + args.ref_batch)
        with torch.no_grad():
            c, r = answer_logps(model, ids[s], pixels[s], chosen[s], rejected[s], device, dtype)
        ref_c.append(c.cpu())
        ref_r.append(r.cpu())
    del model
    return torch.cat(ref_c), torch.cat(ref_r)


def dpo(args, pairs, ref, device, dtype, row, lora: bool) -> None:
    model = build_model(args, device, dtype)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=64, lora_alpha=16, lora_dropout=0.0, bias="none",
                                                 target_modules=LORA_TARGETS))
        lr = 1e-5
    else:  # the original's full fine-tuning: language model + projector, vision tower frozen
        tower = getattr(getattr(model, "model", None), "vision_tower", None) or model.vision_tower
        tower.requires_grad_(False)
        lr = 5e-7
    model.train()
    if hasattr(model, "activation_checkpointing_enable"):  # transformers' new name; older 5.x: gradient_…
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    ids, pixels, chosen, rejected = pairs
    losses, margins, total = [], [], len(ids)
    for step in range(args.dpo_steps):
        idx = torch.arange(step * args.pairs_per_step, (step + 1) * args.pairs_per_step) % total
        pc, pr = answer_logps(model, ids[idx], pixels[idx], chosen[idx], rejected[idx], device, dtype)
        margin = (pc - ref[0][idx].to(device)) - (pr - ref[1][idx].to(device))
        loss = -torch.nn.functional.logsigmoid(0.1 * margin).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        margins.append(margin.detach().abs().max().item())
    row.update(trainable_parameters=sum(p.numel() for p in trainable), losses=losses, max_abs_margins=margins,
               pairs_per_s=args.dpo_steps * args.pairs_per_step)
    # step 0: policy == reference, so the loss is ln 2 up to the precision's noise (the reference is exact)
    # (bf16: the reference batches 8 pairs, a step 4, so kernels differ; dloss/dmargin = β/2 = 0.05 at 0)
    tolerance = 0.05 if dtype == torch.bfloat16 else 1e-4
    row["first_loss_is_ln2"] = abs(losses[0] - math.log(2)) <= tolerance  # checked after --out is written
    del model, optimizer, trainable


def evaluate(args, device, dtype, row) -> None:
    model = build_model(args, device, dtype).eval()
    ids, pixels = prompts(args, args.eval_prompts, args.seed + 2)
    generated = 0
    for start in range(0, args.eval_prompts, args.eval_batch):
        s = slice(start, start + args.eval_batch)
        with torch.no_grad():
            out = model.generate(input_ids=ids[s].to(device), pixel_values=pixels[s].to(device, dtype),
                                 attention_mask=torch.ones_like(ids[s]).to(device), do_sample=False,
                                 num_beams=args.beams, max_new_tokens=args.answer_tokens,
                                 min_new_tokens=args.answer_tokens, pad_token_id=0)
        generated += out[:, ids.shape[1]:].numel()
    row["answer_tokens"] = generated
    del model


def machine(device: torch.device, name: str) -> dict:
    import peft
    import transformers

    info = {"name": name or platform.node(), "platform": platform.platform(), "python": platform.python_version(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "torch_threads": torch.get_num_threads(), "device": str(device)}
    if hasattr(os, "getloadavg"):
        info["load_average"] = list(os.getloadavg())
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        info["memory_gb"] = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=props.total_memory / 2**30)
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", choices=sorted(SIZES), default="full")
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--question-tokens", type=int, default=24)
    ap.add_argument("--answer-tokens", type=int, default=32)
    ap.add_argument("--sample-batch", type=int, default=8, help="prompts per generate call (x n sequences)")
    ap.add_argument("--ref-batch", type=int, default=8, help="pairs per reference forward")
    ap.add_argument("--dpo-steps", type=int, default=4)
    ap.add_argument("--pairs-per-step", type=int, default=4)
    ap.add_argument("--eval-prompts", type=int, default=8)
    ap.add_argument("--eval-batch", type=int, default=4)
    ap.add_argument("--beams", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--machine-name", default="", help="the machine's name in --out (default: the host name)")
    args = ap.parse_args(argv)
    if args.n < 2 or args.n % 2:
        ap.error("--n must be even and >= 2 (samples are paired two by two)")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.width == "full" and device.type == "cpu":
        print("note: full width on the CPU needs ~60 GB of memory and hours; --width reduced is the CPU run")
    Stage.rows = []
    with Stage("sampling", device) as row:
        answers = sample(args, device, dtype, row)
    row["tokens_per_s"] = answers.numel() / row["seconds"]
    row["gpu_left_after_gb"] = freed(device)
    pairs = pairs_of(args, answers)
    with Stage("reference", device) as row:
        ref = reference(args, pairs, device, dtype)
        row["pairs"] = len(ref[0])
    row["pairs_per_s"] = row["pairs"] / row["seconds"]
    row["gpu_left_after_gb"] = freed(device)
    for name, lora in (("dpo_full", False), ("dpo_lora", True)):
        with Stage(name, device) as row:
            dpo(args, pairs, ref, device, dtype, row, lora)
        row["pairs_per_s"] /= row["seconds"]
        row["steps_per_s"] = args.dpo_steps / row["seconds"]
        row["gpu_left_after_gb"] = freed(device)
    with Stage("evaluation", device) as row:
        evaluate(args, device, dtype, row)
    row["tokens_per_s"] = row.pop("answer_tokens") / row["seconds"]
    row["prompts_per_s"] = args.eval_prompts / row["seconds"]
    row["gpu_left_after_gb"] = freed(device)

    mem = "peak_gpu_allocated_gb" if device.type == "cuda" else "max_rss_gb"
    print(f"\n{args.width} width, {Stage.rows[0]['parameters'] / 1e9:.3f} B parameters, {dtype}, {device}")
    print(f"{'stage':<11} {'seconds':>8} {mem:>22} {'left GiB':>9}  throughput")
    for r in Stage.rows:
        rate = ", ".join(f"{k} {r[k]:.3g}" for k in ("tokens_per_s", "pairs_per_s", "steps_per_s", "prompts_per_s")
                         if k in r)
        print(f"{r['stage']:<11} {r['seconds']:>8.1f} {r[mem]:>22.2f} {r['gpu_left_after_gb']:>9.2f}  {rate}")
    for r in Stage.rows:
        if "losses" in r:
            print(f"{r['stage']}: DPO losses {', '.join(f'{x:.4f}' for x in r['losses'])} (first = ln 2 = 0.6931)")
    result = {"benchmark": "rehearsal_7b", "width": args.width, "dtype": str(dtype), "args": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "machine": machine(device, args.machine_name),
        "stages": Stage.rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        os.replace(tmp, args.out)
        print(f"wrote {args.out}")
    wrong = [r["stage"] for r in Stage.rows if r.get("first_loss_is_ln2") is False]
    if wrong:
        print(f"FAILED: {', '.join(wrong)}: the first DPO loss is not ln 2: the reference pass and the training "
              "forward disagree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
