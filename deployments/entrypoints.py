"""The deployed flows: the four flows with one parameter per config section instead of one `config`.

    entrypoint: deployments/entrypoints.py:iterate          # prefect.yaml, serve.py
    parameters: {models: "{{ shapes.config.models }}", prompts: ..., scale: ...}   # steps.py resolves them

The UI's deployment Parameters tab and "Custom run" form then show each section (models, prompts,
sampling, claims, judge, pairs, dpo, eval, selection, iteration, store, scale) on its own row / under
its own title instead of one single-line JSON blob. Each function builds the RunConfig from its
sections and runs the flow's body (flows/*.py) in its own run: the same flow names (`iterate`,
`generate`, `train-dpo`, `evaluate`), run names, tags, tasks and cache keys as `python flows/iterate.py`
or the flows' Python API, which are unchanged. Section parameters have no default in the signature,
so the form lists them as required (not "(Optional)"); their defaults are the deployment's parameters.
The flows' own extra parameters whose names a section takes are renamed here: generate's and train's
`iteration` is `iteration_number`, train's `pairs` is `pairs_source`, evaluate's `models` is `checkpoints`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from prefect import flow

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # flows/, tasks/ from this checkout

from flows import evaluate as evaluate_flow  # noqa: E402
from flows import generate as generate_flow  # noqa: E402
from flows import iterate as iterate_flow  # noqa: E402
from flows import train as train_flow  # noqa: E402
from flows.names import prefixed_run_name, run_name_of_config  # noqa: E402
from rlaifv_core.config import (ClaimsConfig, DPOConfig, EvalConfig, IterationConfig, JudgeConfig,  # noqa: E402
                                ModelsConfig, PairsConfig, PromptsConfig, RunConfig, SamplingConfig, ScaleConfig,
                                SelectionConfig, StoreConfig)
from rlaifv_core.store import ArtifactRef  # noqa: E402
from tasks.train_dpo import TrainDPOResult  # noqa: E402

SECTIONS = tuple(RunConfig.model_fields)  # models, prompts, …, scale: the parameters every function below takes


def sections_of(config: RunConfig) -> dict:
    """A config as the deployments' parameters: {section: its values as JSON}."""
    return {name: getattr(config, name).model_dump(mode="json") for name in SECTIONS}


@flow(name="iterate", flow_run_name=run_name_of_config, log_prints=True)
def iterate(models: ModelsConfig, prompts: PromptsConfig, sampling: SamplingConfig, claims: ClaimsConfig,
            judge: JudgeConfig, pairs: PairsConfig, dpo: DPOConfig, eval: EvalConfig, selection: SelectionConfig,
            iteration: IterationConfig, store: StoreConfig, scale: ScaleConfig) -> dict:
    """RLAIF-V: iteration.iterations rounds of feedback, DPO, evaluation and selection (flows/iterate.py)."""
    return iterate_flow.iterate.fn(RunConfig(**{k: v for k, v in locals().items() if k in SECTIONS}))


@flow(name="generate", flow_run_name="generate-iter-{iteration_number}", log_prints=True)
def generate(iteration_number: int, models: ModelsConfig, prompts: PromptsConfig, sampling: SamplingConfig,
             claims: ClaimsConfig, judge: JudgeConfig, pairs: PairsConfig, dpo: DPOConfig, eval: EvalConfig,
             selection: SelectionConfig, iteration: IterationConfig, store: StoreConfig, scale: ScaleConfig,
             policy_checkpoint: ArtifactRef | None = None) -> generate_flow.GenerateResult:
    """One iteration's feedback data: samples, claims, verdicts and pairs (flows/generate.py).

    Args:
        iteration_number: Which iteration: its prompt slice and its store folder iter-k.
        policy_checkpoint: Policy checkpoint to sample with (none: the configured policy).
    """
    config = RunConfig(**{k: v for k, v in locals().items() if k in SECTIONS})
    return generate_flow.generate.fn(config, iteration=iteration_number, policy_checkpoint=policy_checkpoint)


@flow(name="train-dpo", flow_run_name=prefixed_run_name("train-dpo"), log_prints=True)
def train(pairs_source: str, models: ModelsConfig, prompts: PromptsConfig, sampling: SamplingConfig,
          claims: ClaimsConfig, judge: JudgeConfig, pairs: PairsConfig, dpo: DPOConfig, eval: EvalConfig,
          selection: SelectionConfig, iteration: IterationConfig, store: StoreConfig, scale: ScaleConfig,
          iteration_number: int = 1, model: str | None = None, reference: str | None = None, limit: int | None = None,
          split: str = "train", data_root: str | None = None) -> TrainDPOResult:
    """DPO on a pairs table, ours or the RLAIF-V-Dataset format (flows/train.py).

    Args:
        pairs_source: Pairs parquet file or folder, fsspec URL or datasets hub id.
        iteration_number: Store folder iter-k of the imported pairs and the checkpoints.
        model: Starting policy (none: models.policy).
        reference: Reference model (none: the starting policy).
        limit: First n pairs only (none: all).
        split: Hub dataset split.
        data_root: Folder that relative image paths resolve in.
    """
    config = RunConfig(**{k: v for k, v in locals().items() if k in SECTIONS})
    return train_flow.train.fn(config, pairs_source, model=model, iteration=iteration_number, reference=reference,
                               limit=limit, split=split, data_root=data_root)


@flow(name="evaluate", flow_run_name=prefixed_run_name("evaluate"), log_prints=True)
def evaluate(models: ModelsConfig, prompts: PromptsConfig, sampling: SamplingConfig, claims: ClaimsConfig,
             judge: JudgeConfig, pairs: PairsConfig, dpo: DPOConfig, eval: EvalConfig, selection: SelectionConfig,
             iteration: IterationConfig, store: StoreConfig, scale: ScaleConfig,
             checkpoints: list[str] | None = None) -> list[dict]:
    """Evaluate models on the configured benchmarks (flows/evaluate.py).

    Args:
        checkpoints: Models to evaluate: hub ids, folders or shapes:policy (none: the configured policy).
    """
    config = RunConfig(**{k: v for k, v in locals().items() if k in SECTIONS})
    return evaluate_flow.evaluate.fn(config, checkpoints)
