"""What every benchmark on user-supplied data shares: reading rows, decoding images, aligning answers.

    from rlaifv_core.evals.common import read_rows, load_image, align_answers, generate_answers
    rows = read_rows("mmhal-bench.json")                 # .jsonl, a JSON list, or {"data": [...]}
    answers = generate_answers(policy, rows)             # one answer per row, EVAL_SETTINGS by default
    answers = align_answers(len(rows), {"question_id": ids}, given_rows)   # by id, never silently by position

A benchmark record says where its answers came from: `generated_record` (the evaluated model
answered here, with its settings) or `given_record` (a file or rows of answers).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from ..backends.base import Backend, GenerationSettings, VisualPrompt

#: The original evaluation generation: beam search 3, greedy, 1024 new tokens.
EVAL_SETTINGS = GenerationSettings(n=1, temperature=0.0, num_beams=3, max_new_tokens=1024)


def read_rows(path: str | os.PathLike) -> list[dict]:
    """Rows of a .jsonl file, or of a .json file holding a list (or {"data": [...]})."""
    text = Path(path).read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        rows = json.loads(text)
    elif stripped.startswith("{") and not str(path).endswith(".jsonl"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            rows = next((v for v in data.values() if isinstance(v, list)), [data])
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path}: every row must be a JSON object")
    return rows


def load_image(row: dict, data_root: str | os.PathLike | None = None):
    """The PIL image of a benchmark row: `image` (base64, data URL, or a path) or `image_path`.
    Paths must resolve inside data_root when one is given. URLs are not fetched."""
    from PIL import Image

    from ..images import to_rgb

    value = row.get("image")
    path = row.get("image_path")
    if not path and isinstance(value, str) and value:
        looks_like_path = len(value) < 1024 and re.search(r"\.(jpe?g|png|gif|bmp|webp|tiff?)$", value, re.I)
        if looks_like_path or value.startswith(("http://", "https://")):
            path = value
        else:
            blob = value.split(",", 1)[1] if value.startswith("data:") else value
            name = f"row {row.get('image_id', row.get('id', '?'))}"
            try:
                decoded = Image.open(io.BytesIO(base64.b64decode(blob)))
                decoded.load()
            except Exception as exc:  # noqa: BLE001
                raise ValueError(f"{name}: undecodable base64 image") from exc
            return to_rgb(decoded, name)
    if not path:
        raise ValueError(f"row {row.get('image_id', row.get('id', '?'))}: no image (image / image_path)")
    if str(path).startswith(("http://", "https://")):
        raise ValueError(f"{path}: images are not fetched; download them and give image_path")
    full = Path(path)
    if data_root is not None:
        root = Path(data_root).resolve()
        full = (root / path).resolve()
        if root != full and root not in full.parents:
            raise ValueError(f"{path}: resolves outside data_root {root}")
    return to_rgb(Image.open(full), str(path))


def answer_text(row: dict) -> str:
    for key in ("text", "answer", "model_answer", "response", "output"):
        if isinstance(row.get(key), str):
            return row[key]
    raise ValueError(f"answer row without text/answer/model_answer/response: {sorted(row)}")


def align_answers(n_items: int, item_keys: dict[str, list], answer_rows: Sequence[dict],
                  what: str = "answers") -> list[str]:
    """Answer texts in item order: merged by the first id field (of `item_keys`, e.g.
    {"question_id": [...]}) that every answer row carries and that identifies every item; by
    position only when there is no usable id and the counts match; else ValueError."""
    n = n_items
    for field_name, ids in item_keys.items():
        if not answer_rows or not all(field_name in row for row in answer_rows):
            continue
        ids = [str(i) for i in ids]
        if len(set(ids)) != len(ids):
            continue  # the items are not unique on this field
        by_id: dict[str, str] = {}
        for row in answer_rows:
            key = str(row[field_name])
            if key in by_id:
                raise ValueError(f"{what}: duplicate {field_name} {key!r}")
            by_id[key] = answer_text(row)
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise ValueError(f"{what}: no answer for {len(missing)} items by {field_name} (e.g. {missing[:3]})")
        return [by_id[i] for i in ids]
    if len(answer_rows) != n:
        raise ValueError(f"{what}: {len(answer_rows)} answers for {n} items and no shared id field; "
                         f"refusing to merge by position")
    return [answer_text(row) for row in answer_rows]


def generated_record(backend: Backend, settings: GenerationSettings) -> dict:
    """The `generation` entry of a record whose answers the evaluated model generated here."""
    return {"source": "generated", "settings": asdict(settings), "model": backend.identity}


def given_record(answers) -> dict:
    """The `generation` entry of a record scoring answers given as a file (its path) or as rows."""
    return {"source": str(answers) if isinstance(answers, (str, os.PathLike)) else "given", "settings": None}


def generate_answers(backend: Backend, rows: Sequence[dict], settings: GenerationSettings = EVAL_SETTINGS,
                     data_root: str | os.PathLike | None = None, question_key: str = "question") -> list[str]:
    """One answer per row (its image and question) from a VLM backend."""
    prompts = [VisualPrompt(load_image(row, data_root), row[question_key]) for row in rows]
    outputs = backend.generate(prompts, settings)
    if len(outputs) != len(prompts):
        raise RuntimeError(f"backend returned {len(outputs)} answer lists for {len(prompts)} prompts")
    return [samples[0] if samples else "" for samples in outputs]
