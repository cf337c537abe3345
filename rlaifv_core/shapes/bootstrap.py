"""Bootstrap the shapes world's policy and labeler by short supervised training on the CPU.

    python -m rlaifv_core.shapes.bootstrap            # builds (or finds) both models, prints paths

The policy learns from *noisy* captions (absent partners named with p=caption_noise), so it
hallucinates from its language prior as real VLMs do. The labeler is a separate, wider model:
first a captioner on *clean* captions, then multi-task training on yes/no questions about
claims with hard negatives (absent partners, same colour other shape, same shape other colour),
so it sees what the policy gets wrong. Both are cached under a hash of this config; the second
call returns in well under a second. The two models train in parallel processes, one core each.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import random
import resource
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from ..store import cache_root
from .models import ModelSize, build_model, build_processor
from .world import OBJECT_TYPES, PARTNER, ShapesWorld, canonical_order

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

YES_NO_SUFFIX = " Please answer yes or no."
BOOTSTRAP_VERSION = 1  # bump when the training recipe changes in a way the config does not show


class ShapesBootstrapConfig(BaseModel):
    """How the shapes world's models are made. Its hash names the cache folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, description="Seed of initialisation and training data.")
    caption_noise: float = Field(0.6, description="P(policy caption names an absent partner).")
    policy_size: ModelSize = Field(default_factory=ModelSize, description="Policy widths/depths.")
    labeler_size: ModelSize = Field(
        default_factory=ModelSize,
        description="Labeler widths/depths. Same size as the policy: it is stronger because it learns from "
        "clean captions and from yes/no supervision with hard negatives (wider or deeper variants learned "
        "slower within the CPU budget).",
    )
    policy_steps: int = Field(1500, description="Policy SFT steps on noisy captions.")
    labeler_caption_steps: int = Field(1500, description="Labeler stage 1: clean-caption steps.")
    labeler_yes_no_steps: int = Field(1000, description="Labeler stage 2: mixed yes/no + caption steps.")
    batch_size: int = Field(32, description="Examples per step.")
    learning_rate: float = Field(2e-3, description="AdamW peak learning rate (cosine decay).")
    qa_share: float = Field(0.3, description="Share of question-answering examples in caption steps.")
    yes_no_share: float = Field(0.8, description="Share of yes/no examples in labeler stage 2.")
    yes_no_weight: float = Field(5.0, description="Loss weight of the yes/no token.")
    negated_share: float = Field(0.15, description="Share of yes/no questions asked about a negated claim.")
    negative_mix: tuple[float, float, float] = Field(
        (0.2, 0.5, 0.3), description="Weights of hard-negative kinds: absent partner, same colour, same shape.")
    yes_no_learning_rate: float = Field(
        7e-4, description="Peak learning rate of labeler stage 2 (2e-3 stalls at the colour-only shortcut).")

    def digest(self) -> str:
        blob = json.dumps({"v": BOOTSTRAP_VERSION, **self.model_dump(mode="json")}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def bootstrap_dir(config: ShapesBootstrapConfig | None = None) -> Path:
    config = config or ShapesBootstrapConfig()
    return cache_root() / "shapes" / config.digest()


def bootstrapped_model_dir(role: str, config: ShapesBootstrapConfig | None = None) -> Path:
    """Folder of the bootstrapped `policy` or `labeler`, training both first if needed."""
    if role not in ("policy", "labeler"):
        raise ValueError(f"unknown shapes model {role!r}: use shapes:policy or shapes:labeler")
    root = bootstrap(config)["dir"]
    return Path(root) / role


# -- training data ---------------------------------------------------------------------------------
def caption_example(world: ShapesWorld, rng: random.Random, qa_share: float, noisy: bool):
    scene = world.scene(rng.getrandbits(40))
    if rng.random() < qa_share:
        question, obj = world.qa_prompt(scene, rng)
        return scene.render(), question, world.qa_answer(scene, obj, rng, noisy=noisy), None
    question = rng.choice(("describe the image .", "describe the image in detail .",
                           "what is in the image ?", "what objects are in the picture ?"))
    return scene.render(), question, world.caption(scene, rng, noisy=noisy), None


def yes_no_example(world: ShapesWorld, rng: random.Random, negated_share: float,
                   negative_mix: tuple[float, float, float] = (1.0, 1.0, 1.0)):
    """A claim about the scene, rewritten as the pipeline rewrites it, with a balanced answer."""
    from ..feedback.questions import rule_question

    scene = world.scene(rng.getrandbits(40))
    present = canonical_order(scene.objects)
    if rng.random() < 0.5:
        obj, truth = rng.choice(present), True
    else:
        # Hard negatives: the absent partner (where the policy's prior errs), the same colour with
        # another shape, the same shape with another colour (weights `negative_mix`); else any absent
        # object. Same-colour negatives get the most weight: without them the labeler settles on the
        # shortcut "yes iff the colour is present".
        absent = [o for o in OBJECT_TYPES if o not in scene.objects]
        pools = [
            [PARTNER[o] for o in present if PARTNER[o] not in scene.objects],
            [o for o in absent if any(o[0] == p[0] for p in present)],
            [o for o in absent if any(o[1] == p[1] for p in present)],
        ]
        pool = pools[rng.choices(range(3), weights=negative_mix)[0]] or absent
        obj, truth = rng.choice(pool), False
    negated = rng.random() < negated_share
    claim = f"there is no {obj[0]} {obj[1]}" if negated else f"there is a {obj[0]} {obj[1]}"
    answer = "yes" if truth != negated else "no"
    return scene.render(), rule_question(claim) + YES_NO_SUFFIX, answer, 0


def encode_training_batch(processor, examples, weight_first: float = 1.0):
    """input_ids/pixel_values/labels for (image, question, answer, weighted_token) examples;
    the prompt is masked; the answer's first token gets `weight_first` where asked."""
    from ..backends.base import VisualPrompt
    from ..backends.templates import encode_with_answers

    prompts = [VisualPrompt(img, q) for img, q, _, _ in examples]
    batch, answer_mask = encode_with_answers(processor, prompts, [a for _, _, a, _ in examples])
    labels = batch["input_ids"].masked_fill(~answer_mask, -100)
    weights = answer_mask.float()
    first = answer_mask.float().argmax(-1)
    for row, (_, _, _, weighted) in enumerate(examples):
        if weighted is not None:
            weights[row, first[row]] = weight_first
    return batch, labels, weights


def weighted_lm_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    import torch  # here, not at module level: finding the cached models must stay cheap

    logits, labels, weights = logits[:, :-1], labels[:, 1:], weights[:, 1:]
    losses = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                               ignore_index=-100, reduction="none").view_as(weights)
    return (losses * weights).sum() / weights.sum().clamp(min=1)


