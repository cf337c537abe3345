"""The paths of the user-supplied benchmark files: the `eval.data` section of the config.

    from rlaifv_core.config import load_config
    load_config("configs/llava15-7b.yaml").eval.data.coco_instances   # 'data/coco2014/annotations/instances_val2014.json,…'

A typed section, so a misspelt key is an error when the config is loaded; which benchmark reads
which key is listed in rlaifv_core/evals/external.py (`DATA_KEYS`).
"""

from __future__ import annotations

from pydantic import Field

from .config_base import _section, _Section


class EvalData(_Section):
    """Paths of the user-supplied benchmark files; an unknown key is an error at load time.
    Which benchmark reads which key: DATA_KEYS in rlaifv_core/evals/external.py."""

    model_config = _section("Benchmark data")

    object_halbench: str | None = Field(None, description="Object HalBench questions (jsonl: image_id, question, image).")
    coco_instances: str | None = Field(
        None, description="COCO-2014 instances json files, comma-separated (e.g. instances_val2014.json,instances_train2014.json)."
    )
    coco_captions: str | None = Field(
        None, description="COCO-2014 captions json files, comma-separated (e.g. captions_val2014.json,captions_train2014.json)."
    )
    image_root: str | None = Field(None, description="Image paths in the benchmark files resolve inside this folder.")
    mmhal: str | None = Field(None, description="MMHal-Bench questions (json/jsonl in the answer-template format).")
    refomb: str | None = Field(None, description="RefoMB items (jsonl with description / gt_description).")
    refomb_references: str | None = Field(None, description="RefoMB reference answers (jsonl).")
    amber_annotations: str | None = Field(None, description="AMBER annotations.json.")
    amber_queries: str | None = Field(None, description="AMBER query file (generative and/or discriminative).")
    amber_relation: str | None = Field(None, description="AMBER relation.json (optional).")
    amber_safe_words: str | None = Field(None, description="AMBER safe_words.txt (optional).")
    judge_cache: str | None = Field(None, description="Judge reply cache (jsonl); default .judge-cache.jsonl beside the data.")
    rlaifv_repo: str | None = Field(
        None,
        description="The user's checkout of the original RLAIF-V repository: protocol rlaifv reads its synonym list "
        "and judge prompts from there (eval/data/synonyms_refine.txt, eval/eval_gpt_obj_halbench.py, "
        "eval/eval_gpt_mmhal.py, eval/eval_RefoMB_p0.py, eval/eval_hallucination.py) unless a key below names a file.",
    )
    coco_synonyms: str | None = Field(
        None, description="Protocol rlaifv: the synonym list (synonyms_refine.txt format: a class, then its synonyms, "
        "comma-separated, one class per line). Default: <rlaifv_repo>/eval/data/synonyms_refine.txt."
    )
    objhal_extraction_prompt: str | None = Field(
        None, description="Protocol rlaifv: the Object HalBench extraction prompt ({question}, {answer}), a text file or "
        "the original's .py. Default: <rlaifv_repo>/eval/eval_gpt_obj_halbench.py."
    )
    mmhal_judge_prompt: str | None = Field(
        None, description="Protocol rlaifv: the MMHal-Bench judge template (four {} or {image_content} {question} "
        "{gt_answer} {answer}), a text file or the original's .py. Default: <rlaifv_repo>/eval/eval_gpt_mmhal.py."
    )
    refomb_judge_prompt: str | None = Field(
        None, description="Protocol rlaifv: the RefoMB comparison prompt ({description} {question} {answer_a} "
        "{answer_b}), a text file or the original's .py. Default: <rlaifv_repo>/eval/eval_RefoMB_p0.py."
    )
    refomb_review_prompt: str | None = Field(
        None, description="Protocol rlaifv: the RefoMB second-pass hallucination review prompt ({review}), a text file "
        "or the original's .py. Default: <rlaifv_repo>/eval/eval_hallucination.py."
    )
