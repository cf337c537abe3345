"""DPO training on TRL: cached reference log-probs, frozen vision tower, LoRA, checkpoints, resume,
the public RLAIF-V-Dataset schema and the accelerate subprocess path. Tiny models, seconds each."""

from __future__ import annotations

import io
import json
import random
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback

from rlaifv_core import training as D
from rlaifv_core.training import trainer as trainer_module
from rlaifv_core.config import DPOConfig
from rlaifv_core.shapes.world import ShapesWorld

N_PAIRS = 8


def _fast(**changes) -> DPOConfig:
    """A DPO section for seconds-long runs: big lr, no warm-up, one log per step."""
    base = dict(learning_rate=1e-3, warmup_ratio=0.0, batch_size=4, max_steps=2, logging_steps=1, beta=0.1,
                weight_decay=0.01)
    base.update(changes)
    return DPOConfig(**base)


def make_pairs(n: int = N_PAIRS, seed: int = 0, image_format: str = "PNG") -> pd.DataFrame:
    world, rng = ShapesWorld(), random.Random(seed)
    rows = []
    for i in range(n):
        scene = world.scene(seed * 1000 + i)
        buffer = io.BytesIO()
        scene.render().save(buffer, format=image_format)
        question = "describe the image ." if i % 2 == 0 else "what is in the image ?"
        rejected = world.caption(scene, rng, noisy=True)
        chosen = world.caption(scene)
        if rejected == chosen:
            rejected = chosen.replace(" .", " and a red circle .", 1)
        rows.append({"ds_name": "shapes", "image": {"bytes": buffer.getvalue(), "path": f"{i}.png"},
                     "question": question, "chosen": chosen, "rejected": rejected, "origin_dataset": "shapes",
                     "origin_split": json.dumps({"split": "train"}), "idx": i, "image_path": f"images/{i}.png"})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def pairs() -> pd.DataFrame:
    return make_pairs()


@pytest.fixture(scope="module")
def ref_frame(tiny_model_dir, pairs) -> pd.DataFrame:
    return D.compute_reference_logps(tiny_model_dir, pairs, dpo=_fast(), batch_size=4)


def _job(model_dir, out, dpo, **kw) -> D.TrainJob:
    return D.TrainJob(model_dir=str(model_dir), pairs_path="<frame>", output_dir=str(out), dpo=dpo, **kw)


def _step_losses(result) -> list[float]:
    return [e["loss"] for e in result.log_history if "loss" in e]


# -- configuration ---------------------------------------------------------------------------------------
def test_trl_config_follows_the_recipe(tmp_path):
    dpo = DPOConfig(batch_size=8, loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5])
    args = D.build_trl_config(dpo, tmp_path, num_pairs=5344)
    assert D.steps_per_epoch(5344, dpo) == 668 and args.save_steps == 167  # ¼ epoch, as the original
    assert args.beta == 0.1 and args.learning_rate == 5e-7 and args.lr_scheduler_type == "cosine"
    assert args.warmup_steps == 0.05 and args.weight_decay == 0.01 and args.num_train_epochs == 4
    assert args.loss_type == ["sigmoid", "sft"] and args.loss_weights == [1.0, 0.5]
    assert args.max_length is None and args.pad_to_multiple_of is None and not args.remove_unused_columns
    assert args.use_cpu and not args.bf16 and not args.gradient_checkpointing and args.report_to == []
    assert args.per_device_train_batch_size == 8 and args.seed == 42
    assert D.build_trl_config(DPOConfig(batch_size=8), tmp_path, 5344, num_processes=8).per_device_train_batch_size == 1
    with pytest.raises(ValueError):
        D.per_device_batch(DPOConfig(batch_size=6), num_processes=4)


def test_lora_targets_are_the_language_models_linear_layers(tiny_model_dir):
    model, _ = D.load_training_model(tiny_model_dir, DPOConfig())
    targets = D.lora_target_modules(model)
    assert targets and all(".language_model." in t for t in targets)
    assert {t.rsplit(".", 1)[1] for t in targets} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                      "down_proj"}
    assert D.vision_tower_prefixes(model) == ["model.vision_tower"]