def train(model, processor, make_example, steps: int, config: ShapesBootstrapConfig, seed: int, label: str,
          weight_first: float = 1.0, learning_rate: float | None = None, more_threads=None) -> list[float]:
    import torch  # here, not at module level: finding the cached models must stay cheap
    from transformers import get_cosine_schedule_with_warmup

    rng = random.Random(seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate or config.learning_rate, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, min(50, steps // 10), steps)
    losses = []
    started = time.time()
    for step in range(steps):
        if more_threads is not None and step % 50 == 0:
            more_threads()
        examples = [make_example(rng) for _ in range(config.batch_size)]
        batch, labels, weights = encode_training_batch(processor, examples, weight_first)
        loss = weighted_lm_loss(model(**batch).logits, labels, weights)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % 250 == 0 or step + 1 == steps:
            print(f"[bootstrap {label}] step {step + 1}/{steps} loss {sum(losses[-50:]) / len(losses[-50:]):.3f} "
                  f"({time.time() - started:.0f}s)", flush=True)
    model.eval()
    return losses


def _train_role(role: str, config: ShapesBootstrapConfig, out_dir: str, threads: int, other_done=None) -> dict:
    import torch  # here, not at module level: finding the cached models must stay cheap

    torch.set_num_threads(threads)

    def more_threads():
        # The policy finishes first; its core then goes to the labeler.
        if other_done is not None and other_done.is_set() and torch.get_num_threads() < 2 * threads:
            torch.set_num_threads(2 * threads)
    started = time.time()
    world = ShapesWorld(caption_noise=config.caption_noise)
    processor = build_processor()
    if role == "policy":
        model = build_model(processor, config.policy_size, seed=config.seed)
        train(model, processor, lambda r: caption_example(world, r, config.qa_share, noisy=True),
              config.policy_steps, config, config.seed + 1, "policy")
    else:
        model = build_model(processor, config.labeler_size, seed=config.seed + 100)
        train(model, processor, lambda r: caption_example(world, r, config.qa_share, noisy=False),
              config.labeler_caption_steps, config, config.seed + 101, "labeler/captions", more_threads=more_threads)

        def mixed(r: random.Random):
            if r.random() < config.yes_no_share:
                return yes_no_example(world, r, config.negated_share, config.negative_mix)
            return caption_example(world, r, config.qa_share, noisy=False)

        train(model, processor, mixed, config.labeler_yes_no_steps, config, config.seed + 102,
              "labeler/yes-no", weight_first=config.yes_no_weight, learning_rate=config.yes_no_learning_rate,
              more_threads=more_threads)
    target = Path(out_dir) / role
    model.save_pretrained(target)
    processor.save_pretrained(target)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"role": role, "seconds": round(time.time() - started, 1), "peak_rss_mb": round(peak_mb),
            "params": sum(p.numel() for p in model.parameters())}


def _worker(role, config_json, out_dir, threads, queue, policy_done):
    try:
        config = ShapesBootstrapConfig.model_validate_json(config_json)
        queue.put(_train_role(role, config, out_dir, threads, other_done=policy_done if role == "labeler" else None))
        if role == "policy":
            policy_done.set()
    except BaseException as exc:  # reported to the parent, which raises
        queue.put({"role": role, "error": repr(exc)})


def bootstrap(config: ShapesBootstrapConfig | None = None, force: bool = False) -> dict:
    """Train (or find cached) policy and labeler. Returns {dir, cached, seconds, report}."""
    config = config or ShapesBootstrapConfig()
    final = bootstrap_dir(config)
    done = final / "bootstrap.json"
    if done.exists() and not force:
        return {**json.loads(done.read_text()), "dir": str(final), "cached": True}
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".{final.name}.{os.getpid()}.tmp"
    staging.mkdir(parents=True, exist_ok=True)
    started = time.time()
    print(f"[bootstrap] training the shapes-world policy and labeler into {final} (a few minutes, once)", flush=True)
    context = mp.get_context("spawn")
    queue = context.Queue()
    policy_done = context.Event()
    workers = [context.Process(target=_worker, args=(role, config.model_dump_json(), str(staging), 1, queue, policy_done))
               for role in ("labeler", "policy")]
    for worker in workers:
        worker.start()
    reports = [queue.get() for _ in workers]
    for worker in workers:
        worker.join()
    errors = [r for r in reports if "error" in r]
    if errors:
        raise RuntimeError(f"shapes bootstrap failed: {errors}")
    summary = {"config": config.model_dump(mode="json"), "digest": config.digest(),
               "seconds": round(time.time() - started, 1),
               "roles": {r["role"]: r for r in reports}}
    (staging / "bootstrap.json").write_text(json.dumps(summary, indent=2))
    if final.exists():
        import shutil

        shutil.rmtree(final)
    os.replace(staging, final)
    print(f"[bootstrap] done in {summary['seconds']:.0f}s", flush=True)
    return {**summary, "dir": str(final), "cached": False}


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="retrain even if cached")
    args = parser.parse_args()
    result = bootstrap(force=args.force)
    print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=2))


if __name__ == "__main__":
    main()
