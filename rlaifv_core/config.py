"""The one typed configuration of a run.

Load and inspect:

    python -m rlaifv_core.config configs/shapes.yaml dpo.beta=0.2 sampling.n=4

Every field has a help string; defaults are the original RLAIF-V recipe (docs/method.md) where one
exists. The shapes-world preset (`configs/shapes.yaml`) overrides what a CPU-sized world needs.
No secret is a field: API keys are read from the environment variable a spec *names*.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field

from .config_base import _section, _Section, apply_overrides
from .config_checks import check_config
from .config_serve import ServeSpec
from .config_yaml import read_config_file
from .eval_data import EvalData


# Choices the run form offers (and a config file is checked against at load).
LRScheduler = Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                      "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "warmup_stable_decay"]
LossType = Literal["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                   "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"]
# Lower-is-better hallucination metrics and higher-is-better coverage metrics of the built-in benchmarks, bare
# (found in exactly one benchmark of the run) or as benchmark.metric.
HallucinationMetric = Literal["chair_s", "chair_i", "chair_s_refine", "hallucination_rate", "chair", "hal",
                              "shapes.chair_s", "shapes.chair_i", "object_halbench.chair_s", "object_halbench.chair_i",
                              "object_halbench.chair_s_refine", "mmhal.hallucination_rate", "amber.chair", "amber.hal"]
CoverageMetric = Literal["recall", "cover", "shapes.recall", "object_halbench.recall", "amber.cover"]


class ModelSpec(_Section):
    """Where a model role comes from and which backend serves it."""

    model_config = _section("Model")

    backend: Literal["hf", "openai", "rules", "oracle"] = Field(
        "hf",
        description="hf: in-process transformers; openai: any OpenAI-compatible server; "
        "rules: the built-in rule-based splitter/rewriter (text roles only); "
        "oracle: ground truth of the shapes world (ablations only, never the default labeler).",
    )
    name_or_path: str = Field(
        "shapes:policy",
        description="Hub id, local folder, or shapes:policy / shapes:labeler for the "
        "bootstrapped shapes-world models (built on first use). For backend=openai: the "
        "model name sent to the server.",
    )
    revision: str | None = Field(None, description="Hub revision (hf backend).")
    trust_remote_code: bool = Field(
        False, description="Allow model code from the hub to run. Off unless you trust the repo."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on a GPU that supports it, float32 on the CPU."
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, mps …")
    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (openai backend)."
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        description="Name of the environment variable holding the API key (the key itself is never "
        "a config value). Unset variable = no key (fine for local vLLM).",
    )
    timeout_s: float = Field(60.0, gt=0, description="Per-request timeout (openai backend).")
    max_retries: int = Field(4, ge=0, description="Retries on timeouts, 429 and transient 5xx (openai backend).")
    ready_timeout_s: float = Field(
        300.0, ge=0, description="Wait up to this long for the server's /health before a stage's first "
        "request (openai backend; a loading vLLM has its port closed). 0: no wait.")
    max_concurrency: int = Field(64, ge=1, le=4096, description="Requests in flight (openai backend); the "
                                 "labeler keeps this many questions in flight across images (docs/method.md §5).")
    batch_size: int = Field(16, ge=1, description="Prompts per forward pass (hf backend); halved on OOM.")
    serve: ServeSpec | None = Field(
        None, description="Run this role behind a managed server started and stopped by each stage that "
        "uses it (then reached through the openai backend's settings: timeout_s, max_concurrency …).",
    )


class ModelsConfig(_Section):
    model_config = _section("Models")

    policy: ModelSpec = Field(
        default_factory=lambda: ModelSpec(name_or_path="llava-hf/llava-1.5-7b-hf"),
        title="Policy model", description="The model being aligned; iteration k samples from the policy selected at k-1.",
    )
    labeler: ModelSpec = Field(
        default_factory=lambda: ModelSpec(name_or_path="llava-hf/llava-v1.6-34b-hf"),
        title="Labeler model", description="The open-source VLM that answers the yes/no questions (P(yes) vs P(no)).",
    )
    splitter: ModelSpec = Field(
        default_factory=lambda: ModelSpec(backend="rules", name_or_path="rules"),
        title="Claim splitter model", description="Text model that splits an answer into atomic claims (or backend=rules).",
    )
    rewriter: ModelSpec = Field(
        default_factory=lambda: ModelSpec(backend="rules", name_or_path="rules"),
        title="Question rewriter model", description="Text model that rewrites each claim as a yes/no question (or backend=rules).",
    )
    eval_judge: ModelSpec | None = Field(
        None, title="Evaluation judge model", description="LLM judge for Object HalBench / MMHal / RefoMB (openai backend)."
    )


class PromptsConfig(_Section):
    model_config = _section("Prompts")

    source: str = Field(
        "shapes",
        description="shapes (the built-in world's generator), a jsonl/json file in the original "
        "format, a parquet, or a Hugging Face datasets id with image and question columns.",
    )
    per_iteration: int = Field(4000, ge=1, description="Fresh prompts drawn per iteration (paper: 4k).")
    detail_share: float = Field(
        0.7, ge=0, le=1, description="Shapes world: share of detailed-description prompts (rest are questions)."
    )
    data_root: str | None = Field(
        None, description="Image paths in a prompt file must resolve inside this folder."
    )


class SamplingConfig(_Section):
    model_config = _section("Sampling")

    n: int = Field(10, ge=1, description="Candidates per prompt (original: --repeat 10).")
    temperature: float = Field(0.7, ge=0, description="Sampling temperature (original: 0.7).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling (original: HF default 1.0).")
    top_k: int | None = Field(50, ge=1, description="Top-k (original: HF default 50).")
    max_new_tokens: int = Field(512, ge=1, description="Maximum answer length (original: 512).")
    seed: int = Field(0, description="Base seed; each (prompt, sample) gets its own derived seed.")
    shard_size: int = Field(256, ge=1, description="Prompts per Prefect task (scale-out unit).")


class ClaimsConfig(_Section):
    model_config = _section("Claims and questions")

    preset: Literal["project", "rlaifv-llama3"] = Field(
        "project",
        description="Prompt format for an LLM splitter/rewriter: the project's own, or the exact "
        "format of the released RLAIF-V Llama-3-8B split/changeq models.",
    )
    chunk_words: int = Field(
        250, ge=1, description="Long answers are split into sentence-aligned chunks of about this many "
        "words (the original silently truncated at 300 words)."
    )
    temperature: float = Field(0.2, ge=0, description="LLM splitter/rewriter temperature (original 0.2).")
    top_p: float = Field(0.9, gt=0, le=1, description="LLM splitter/rewriter top_p (original 0.9).")
    max_new_tokens: int = Field(256, ge=1, description="LLM splitter/rewriter budget (original 256).")


class JudgeConfig(_Section):
    model_config = _section("Labeler verdicts")

    question_suffix: str = Field(
        " Please answer yes or no.", description="Appended to every yes/no question (original)."
    )
    threshold: float = Field(
        0.5,
        ge=0, le=1, description="Claim accepted iff p_yes / (p_yes + p_no) > threshold (0.5 = the original's "
        "strict p_yes > p_no; ties are rejected).",
    )
    low_mass_error: bool = Field(
        True, description="Fail the judge stage when P(yes)+P(no) is low on (nearly) all its questions "
        "(a labeler that does not answer yes/no); false: warn only (random-init test labelers).",
    )


class PairsConfig(_Section):
    model_config = _section("Preference pairs")

    builder: Literal["paper", "minimal_edit_anchor", "best_of_n", "resample"] = Field(
        "paper",
        description="paper: all pairs with score gap >= min_gap, higher score chosen; "
        "minimal_edit_anchor: chosen = the answer minus its rejected claims, plus an anchor per "
        "prompt (see anchor); best_of_n: top- vs lowest-scored answer (for the "
        "best-of-N SFT control with dpo.loss_type=[sft]); resample: the answer up to its first rejected "
        "claim + the best of resample_k policy continuations ≻ the answer.",
    )
    resample_k: int = Field(4, ge=1, le=64, description="Continuations per answer prefix (builder resample).")
    resample_failed_continuations: bool = Field(
        False, description="Builder resample: also pair each correction ≻ the policy's most likely continuation "
        "of the same prefix that still has a rejected claim (a second, on-policy rejected side).",
    )
    min_gap: int = Field(1, ge=0, description="Minimum score difference between chosen and rejected.")
    per_prompt: int = Field(2, ge=1, description="Pairs kept per (image, question), sampled with the seed.")
    length_balance: bool = Field(True, description="The original's length-balance filter (docs/method.md §6).")
    anchors_per_prompt: int = Field(1, ge=0, description="Anchor pairs per prompt (minimal_edit_anchor).")
    anchor: Literal["omission_swap", "swap", "omission"] = Field(
        "omission_swap",
        description="Anchor of minimal_edit_anchor, built from the prompt's most complete fully accepted "
        "answer A. omission: A ≻ A minus one object; swap: A ≻ A with one object replaced by an object "
        "the labeler rejected in another answer; omission_swap: both (A ≻ A minus one object and with "
        "another replaced by a rejected one).",
    )
    seed: int = Field(0, description="Seed of the per-prompt sampling.")


class DPOConfig(_Section):
    model_config = _section("DPO training")

    beta: float = Field(0.1, gt=0, description="DPO beta (original 0.1).")
    learning_rate: float = Field(5e-7, gt=0, description="Original: 5e-7 full fine-tuning, 1e-5 LoRA.")
    epochs: float = Field(4.0, gt=0, description="Epochs per iteration (original 4).")
    max_steps: int = Field(-1, ge=-1, description="If > 0, overrides epochs.")
    checkpoints_per_epoch: int = Field(4, ge=1, description="Checkpoint every 1/k epoch (original: 4).")
    batch_size: int = Field(8, ge=1, description="Global batch (original: 1 per GPU x 8 GPUs).")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Linear warm-up share (original 0.05).")
    lr_scheduler: LRScheduler = Field("cosine", title="LR scheduler", description="Scheduler (original cosine).")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (original 0.01).")
    loss_type: list[LossType] = Field(
        default_factory=lambda: ["sigmoid"],
        min_length=1, title="Loss types", description='TRL loss types, e.g. ["sigmoid"] (original) or ["sigmoid", "sft"].',
    )
    loss_weights: list[float] | None = Field(None, description="Weights of loss_type entries.")
    lora: bool = Field(False, description="Train LoRA adapters instead of the full model.")
    lora_r: int = Field(64, ge=1, description="LoRA rank (original 64).")
    lora_alpha: int = Field(16, ge=1, description="LoRA alpha (original 16).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout (original 0.05).")
    freeze_vision_tower: bool = Field(True, description="Original: vision tower frozen.")
    launcher: Literal["inprocess", "accelerate"] = Field(
        "inprocess", description="inprocess, or accelerate launch in a subprocess."
    )
    accelerate_config: str | None = Field(
        None, description="Shipped accelerate config name (ddp, zero2, zero3, fsdp) or a path."
    )
    seed: int = Field(42, description="Trainer seed (original HF default 42).")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory.")
    logging_steps: int = Field(2, ge=1, description="Log training metrics every n optimizer steps (original 2).")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Weights during training and for the reference log-probs: auto = float32 weights with bf16 "
        "autocast on a bf16-capable GPU (plain float32 on the CPU); bfloat16 = pure bf16 weights.",
    )
    ref_batch_size: int = Field(8, ge=1, description="Pairs per forward pass when computing cached reference log-probs.")
    quantization: Literal["none", "4bit"] = Field(
        "none", description="QLoRA: load the frozen base in 4-bit (needs lora=true, a CUDA GPU and bitsandbytes)."
    )
    num_processes: int | None = Field(
        None, ge=1, description="Processes for launcher=accelerate (default: the accelerate config's; 1 on the CPU)."
    )


class EvalConfig(_Section):
    model_config = _section("Evaluation")

    benchmarks: list[str] = Field(
        default_factory=lambda: ["object_halbench", "mmhal"],
        description="Benchmarks run on every checkpoint (shapes, object_halbench, mmhal, refomb, amber).",
    )
    report_benchmarks: list[str] = Field(
        default_factory=list, title="Report benchmarks", description="The report split: benchmarks run only on the "
        "starting policy and each iteration's selected policy, never seen by selection (e.g. shapes_report).",
    )
    protocol: Literal["project", "rlaifv"] = Field(
        "project",
        description="project: the project's extraction, rubric and pooled both-orders RefoMB (docs/method.md §8, §11); "
        "rlaifv: the original RLAIF-V evaluation rules and prompts (read from eval.data.rlaifv_repo), comparable "
        "with published numbers.",
    )
    shapes_scenes: int = Field(300, ge=1, description="Held-out scenes for the shapes-world evaluation.")
    shapes_seed: int = Field(10_000, description="Seed of the held-out shapes scenes.")
    shapes_report_scenes: int | None = Field(None, ge=1, description="Held-out scenes of the shapes report split "
                                             "(default: as many as shapes_scenes).")
    shapes_report_seed: int = Field(20_000, description="Seed of the shapes report split's scenes (disjoint from "
                                    "shapes_seed's and the prompts').")
    temperature: float = Field(
        0.0, ge=0, description="Generation temperature for evaluation (0 = greedy / beam search)."
    )
    num_beams: int = Field(3, ge=1, description="Beam search width (original 3).")
    samples_per_prompt: int = Field(1, ge=1, description="Answers per prompt when sampling (temperature > 0).")
    seed: int = Field(1234, description="Seed of evaluation sampling (the same for every checkpoint).")
    max_new_tokens: int = Field(1024, ge=1, description="Evaluation answer budget (original 1024).")
    data: EvalData = Field(
        default_factory=EvalData,
        description="Benchmark data paths (eval.data.*, see EvalData), e.g. {object_halbench: path.jsonl, "
        "coco_instances: a.json,b.json}.",
    )


class SelectionConfig(_Section):
    model_config = _section("Checkpoint selection")

    metric: HallucinationMetric = Field(
        "chair_s", title="Metric", description="Lower-is-better response-level hallucination metric to minimise."
    )
    plus: list[HallucinationMetric] = Field(
        default_factory=list, title="Added metrics", description="Further hallucination metrics added to the metric "
        "before minimising, to select on several benchmarks (e.g. mmhal.hallucination_rate beside object_halbench.chair_s)."
    )

    @property
    def objective(self) -> str:
        """What selection minimises: the metric, or the sum `metric + plus…`."""
        return " + ".join([self.metric, *self.plus])
    tie_breaker: CoverageMetric = Field("recall", title="Tie breaker", description="Higher-is-better metric that breaks ties.")
    max_recall_drop: float = Field(
        0.10, ge=0, le=1, description="Never select a checkpoint whose recall fell more than this (absolute)."
    )
    include_start: bool = Field(
        True, description="The iteration's starting policy competes, so selection never gets worse."
    )


class IterationConfig(_Section):
    model_config = _section("Iterations")

    iterations: int = Field(4, ge=1, description="RLAIF-V iterations (original 4).")
    seed: int = Field(0, description="Run seed; every stage derives its seeds from it.")
    retries: int = Field(2, ge=0, description="Retries of model-running tasks.")
    retry_delay_s: float = Field(10.0, ge=0, description="Delay between retries.")


class StoreConfig(_Section):
    model_config = _section("Run store")

    url: str = Field("runs", min_length=1, description="Run store: a local folder or s3://bucket/prefix.")
    run_name: str = Field("default", min_length=1, description="Sub-folder of this run inside the store.")
    endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, Ceph, moto); credentials from AWS_* env."
    )


class ScaleConfig(_Section):
    """Where sharded stages run and which stages wait for a GPU slot; never part of a cache key, so a
    run's results (and its cache hits) are the same whichever runner computes them."""

    model_config = _section("Scale-out")

    task_runner: Literal["thread", "dask", "ray"] = Field(
        "thread",
        description="Task runner of the sampling and labeling shards: thread (in the flow's process), "
        "dask (prefect-dask: the cluster at dask_address, or a LocalCluster of dask_workers processes), "
        "ray (prefect-ray: the cluster at ray_address, or a local Ray).",
    )
    dask_address: str | None = Field(
        None, description="Scheduler of an existing Dask cluster, e.g. tcp://10.0.0.5:8786 (none: a LocalCluster)."
    )
    dask_workers: int = Field(2, ge=1, description="Worker processes of the LocalCluster (one thread each).")
    ray_address: str | None = Field(
        None, description="Existing Ray cluster, e.g. ray://head:10001 or auto (none: a local Ray on this machine)."
    )
    ray_num_gpus_per_shard: float = Field(
        0.0, ge=0, description="GPUs Ray reserves for each sampling/labeling shard (0: CPU shards; 0.5: two per GPU)."
    )
    gpu_concurrency_limit: str | None = Field(
        None,
        description="Name of a Prefect global concurrency limit (e.g. gpu, created with prefect gcl create gpu "
        "--limit 1) that every model-running task holds while it runs; none: no limit is taken.",
    )
    run_lock_wait_s: float = Field(0.0, ge=0, description="How long a run waits for another run holding its run "
                                   "folder (the run lock) before refusing; 0: refuse at once, naming the owner.")
    run_lock_stale_s: float = Field(120.0, gt=0, description="A run lock whose heartbeat is older than this (or "
                                    "whose process on this host is gone) is stale and taken over.")