# -- reference log-probs ---------------------------------------------------------------------------------------
def test_cached_reference_equals_trls_live_computation(tiny_model_dir, other_model_dir, pairs, ref_frame, tmp_path):
    assert list(ref_frame.columns) == list(D.REF_FRAME_COLUMNS) and len(ref_frame) == len(pairs)
    for kind in ("chosen", "rejected"):  # per-token values sum to the totals
        sums = [sum(tokens) for tokens in ref_frame[f"ref_{kind}_token_logps"]]
        assert sums == pytest.approx(list(ref_frame[f"ref_{kind}_logps"]), abs=1e-4)
    # TRL's own computation, with the reference passed explicitly as ref_model
    dpo = _fast()
    policy, processor = D.load_training_model(other_model_dir, dpo)
    reference, _ = D.load_training_model(tiny_model_dir, dpo)
    dataset = D.to_trl_dataset(pairs)
    trainer = D.RLAIFVDPOTrainer(model=policy, ref_model=reference, args=D.build_trl_config(dpo, tmp_path, len(pairs)),
                                 train_dataset=dataset, processing_class=processor)
    live_chosen, live_rejected = [], []
    for start in range(0, len(pairs), 4):
        batch = trainer.data_collator([dataset[i] for i in range(start, start + 4)])
        chosen, rejected = trainer.compute_ref_log_probs(trainer.ref_model, batch)
        live_chosen += chosen.tolist()
        live_rejected += rejected.tolist()
    assert max(abs(a - b) for a, b in zip(live_chosen, ref_frame["ref_chosen_logps"])) < 1e-5
    assert max(abs(a - b) for a, b in zip(live_rejected, ref_frame["ref_rejected_logps"])) < 1e-5


def test_reference_must_be_explicit_and_match_the_pairs(tiny_model_dir, pairs, ref_frame, tmp_path):
    dpo = _fast()
    model, processor = D.load_training_model(tiny_model_dir, dpo)
    with pytest.raises(ValueError, match="explicit"):
        D.RLAIFVDPOTrainer(model=model, args=D.build_trl_config(dpo, tmp_path, len(pairs)),
                           train_dataset=D.to_trl_dataset(pairs), processing_class=processor)
    with pytest.raises(ValueError, match="no reference"):
        D.train(_job(tiny_model_dir, tmp_path / "a", dpo), pairs=pairs)
    shuffled = ref_frame.iloc[::-1].reset_index(drop=True)
    with pytest.raises(ValueError, match="pair_key"):
        D.to_trl_dataset(pairs, ref_logps=shuffled)


# -- full fine-tuning ---------------------------------------------------------------------------------------
def test_two_steps_train_llm_and_projector_not_the_vision_tower(tiny_model_dir, pairs, ref_frame, tmp_path):
    start = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    result = D.train(_job(tiny_model_dir, tmp_path / "out", _fast()), pairs=pairs, ref_logps=ref_frame)
    assert result.global_step == 2 and [c.step for c in result.checkpoints] == [1, 2]  # 2 steps/epoch, ¼-epoch saves
    total = sum(p.numel() for p in start.parameters())
    assert result.held_parameters == total  # one model in the process: no reference model held
    vision = set(D.vision_tower_parameters(start))
    assert result.trainable_parameters == total - sum(p.numel() for n, p in start.named_parameters() if n in vision)
    folder = D.export_checkpoint(result.checkpoints[-1].path, tmp_path / "export")
    assert not any((folder / f).exists() for f in D.TRAINING_STATE_FILES) and (folder / "model.safetensors").exists()
    trained = AutoModelForImageTextToText.from_pretrained(folder)
    AutoProcessor.from_pretrained(folder)
    before, after = dict(start.named_parameters()), dict(trained.named_parameters())
    assert before.keys() == after.keys()
    unchanged = [n for n in before if n not in vision and torch.equal(before[n], after[n])]
    assert unchanged == []  # every trainable parameter moved
    assert all(torch.equal(before[n], after[n]) for n in vision)  # vision tower bit-identical
    assert {"rewards/accuracies", "rewards/margins", "loss"} <= result.metrics.keys()


