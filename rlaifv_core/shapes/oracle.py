"""The oracle labeler: exact answers to yes/no questions about a shapes-world image.

    from rlaifv_core.shapes.oracle import OracleLabeler
    OracleLabeler().yes_no(image, ["is there a red circle ? Please answer yes or no."])

Reads the objects back from the pixels (each 16-px cell holds at most one object of a known
colour and shape), so it needs nothing but the image. For ablations only (feedback from the
truth); the default loop never uses it.
"""

from __future__ import annotations

from typing import Sequence

from PIL import Image

from ..backends.base import Backend, YesNo
from .benchmark import mentioned_objects
from .world import CELL, COLOURS, GRID, ObjectType


def objects_in_image(image: Image.Image) -> frozenset[ObjectType]:
    pixels = image.convert("RGB").load()
    found = set()
    for cell in range(GRID * GRID):
        row, col = divmod(cell, GRID)
        x0, y0 = col * CELL + 2, row * CELL + 2
        centre = pixels[x0 + 6, y0 + 8]
        colour = next((name for name, rgb in COLOURS.items() if rgb == centre), None)
        if colour is None:
            continue
        if pixels[x0 + 1, y0 + 1] == centre:
            shape = "square"
        elif pixels[x0 + 1, y0 + 11] == centre:
            shape = "triangle"
        else:
            shape = "circle"
        found.add((colour, shape))
    return frozenset(found)


class OracleLabeler(Backend):
    fingerprint = "oracle:shapes-pixels-v1"
    identity = {"backend": "oracle", "model": "shapes ground truth", "served_model": "oracle"}
    batch_size = 1

    def generate(self, prompts, settings):  # pragma: no cover - a labeler only
        raise NotImplementedError("the oracle only answers yes/no questions")

    def yes_no(self, image: Image.Image | None, questions: Sequence[str]) -> list[YesNo]:
        truth = objects_in_image(image) if image is not None else frozenset()
        out = []
        for question in questions:
            mentions = mentioned_objects(question)
            if not mentions:  # not a question about an object: abstain as a rejection
                out.append(YesNo(0.0, 0.0))
                continue
            obj, negated = mentions[0]
            yes = (obj in truth) != negated
            out.append(YesNo(1.0 if yes else 0.0, 0.0 if yes else 1.0))
        return out
