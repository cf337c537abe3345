"""The paths of the user-supplied benchmark files: the `eval.data` section of the config.

    from rlaifv_core.config import load_config
    load_config("configs/llava15-7b.yaml").eval.data.coco_instances   # 'data/coco2014/annotations/instances_val2014.json,…'

A typed section, so a misspelt key is an error when the config is loaded; which benchmark reads
which key is listed here (`DATA_KEYS`, with `eval.protocol: rlaifv` also `RLAIFV_KEYS`), read by
rlaifv_core/evals/external.py and checked at load by rlaifv_core/config_checks.py; `data_files` names the
files whose content keys a benchmark's cached results.
"""

from __future__ import annotations

from pydantic import Field

from .config_base import _section, _Section

DATA_KEYS = {
    "object_halbench": ("object_halbench", "coco_instances", "coco_captions", "image_root", "judge_cache"),
    "mmhal": ("mmhal", "image_root", "judge_cache"),
    "refomb": ("refomb", "refomb_references", "image_root", "judge_cache"),
    "amber": ("amber_annotations", "amber_queries", "amber_relation", "amber_safe_words", "image_root"),
}
RLAIFV_KEYS = {
    "object_halbench": ("rlaifv_repo", "coco_synonyms", "objhal_extraction_prompt"),
    "mmhal": ("rlaifv_repo", "mmhal_judge_prompt"),
    "refomb": ("rlaifv_repo", "refomb_judge_prompt", "refomb_review_prompt"),
    "amber": (),
}
REQUIRED_KEYS = {"object_halbench": ("object_halbench", "coco_instances"), "mmhal": ("mmhal",),
                 "refomb": ("refomb", "refomb_references"), "amber": ("amber_annotations", "amber_queries")}
#: keys naming files (comma-separated lists allowed) that must exist; image_root and rlaifv_repo are folders
FILE_KEYS = {"object_halbench": ("object_halbench", "coco_instances", "coco_captions"), "mmhal": ("mmhal",),
             "refomb": ("refomb", "refomb_references"),
             "amber": ("amber_annotations", "amber_queries", "amber_relation", "amber_safe_words")}
#: benchmarks that cannot run without an LLM judge (models.eval_judge)
JUDGE_REQUIRED = ("mmhal", "refomb")
#: eval.data key -> where the original RLAIF-V repository keeps the file (protocol rlaifv, under rlaifv_repo).
ORIGINAL_FILES = {
    "coco_synonyms": "eval/data/synonyms_refine.txt",
    "objhal_extraction_prompt": "eval/eval_gpt_obj_halbench.py",
    "mmhal_judge_prompt": "eval/eval_gpt_mmhal.py",
    "refomb_judge_prompt": "eval/eval_RefoMB_p0.py",
    "refomb_review_prompt": "eval/eval_hallucination.py",
}


def data_files(eval_config, bench: str) -> dict[str, list[str]]:
    """The files of eval.data that `bench` reads ({key: [path, …]}), for its cache key: the benchmark files
    and, under protocol rlaifv, the original's files (`<rlaifv_repo>/…` unless a key names one). Folders
    (image_root, rlaifv_repo itself) and the judge's reply cache are not files of the key."""
    data = eval_config.data
    files = {key: [p.strip() for p in getattr(data, key).split(",") if p.strip()]
             for key in FILE_KEYS.get(bench, ()) if getattr(data, key)}
    if eval_config.protocol == "rlaifv":
        for key in RLAIFV_KEYS.get(bench, ()):
            if key in ORIGINAL_FILES and (getattr(data, key) or data.rlaifv_repo):
                files[key] = [getattr(data, key) or f"{data.rlaifv_repo}/{ORIGINAL_FILES[key]}"]
    return files


class EvalData(_Section):
    """Paths of the user-supplied benchmark files; an unknown key is an error at load time.
    Which benchmark reads which key: DATA_KEYS below."""

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