def test_cached_and_live_reference_give_the_same_loss(tiny_model_dir, other_model_dir, pairs, tmp_path):
    # start from another model than the reference, so the loss at step 1 is not trivially log 2
    ref_other = D.compute_reference_logps(other_model_dir, pairs, dpo=_fast(), batch_size=4)
    dpo = _fast(max_steps=2)
    cached = D.train(_job(tiny_model_dir, tmp_path / "cached", dpo), pairs=pairs, ref_logps=ref_other)
    live = D.train(_job(tiny_model_dir, tmp_path / "live", dpo, reference_dir=str(other_model_dir)), pairs=pairs)
    first_cached = next(e for e in cached.log_history if "loss" in e)
    first_live = next(e for e in live.log_history if "loss" in e)
    assert abs(first_cached["loss"] - 0.6931) > 1e-3
    assert first_cached["loss"] == pytest.approx(first_live["loss"], abs=1e-5)
    assert first_cached["rewards/margins"] == pytest.approx(first_live["rewards/margins"], abs=1e-5)
    assert live.held_parameters == 2 * cached.held_parameters  # the live run holds policy + reference


# -- LoRA -----------------------------------------------------------------------------------------------
def test_lora_trains_only_adapters_and_merges(tiny_model_dir, pairs, ref_frame, tmp_path):
    from peft import PeftModel

    dpo = _fast(lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0, learning_rate=1e-2)
    held = {}

    class _Keep(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kwargs):
            held.update({n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()})

    result = D.train(_job(tiny_model_dir, tmp_path / "lora", dpo), pairs=pairs, ref_logps=ref_frame,
                     callbacks=[_Keep()])
    assert result.lora and result.held_parameters > result.trainable_parameters
    original = dict(AutoModelForImageTextToText.from_pretrained(tiny_model_dir).named_parameters())
    for name, (value, trainable) in held.items():
        assert trainable == ("lora_" in name), name  # only adapters train
        if "lora_" not in name:  # the base stayed bit-identical
            key = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(value, original[key]), name
    checkpoint = result.checkpoints[-1].path
    from safetensors.torch import load_file

    saved = load_file(f"{checkpoint}/adapter_model.safetensors")
    assert saved and all("lora_" in k and ".language_model." in k for k in saved)  # adapters only, LLM only
    assert any(("lora_B" in k) and v.abs().sum() > 0 for k, v in saved.items())  # B moved off its zero init
    base = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    adapted = PeftModel.from_pretrained(base, checkpoint).eval()
    merged_dir = D.export_checkpoint(checkpoint, tmp_path / "merged", base_model_dir=tiny_model_dir)
    assert (merged_dir / "adapter" / "adapter_config.json").exists()
    merged = AutoModelForImageTextToText.from_pretrained(merged_dir).eval()
    processor = AutoProcessor.from_pretrained(merged_dir)
    batch = trainer_module._trl_classes()[0](processor=processor)([D.to_trl_dataset(pairs)[i] for i in range(4)])
    batch.pop("completion_mask")
    with torch.no_grad():
        expected = adapted(**batch).logits
        got = merged(**batch).logits
    assert torch.allclose(expected, got, atol=1e-5)
    fresh = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(**batch).logits, got, atol=1e-5)  # the adapter did something


# -- resume -------------------------------------------------------------------------------------------------
class _Crash(RuntimeError):
    pass


