"""Prompt sets: the original's jsonl/JSON-array input, parquet, any `datasets` dataset with image
and question columns, or a generator a plug-in registered (the shapes world's `shapes`) — as one
table with counted skips.

    from rlaifv_core.feedback.prompts import load_prompts
    frame, counts = load_prompts(config.prompts, iteration=1, seed=0)

Output columns: prompt_id (unique per image+question), ds_question_id, question, image (PNG
bytes), image_path, task, origin_dataset, truth (JSON list of objects in the shapes world, else
None), metainfos (JSON). Bad rows are skipped and counted by reason (`counts`); a source that
cannot be read at all raises `PromptSourceError` naming it. A question's `<image>` placeholders are
dropped (the original's files carry one); other special tokens of the usual model families
(`backends/user_text.py` `COMMON_SPECIAL`, every `<|…|>`) are removed, counted as `neutralised_question`
(each backend removes its own model's markers again before rendering).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections import Counter
from pathlib import Path

import pandas as pd

from .. import plugins
from ..backends.user_text import COMMON_SPECIAL, neutralise
from ..images import BadImage, image_to_png, load_image_bytes

MAX_QUESTION_CHARS = 4000
PROMPT_COLUMNS = ["prompt_id", "ds_question_id", "question", "image", "image_path", "task", "origin_dataset",
                  "truth", "metainfos"]


class PromptSourceError(ValueError):
    """A prompt source that cannot be read (wrong format, missing file, missing columns)."""


def prompt_id_for(image_bytes: bytes | None, question: str) -> str:
    digest = hashlib.sha256((image_bytes or b"") + b"\0" + question.encode()).hexdigest()
    return digest[:16]


def load_prompts(config, iteration: int = 1, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """The prompt slice for `iteration` (1-based): a fresh, disjoint slice each iteration."""
    if config.source in plugins.prompt_sources:  # a generator a plug-in registered (e.g. `shapes`)
        return plugins.prompt_sources.get(config.source)(config, iteration, seed)
    frame, counts = read_prompt_source(config.source, config.data_root)
    begin = (iteration - 1) * config.per_iteration
    if begin >= len(frame):
        raise PromptSourceError(
            f"{config.source}: {len(frame)} usable prompts, not enough for iteration {iteration} "
            f"at {config.per_iteration} per iteration")
    part = frame.iloc[begin:begin + config.per_iteration].reset_index(drop=True)
    counts["prompts"] = len(part)
    return part, counts


def read_prompt_source(source: str, data_root: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Every usable prompt of a source, in order, with skip counts."""
    if source.endswith((".jsonl", ".json")):
        records = _read_json_records(source)
    elif source.endswith(".parquet"):
        records = _read_table_records(pd.read_parquet(source, storage_options=None), source)
    else:
        try:
            import datasets

            dataset = datasets.load_dataset(source, split="train")
        except Exception as error:
            raise PromptSourceError(f"{source}: not a jsonl/json/parquet file and not loadable with "
                                    f"datasets.load_dataset ({error})") from error
        records = _read_table_records(dataset.to_pandas(), source)
    return normalise_records(records, source, data_root)


def _read_json_records(path: str) -> list[dict]:
    import fsspec

    try:
        with fsspec.open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError as error:
        raise PromptSourceError(f"{path}: file not found") from error
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PromptSourceError(f"{path}: not UTF-8 (byte {error.start}): {error.reason}") from error
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as error:
            raise PromptSourceError(f"{path}: looks like a JSON array but does not parse: {error}") from error
        if not all(isinstance(item, dict) for item in data):
            raise PromptSourceError(f"{path}: a JSON array of objects is expected")
        return data
    records = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise PromptSourceError(f"{path}: line {line_no} is neither JSONL nor part of a JSON array: {error}") from error
        if not isinstance(item, dict):
            raise PromptSourceError(f"{path}: line {line_no} is not a JSON object")
        records.append(item)
    return records


def _read_table_records(frame: pd.DataFrame, source: str) -> list[dict]:
    missing = {"question"} - set(frame.columns)
    if missing or not ({"image", "image_path"} & set(frame.columns)):
        raise PromptSourceError(f"{source}: needs a `question` column and an `image` or `image_path` column; "
                                f"has {sorted(frame.columns)}")
    return frame.to_dict("records")


