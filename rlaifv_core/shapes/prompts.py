"""The shapes world as a prompt source: a fresh, disjoint slice of scenes for every iteration.

    from rlaifv_core.shapes.prompts import load_shapes_prompts
    frame, counts = load_shapes_prompts(config.prompts, iteration=1, seed=0)   # prompts.source: shapes

Registered as the prompt source `shapes` by `rlaifv_core.shapes.plugin`. Iteration k draws its
scenes from seed `seed * 7919 + k * SHAPES_SEED_STRIDE`, so no scene is reused across iterations
and none comes from the held-out evaluation seeds.
"""

from __future__ import annotations

import json

import pandas as pd

from ..feedback.prompts import PROMPT_COLUMNS, prompt_id_for
from ..images import image_to_png
from .world import ShapesWorld

SHAPES_SEED_STRIDE = 1_000_000  # iteration k draws scenes from seed k * stride: never reused, never eval


def load_shapes_prompts(config, iteration: int = 1, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """`config.per_iteration` prompts for `iteration` (1-based), `config.detail_share` of them detail questions."""
    start = seed * 7_919 + iteration * SHAPES_SEED_STRIDE
    frame = shapes_prompts(start, config.per_iteration, config.detail_share)
    return frame, {"rows_in": len(frame), "prompts": len(frame)}


def shapes_prompts(start_seed: int, count: int, detail_share: float) -> pd.DataFrame:
    rows = []
    for record in ShapesWorld().prompts(start_seed, count, detail_share):
        scene = record["scene"]
        image = image_to_png(scene.render())
        rows.append({
            # Two seeds can draw the same scene; the seed keeps their prompts distinct.
            "prompt_id": f"{prompt_id_for(image, record['question'])[:12]}-{scene.seed}",
            "ds_question_id": record["ds_question_id"],
            "question": record["question"],
            "image": image,
            "image_path": "",
            "task": record["task"],
            "origin_dataset": "shapes",
            "truth": json.dumps(sorted(f"{c} {s}" for c, s in scene.objects)),
            "metainfos": json.dumps({"seed": scene.seed}),
        })
    return pd.DataFrame(rows, columns=PROMPT_COLUMNS)