class RunConfig(_Section):
    """The whole run: every stage's settings in one tree."""

    model_config = _section("RLAIF-V run")

    models: ModelsConfig = Field(default_factory=ModelsConfig, description="Model roles.")
    prompts: PromptsConfig = Field(default_factory=PromptsConfig, description="Prompt source.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Candidate sampling.")
    claims: ClaimsConfig = Field(default_factory=ClaimsConfig, description="Claim splitting/rewriting.")
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="Labeler scoring.")
    pairs: PairsConfig = Field(default_factory=PairsConfig, description="Pair assembly.")
    dpo: DPOConfig = Field(default_factory=DPOConfig, description="DPO training.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation.")
    selection: SelectionConfig = Field(default_factory=SelectionConfig, description="Checkpoint selection.")
    iteration: IterationConfig = Field(default_factory=IterationConfig, description="The loop.")
    store: StoreConfig = Field(default_factory=StoreConfig, description="Run store.")
    scale: ScaleConfig = Field(default_factory=ScaleConfig, description="Task runner and GPU concurrency limit.")


CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, *,
                check_machine: bool = True) -> RunConfig:
    """Load a YAML config (default: configs/shapes.yaml), apply `a.b=value` overrides and check it
    (rlaifv_core/config_checks.py: ConfigError naming every bad field; `check_machine=False`: no file,
    folder or hub-cache look-ups, for building deployments on another machine)."""
    path = Path(path) if path is not None else CONFIG_DIR / "shapes.yaml"
    if not path.exists() and (CONFIG_DIR / path).exists():
        path = CONFIG_DIR / path
    data = read_config_file(path)  # ConfigFileError: empty, not a mapping, a key or section twice
    apply_overrides(data, overrides or [])
    config = RunConfig.model_validate(data)
    check_config(config, check_machine=check_machine, where=str(path))
    return config


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    path = argv.pop(0) if argv and "=" not in argv[0] else None
    print(dump_config(load_config(path, argv)), end="")


if __name__ == "__main__":
    main()