def _resolve_path(path: str, data_root: str | None) -> Path:
    if data_root is None:
        return Path(path)
    root = Path(data_root).resolve()
    candidate = (root / path).resolve()
    if candidate != root and root not in candidate.parents:
        raise BadImage(f"image path {path!r} escapes the data root {root}", "path_outside_root")
    return candidate


def _image_bytes(record: dict, data_root: str | None) -> tuple[bytes | None, str]:
    image = record.get("image")
    path = record.get("image_path") or (record.get("metainfos") or {}).get("image_path") if isinstance(
        record.get("metainfos"), dict) else record.get("image_path")
    if isinstance(image, dict):  # datasets' Image feature: {bytes, path}
        path = path or image.get("path")
        image = image.get("bytes")
    if isinstance(image, (bytes, bytearray)) and image:
        return bytes(image), path or ""
    if isinstance(image, str) and image:
        # The original: a string of ≤ 100 characters is a path, longer ones are base64.
        if len(image) > 100:
            try:
                return base64.b64decode(image, validate=True), path or ""
            except (binascii.Error, ValueError) as error:
                raise BadImage(f"`image` is neither a path nor valid base64 ({error})") from error
        path = image
    if not path:
        raise BadImage("no image: needs `image` (bytes, base64 or path) or `image_path`", "missing_image")
    resolved = _resolve_path(path, data_root)
    if not resolved.is_file():
        raise BadImage(f"image file not found: {path}", "missing_image")
    try:
        return resolved.read_bytes(), str(path)
    except OSError as error:
        raise BadImage(f"image file unreadable: {path} ({type(error).__name__})", "missing_image") from error


def normalise_records(records: list[dict], source: str, data_root: str | None) -> tuple[pd.DataFrame, dict]:
    counts: Counter = Counter(rows_in=len(records))
    rows, seen, seen_ids = [], set(), set()
    for index, record in enumerate(records):
        question = record.get("question", record.get("raw_question"))
        if not isinstance(question, str) or not question.replace("<image>", "").strip():
            counts["skipped_empty_question"] += 1
            continue
        if len(question) > MAX_QUESTION_CHARS:
            counts["skipped_question_too_long"] += 1
            continue
        try:
            data, path = _image_bytes(record, data_root)
            image = load_image_bytes(data, f"{source} row {index}", refuse_blank=True)
        except BadImage as error:
            counts[f"skipped_{error.reason}"] += 1
            counts.setdefault("examples", [])
            if len(counts["examples"]) < 5:
                counts["examples"].append(f"row {index}: {error}")
            continue
        png = image_to_png(image)
        question, neutralised = neutralise(question.replace("<image>", ""), COMMON_SPECIAL)
        question = question.strip()
        if not question:
            counts["skipped_empty_question"] += 1
            continue
        if neutralised:
            counts["neutralised_question"] += 1
        prompt_id = prompt_id_for(png, question)
        if prompt_id in seen:
            counts["skipped_duplicate_prompt"] += 1
            continue
        seen.add(prompt_id)
        ds_question_id = str(record.get("ds_question_id") or path or prompt_id)
        if record.get("ds_question_id") and ds_question_id in seen_ids:  # kept (prompt_id is the key), counted
            counts["duplicate_ds_question_id"] += 1
        seen_ids.add(ds_question_id)
        metainfos = record.get("metainfos") if isinstance(record.get("metainfos"), dict) else {}
        rows.append({
            "prompt_id": prompt_id,
            "ds_question_id": ds_question_id,
            "question": question,
            "image": png,
            "image_path": path,
            "task": record.get("task") or record.get("origin_split") or "",
            "origin_dataset": str(record.get("origin_dataset") or Path(source).name),
            "truth": None,
            "metainfos": json.dumps(metainfos, default=str),
        })
    if not rows:
        raise PromptSourceError(f"{source}: no usable prompt among {len(records)} rows ({dict(counts)})")
    return pd.DataFrame(rows, columns=PROMPT_COLUMNS), dict(counts)
