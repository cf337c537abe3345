"""The real-model rehearsal: every zoo architecture through every stage reachable on a CPU, each cell
checked against an independent computation. Run time: see README "Architectures tested" (marked slow).

    pytest tests/test_zoo_matrix.py --durations=10

Stages: load through the spec; sample n with per-prompt seeds; labeler yes/no against P(yes) from
the model's own logits on the rendered template; answer log-probs against a plain float64 forward;
reference log-probs (TRL's collator) against those; DPO full (projector trains, vision frozen) and
LoRA; LLM claim splitting (both prompt presets, multi-sentence answers in chunks) and chat (plain
string and content-part messages) against greedy decoding of the model's own template; best-of-N
reward (summed answer log-probs). Qwen2-VL and Idefics3: DPO full and LoRA killed after a checkpoint
and resumed equal the uninterrupted run; Qwen2-VL's checkpoints evaluated through flows/evaluate.py.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from rlaifv_core.backends.base import GenerationSettings, VisualPrompt
from rlaifv_core.backends.hf import HFBackend
from rlaifv_core.config import ClaimsConfig, DPOConfig, ModelSpec, load_config
from tests.helpers import manual_token_logps
from tests.zoo.builders import ARCHITECTURES
from tests.zoo.fixtures import zoo  # noqa: F401 - fixture

pytestmark = pytest.mark.slow

IMAGES = [Image.new("RGB", (64, 48), (200, 30, 30)), Image.new("RGB", (90, 60), (20, 160, 40))]
QUESTIONS = ["Is there a red square? Please answer yes or no.", "Is there a dog? Please answer yes or no."]


def _pairs() -> pd.DataFrame:
    rows = []
    for i, image in enumerate(IMAGES):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        rows.append({"ds_name": "zoo", "image": {"bytes": buffer.getvalue(), "path": f"{i}.png"},
                     "question": "Describe the image.", "chosen": "A red square. It is on the left.",
                     "rejected": "A blue circle and a dog. They are big.", "origin_dataset": "zoo",
                     "origin_split": json.dumps({"split": "train"}), "idx": i, "image_path": f"{i}.png"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_architecture_through_every_stage(zoo, name, tmp_path):
    from rlaifv_core import training as D

    folder = zoo(name)
    backend = HFBackend.from_spec(ModelSpec(name_or_path=str(folder), batch_size=8, dtype="float32"))
    assert backend.is_vlm and type(backend.model).__name__.endswith("ForConditionalGeneration")

    # sample n with seeds
    prompts = [VisualPrompt(img, "Describe the image.") for img in IMAGES]
    settings = GenerationSettings(n=2, temperature=1.0, top_k=None, max_new_tokens=4)
    samples = backend.generate(prompts, settings, seeds=[7, 8])
    assert [len(s) for s in samples] == [2, 2] and backend.generate(prompts, settings, seeds=[7, 8]) == samples

    # labeler yes/no against the model's own logits on the full rendered prompt
    scores = backend.yes_no(IMAGES[0], QUESTIONS)
    yes, no = backend.yes_no_ids
    for question, score in zip(QUESTIONS, scores):
        batch = backend.encode([backend.render(question)], [IMAGES[0]])
        with torch.no_grad():
            probs = backend.model(**batch).logits[0, -1].double().softmax(-1)
        assert abs(score.p_yes - float(probs[yes].sum())) < 1e-5
        assert abs(score.p_no - float(probs[no].sum())) < 1e-5

    # answer log-probs against a plain unbatched forward
    answers = ["A red square. It is on the left.", "Nothing at all."]
    got = backend.answer_logprobs([prompts[0], prompts[0]], answers)
    for answer, token_logps in zip(answers, got):
        manual = manual_token_logps(backend, prompts[0], answer)
        assert len(manual) == len(token_logps) > 2
        assert max(abs(a - b) for a, b in zip(manual, token_logps)) < 1e-4

    # reference log-probs (TRL's collator, the training precision) against the same sums
    pairs = _pairs()
    dpo = DPOConfig(learning_rate=1e-2, warmup_ratio=0.0, batch_size=2, max_steps=1, logging_steps=1)
    ref = D.compute_reference_logps(folder, pairs, dpo=dpo, batch_size=2)
    ours = backend.answer_logprobs([VisualPrompt(img, "Describe the image.") for img in IMAGES],
                                   list(pairs["chosen"]))
    for row, mine in zip(ref.itertuples(), ours):
        assert abs(row.ref_chosen_logps - sum(mine)) < 1e-3 * max(1.0, abs(sum(mine))), (name, row.ref_chosen_logps, sum(mine))

    # DPO full (vision frozen, projector trains) and LoRA, through the public entry point
    full = D.train(D.TrainJob(model_dir=str(folder), pairs_path="<frame>", output_dir=str(tmp_path / "full"), dpo=dpo,
                              model_spec=ModelSpec(name_or_path=str(folder))), pairs=pairs, ref_logps=ref)
    assert full.global_step == 1 and full.checkpoints and all(torch.isfinite(torch.tensor(full.metrics["loss"])) for _ in [0])
    trained = HFBackend.from_spec(ModelSpec(name_or_path=full.checkpoints[-1].path, dtype="float32"))
    moved = {n for n, p in trained.model.named_parameters()
             if not torch.equal(p, dict(backend.model.named_parameters())[n])}
    assert any(x in n for n in moved for x in ("multi_modal_projector", "merger", "connector"))
    assert not any(("vision_tower" in n or "vision_model" in n or ".visual.blocks" in n or "patch_embed" in n)
                   for n in moved)
    lora = D.train(D.TrainJob(model_dir=str(folder), pairs_path="<frame>", output_dir=str(tmp_path / "lora"),
                              dpo=dpo.model_copy(update={"lora": True, "lora_r": 4, "lora_alpha": 8})),
                   pairs=pairs, ref_logps=ref)
    assert lora.lora and lora.checkpoints and lora.checkpoints[-1].lora

    # chat (text roles): a plain string content reaches the template like a text part (the VLM templates
    # of LLaVA and SmolVLM rendered a string as nothing); the reply is the model's own greedy decoding
    parts = [{"role": "user", "content": [{"type": "text", "text": "Say hi."}]}]
    reply = backend.chat(parts, max_new_tokens=4)
    assert reply.model == backend.name and reply.text == greedy(backend, "Say hi.", 4)
    assert backend.chat([{"role": "user", "content": "Say hi."}], max_new_tokens=4).text == reply.text
    _llm_claims_cell(backend, folder)

    # best-of-N reward: summed log-probs rank the answers like the manual ones
    reward = [sum(x) for x in got]
    manual_reward = [sum(manual_token_logps(backend, prompts[0], a)) for a in answers]
    assert (reward[0] > reward[1]) == (manual_reward[0] > manual_reward[1])


ANSWER = ("A red square sits on the left of the picture. It is large and bright. "
          "Behind it there is a small green circle, and nothing else is visible.")


def greedy(backend: HFBackend, text: str, max_new_tokens: int) -> str:
    """Independently: the model's own template with the text as a content part, encoded as the
    tokenizer does (BOS unless the template wrote it), greedy `generate`, decoded up to EOS."""
    tok = backend.tokenizer
    rendered = backend.processor.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": text}]}],
                                                     add_generation_prompt=True, tokenize=False)
    assert text in rendered
    batch = tok(rendered, return_tensors="pt", add_special_tokens=not (tok.bos_token and rendered.startswith(tok.bos_token)))
    with torch.no_grad():
        out = backend.model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
    row = out[0, batch["input_ids"].shape[1]:].tolist()
    eos = {tok.eos_token_id, *([backend.model.generation_config.eos_token_id] if isinstance(
        backend.model.generation_config.eos_token_id, int) else backend.model.generation_config.eos_token_id or [])}
    cut = next((i for i, t in enumerate(row) if t in eos), len(row))
    return tok.decode(row[:cut], skip_special_tokens=True).strip()


def _llm_claims_cell(backend: HFBackend, folder) -> None:
    """LLM claim splitting through `split_claims` with the replica's spec as the splitter: every chunk of a
    multi-sentence answer is sent in the preset's prompt, the replies are the model's greedy ones, the
    claims are their list items (the released preset reads every line; ours needs "- " items, else a
    recorded failure after a retry, never raised)."""
    from rlaifv_core.feedback.claims import chunk_answer, split_claims, split_prompt_llama3, split_prompt_project
    from rlaifv_core.feedback.llm_lists import parse_list

    question, tokens = "Describe the image.", 6
    spec = ModelSpec(name_or_path=str(folder), dtype="float32")
    released = ClaimsConfig(preset="rlaifv-llama3", chunk_words=8, max_new_tokens=tokens, temperature=0.0)
    chunks = chunk_answer(ANSWER, released.chunk_words)
    assert len(chunks) >= 3 and " ".join(chunks).split() == ANSWER.split()
    [got] = split_claims([(question, ANSWER)], spec, released, seed=3)
    replies = [greedy(backend, split_prompt_llama3(question, c), tokens) for c in chunks]
    facts = [parse_list(r, require_marker=False)[0] for r in replies]
    if all(facts):
        assert got.failure is None and got.raw == replies and got.claims == [f for fs in facts for f in fs]
    else:
        first_empty = next(i for i, f in enumerate(facts) if not f)
        assert got.claims == [] and got.failure.startswith(f"chunk {first_empty + 1}/{len(chunks)}")
        assert got.raw[:first_empty + 1] == replies[:first_empty + 1]
    ours = ClaimsConfig(max_new_tokens=tokens, temperature=0.0)
    [mine] = split_claims([(question, ANSWER)], backend, ours, seed=3)
    reply = greedy(backend, split_prompt_project(question, ANSWER), tokens)
    items = parse_list(reply, require_marker=True)[0]
    assert mine.raw[0] == reply
    if not items:  # a random-init model writes no "- " list: retried (greedy: the same reply), then recorded
        assert mine.claims == [] and mine.raw == [reply, reply] and "no list items" in mine.failure


class _Killed(RuntimeError):
    pass


def _kill_after(step: int):
    from transformers import TrainerCallback

    class KillAfter(TrainerCallback):  # the next step's start: checkpoint-<step> is saved, step+1 not begun
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise _Killed(f"killed after step {step}")

    return KillAfter()


def _weights(checkpoint: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(Path(checkpoint).glob("*.safetensors"))
    assert files, checkpoint
    return {k: v for f in files for k, v in load_file(f).items()}


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("name", ["qwen2_vl", "idefics3"])
def test_dpo_killed_after_a_checkpoint_resumes_to_the_uninterrupted_run(zoo, name, lora, tmp_path, request):
    from rlaifv_core import training as D

    folder = zoo(name)
    pairs = _pairs()
    dpo = DPOConfig(learning_rate=1e-2, warmup_ratio=0.0, batch_size=1, max_steps=2, checkpoints_per_epoch=2,
                    logging_steps=1, lora=lora, lora_r=4, lora_alpha=8)
    ref = D.compute_reference_logps(folder, pairs, dpo=dpo, batch_size=2)

    def job(out: str):
        return D.TrainJob(model_dir=str(folder), pairs_path="<frame>", output_dir=str(tmp_path / out), dpo=dpo,
                          model_spec=ModelSpec(name_or_path=str(folder)))

    whole = D.train(job("whole"), pairs=pairs, ref_logps=ref)
    assert [c.step for c in whole.checkpoints] == [1, 2] and whole.resumed_from is None
    with pytest.raises(_Killed):
        D.train(job("killed"), pairs=pairs, ref_logps=ref, callbacks=[_kill_after(1)])
    assert [p.name for p in D.checkpoint_dirs(tmp_path / "killed")] == ["checkpoint-1"]
    resumed = D.train(job("killed"), pairs=pairs, ref_logps=ref)
    assert resumed.resumed_from == 1 and resumed.global_step == 2 and [c.step for c in resumed.checkpoints] == [1, 2]
    losses = lambda r: [e["loss"] for e in r.log_history if "loss" in e]  # noqa: E731
    assert losses(resumed)[-1] == pytest.approx(losses(whole)[-1], abs=1e-5)  # step 2 from the restored state
    a, b = _weights(whole.checkpoints[-1].path), _weights(resumed.checkpoints[-1].path)
    start = _weights(str(folder)) if not lora else None
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    if lora:
        assert all(c.lora for c in resumed.checkpoints)
    else:  # full: the projector moved and resumed with its optimizer state (nested in Qwen2-VL's vision module)
        moved = [k for k in a if k in start and not torch.equal(a[k], start[k])]
        assert any(x in k for k in moved for x in ("merger", "connector"))
    if name == "qwen2_vl":  # exported as the train flow exports it (LoRA merged into its base), then evaluated
        exported = D.export_checkpoint(resumed.checkpoints[-1].path, tmp_path / "export", base_model_dir=folder, dpo=dpo)
        _evaluate_flow_on(request, str(exported), tmp_path)


def _evaluate_flow_on(request, checkpoint: str, tmp_path) -> None:
    """`python flows/evaluate.py --model CKPT` (shapes benchmark, 2 scenes): the record is the checkpoint's,
    its answers are the ones the checkpoint gives when loaded directly."""
    from flows.evaluate import main
    from rlaifv_core.evals.registry import generation_settings
    from rlaifv_core.shapes.benchmark import DETAIL_QUESTIONS
    from rlaifv_core.shapes.world import ShapesWorld

    request.getfixturevalue("prefect_server")
    rows = main(["--config", "configs/shapes.yaml", "--model", checkpoint, f"store.url={tmp_path / 'runs'}",
                 "store.run_name=zoo-eval", "eval.shapes_scenes=2", "eval.max_new_tokens=6"])
    [row] = rows
    record = json.loads(open(row["record"]).read())
    assert row["model"] == checkpoint and record["model"]["model"] == checkpoint and record["n"] == 2
    direct = HFBackend.from_spec(ModelSpec(name_or_path=checkpoint, batch_size=64))  # shapes.yaml's policy spec
    eval_config = load_config("configs/shapes.yaml", ["eval.shapes_scenes=2", "eval.max_new_tokens=6"]).eval
    scenes = ShapesWorld().scenes(eval_config.shapes_seed, 2)
    prompts = [VisualPrompt(s.render(), DETAIL_QUESTIONS[i % len(DETAIL_QUESTIONS)]) for i, s in enumerate(scenes)]
    answers = direct.generate(prompts, generation_settings(eval_config),
                              seeds=[eval_config.shapes_seed * 1000 + i for i in range(2)])
    assert [e["answer"] for e in record["examples"]] == [a[0] for a in answers]