class _CrashAfter(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise _Crash(f"killed at step {self.step}")


def test_killed_run_resumes_from_its_latest_checkpoint(tiny_model_dir, pairs, ref_frame, tmp_path):
    dpo = _fast(batch_size=2, max_steps=-1, epochs=1, checkpoints_per_epoch=2, learning_rate=5e-3)  # 4 steps, save 2
    whole = D.train(_job(tiny_model_dir, tmp_path / "whole", dpo), pairs=pairs, ref_logps=ref_frame)
    assert [c.step for c in whole.checkpoints] == [2, 4]
    out = tmp_path / "crashed"
    with pytest.raises(_Crash):
        D.train(_job(tiny_model_dir, out, dpo), pairs=pairs, ref_logps=ref_frame, callbacks=[_CrashAfter(3)])
    assert [p.name for p in D.checkpoint_dirs(out)] == ["checkpoint-2"]
    (out / "checkpoint-4").mkdir()  # a save cut short by the kill: no trainer_state.json
    (out / "checkpoint-4" / "model.safetensors").write_bytes(b"partial")
    again = D.train(_job(tiny_model_dir, out, dpo), pairs=pairs, ref_logps=ref_frame)
    assert again.resumed_from == 2 and again.global_step == 4
    assert [c.step for c in again.checkpoints] == [2, 4]
    assert len(_step_losses(whole)) == 4
    assert _step_losses(again) == pytest.approx(_step_losses(whole), abs=1e-5)  # same trajectory, steps 1-4
    a = AutoModelForImageTextToText.from_pretrained(whole.checkpoints[-1].path)
    b = AutoModelForImageTextToText.from_pretrained(again.checkpoints[-1].path)
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a.parameters(), b.parameters()))
    assert not (out / "checkpoint-2" / "optimizer.pt").exists()  # training state kept for the latest only
    assert (out / "checkpoint-4" / "optimizer.pt").exists()
    done = D.train(_job(tiny_model_dir, out, dpo), pairs=pairs, ref_logps=ref_frame)  # a retry after the end
    assert done.resumed_from == 4 and done.global_step == 4 and done.metrics["loss"] == again.metrics["loss"]
    with pytest.raises(ValueError, match="different training job"):
        D.train(_job(tiny_model_dir, out, _fast(learning_rate=1e-4)), pairs=pairs, ref_logps=ref_frame)


# -- data sources -------------------------------------------------------------------------------------------
def test_public_rlaifv_schema_trains_from_parquet_files(tiny_model_dir, tmp_path):
    """openbmb/RLAIF-V-Dataset's columns and layout: JPEG bytes in image{bytes,path}, shards of parquet."""
    public = make_pairs(6, seed=3, image_format="JPEG")
    public["idx"] = public["idx"].astype("int64")
    folder = tmp_path / "RLAIF-V-Dataset"
    folder.mkdir()
    public.iloc[:3].to_parquet(folder / "RLAIF-V-Dataset_000.parquet", index=False)
    public.iloc[3:].to_parquet(folder / "RLAIF-V-Dataset_001.parquet", index=False)
    loaded = D.load_pairs(str(folder))
    assert len(loaded) == 6 and list(loaded["question"]) == list(public["question"])
    ref = D.compute_reference_logps(tiny_model_dir, loaded, dpo=_fast(), batch_size=3)
    ref_path = tmp_path / "ref_logps.parquet"
    ref.to_parquet(ref_path, index=False)
    result = D.train(D.TrainJob(model_dir=str(tiny_model_dir), pairs_path=str(folder), ref_logps_path=str(ref_path),
                                output_dir=str(tmp_path / "out"), dpo=_fast(batch_size=2, max_steps=1)))
    assert result.global_step == 1 and result.num_pairs == 6 and result.checkpoints
    # images given only by path, resolved inside data_root
    by_path = public.copy()
    (tmp_path / "images").mkdir()
    for i, row in by_path.iterrows():
        (tmp_path / row["image_path"]).write_bytes(row["image"]["bytes"])
    by_path["image"] = None
    assert D.pair_keys(by_path, data_root=str(tmp_path)) == D.pair_keys(public)
    by_path.loc[0, "image_path"] = "../outside.png"
    with pytest.raises(ValueError, match="leaves data_root"):
        D.pair_keys(by_path, data_root=str(tmp_path))


@pytest.mark.slow
def test_accelerate_subprocess_trains_one_step_on_the_cpu(tiny_model_dir, pairs, ref_frame, tmp_path):
    pairs_path, ref_path = tmp_path / "pairs.parquet", tmp_path / "ref.parquet"
    pairs.to_parquet(pairs_path, index=False)
    ref_frame.to_parquet(ref_path, index=False)
    lines: list[str] = []
    dpo = _fast(max_steps=1, launcher="accelerate", accelerate_config="cpu")
    job = D.TrainJob(model_dir=str(tiny_model_dir), pairs_path=str(pairs_path), ref_logps_path=str(ref_path),
                     output_dir=str(tmp_path / "out"), dpo=dpo)
    result = D.launch(job, log_fn=lines.append)
    assert result.global_step == 1 and [c.step for c in result.checkpoints] == [1]
    assert any("accelerate.commands.launch" in line and "cpu.yaml" in line for line in lines)
    assert any(line.startswith("step 1: ") and '"loss"' in line for line in lines)  # the subprocess's logs, streamed
    AutoModelForImageTextToText.from_pretrained(result.checkpoints[0].path)


# -- the Prefect flow ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_train_flow_on_public_format_pairs_is_cached(tiny_model_dir, tmp_path, monkeypatch):
    """`python flows/train.py --pairs PATH --model PATH`: store import, reference log-probs, DPO,
    checkpoints in the store; an unchanged re-run is all cache hits (no training)."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.train import main
    from rlaifv_core.store import RunStore

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    public = make_pairs(8, seed=5, image_format="JPEG")
    path = tmp_path / "RLAIF-V-Dataset_000.parquet"
    public.to_parquet(path, index=False)
    argv = ["--pairs", str(path), "--model", str(tiny_model_dir), f"store.url={tmp_path / 'runs'}",
            "store.run_name=flow", "dpo.max_steps=2", "dpo.batch_size=4", "dpo.warmup_ratio=0.0",
            "dpo.learning_rate=1e-3", "dpo.checkpoints_per_epoch=2", "iteration.retry_delay_s=0"]
    with prefect_test_harness():
        first = main(argv)
        assert [c.step for c in first.checkpoints] == [1, 2] and first.num_pairs == 8
        store = RunStore(str(tmp_path / "runs"), "flow")
        assert store.read_table("iter-1/ref_logps.parquet").shape[0] == 8
        folder = store.local_folder(first.checkpoints[-1].ref)
        AutoModelForImageTextToText.from_pretrained(folder)
        AutoProcessor.from_pretrained(folder)
        assert not (folder / "optimizer.pt").exists()
        assert {"rewards/accuracies", "rewards/margins"} <= first.metrics.keys()
        assert not (tmp_path / "runs" / "flow" / "iter-1" / ".train-work").exists()  # cleaned up once exported
        log_file = tmp_path / "runs" / "flow" / "iter-1" / "train_log.json"
        written = log_file.stat().st_mtime_ns
        second = main(argv)
        assert second == first and log_file.stat().st_mtime_ns == written  # all cache hits: nothing retrained


def test_pairs_load_from_s3(tmp_path, monkeypatch):
    """s3:// through fsspec (moto server on 127.0.0.1, credentials from AWS_* variables)."""
    import shutil
    import socket
    import subprocess
    import time

    import fsspec

    server = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    if not Path(server).exists():
        pytest.skip("moto[server] not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(name, value)
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        fs = fsspec.filesystem("s3", client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
        fs.mkdir("pairs-bucket")
        frame = make_pairs(4, seed=7)
        local = tmp_path / "p.parquet"
        frame.to_parquet(local, index=False)
        fs.put_file(str(local), "pairs-bucket/rlaifv/train-000.parquet")
        loaded = D.load_pairs("s3://pairs-bucket/rlaifv/", storage_options={"skip_instance_cache": True})
        assert list(loaded["chosen"]) == list(frame["chosen"])
        assert D.pair_keys(loaded) == D.pair_keys(frame)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_dpo_metrics_are_run_means_of_trls_logs_with_the_last_log_beside_them():
    """A step metric is the mean over every log (each log averages `logging_steps` batches); the last
    log alone, what the summary showed before, is kept as `last/<key>`."""
    from rlaifv_core.training.run import final_metrics

    history = [{"loss": 0.7, "rewards/accuracies": 0.25, "epoch": 0.5, "learning_rate": 1e-4},
               {"loss": 0.5, "rewards/accuracies": 1.0, "epoch": 1.0, "learning_rate": 5e-5},
               {"train_loss": 0.6, "train_runtime": 3.0, "epoch": 1.0}]
    metrics = final_metrics(history)
    assert metrics["rewards/accuracies"] == pytest.approx(0.625) and metrics["last/rewards/accuracies"] == 1.0
    assert metrics["loss"] == pytest.approx(0.6) and metrics["last/loss"] == 0.5
    assert (metrics["epoch"], metrics["learning_rate"], metrics["train_loss"]) == (1.0, 5e-5, 0.6)
