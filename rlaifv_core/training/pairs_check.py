"""Preference pairs checked row by row before any model loads: what would train wrongly is a counted skip
naming the row, a file with no usable pair an error naming it.

    from rlaifv_core.training import check_pairs
    frame, counts = check_pairs(load_pairs("pairs.parquet"), source="pairs.parquet", data_root=None)

Each row needs text in `question`, `chosen` and `rejected` (None or NaN: `skipped_missing_text`; a number,
list or bytes: `skipped_non_text`; blank: `skipped_empty_text`), two different answers
(`skipped_equal_sides`), a question free of a model's image placeholder tokens (`<image>` itself is
removed, as the prompt reader does, and counted as `image_placeholder_removed`; others such as
`<|image_pad|>` are `skipped_placeholder_in_question`), an image that decodes (`skipped_bad_image`,
`skipped_missing_image`, `skipped_animated_image`, `skipped_blank_image`, …) and must not repeat an
earlier row (`skipped_duplicate_pair`). Images that are not plain 8-bit RGB or greyscale (16-bit, float,
transparent, CMYK, rotated by EXIF) are stored as the PNG a viewer would show (`images_converted`).
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter

import pandas as pd

from ..images import BadImage, image_to_png, load_image_bytes
from .pairs_data import PairsFileError, image_bytes

TEXT_COLUMNS = ("question", "chosen", "rejected")
#: image placeholders of the common VLM chat templates: in a question they would add a second image slot
PLACEHOLDERS = ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>", "<|image|>", "<ImageHere>", "<img>", "</img>",
                "<image_placeholder>", "<im_patch>", "<im_start>", "<im_end>", "<|reserved_special_token_0|>")
EXAMPLES_PER_REASON = 2


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _text_fault(row: dict) -> str | None:
    for column in TEXT_COLUMNS:
        value = row.get(column)
        if _missing(value):
            return f"missing_text: `{column}` is empty (None/NaN)"
        if not isinstance(value, str):
            return f"non_text: `{column}` is a {type(value).__name__}, not text ({str(value)[:40]!r})"
    for column in TEXT_COLUMNS:
        if not row[column].replace("<image>", "").strip():
            return f"empty_text: `{column}` is blank"
    for token in PLACEHOLDERS:
        if token in row["question"]:
            return f"placeholder_in_question: the question contains the image placeholder {token!r}"
    if row["chosen"].strip() == row["rejected"].strip():
        return "equal_sides: `chosen` and `rejected` are the same text"
    return None


def viewable_image_bytes(data: bytes, name: str) -> tuple[bytes, bool]:
    """The bytes to train on and whether they were converted: plain 8-bit RGB/greyscale images as given,
    others as the PNG of what a viewer shows. BadImage (with its reason) for an unusable or blank image."""
    from PIL import Image

    image = load_image_bytes(data, name, refuse_blank=True)
    with Image.open(io.BytesIO(data)) as probe:
        plain = probe.mode in ("RGB", "L") and probe.getexif().get(0x0112, 1) == 1
    return (data, False) if plain else (image_to_png(image), True)


def check_pairs(frame: pd.DataFrame, source: str = "pairs", data_root: str | None = None) -> tuple[pd.DataFrame, dict]:
    """The usable rows of `frame` (images inlined as {bytes, path}, index reset) and the counts: rows_in,
    pairs, each skip reason, image_placeholder_removed, images_converted and `examples` naming the rows
    (two per reason). PairsFileError naming `source` when no row is usable."""
    counts: Counter = Counter(rows_in=len(frame))
    examples: list[str] = []
    per_reason: Counter = Counter()
    keep, images, seen = [], [], set()
    for index, row in enumerate(frame.to_dict("records")):
        idx = row.get("idx")
        where = f"row {index}" + ("" if _missing(idx) else f" (idx {idx!r})" if isinstance(idx, str)
                                  else f" (idx {idx})")
        fault = _text_fault(row)
        image = None
        if fault is None:
            try:
                data, converted = viewable_image_bytes(image_bytes(row, data_root), "image")
                path = row["image"].get("path") if isinstance(row.get("image"), dict) else None
                image = {"bytes": data, "path": path}
            except BadImage as error:
                fault = f"{error.reason}: {error}"
            except (ValueError, OSError) as error:  # no image, a path outside data_root, an unreadable file
                fault = f"missing_image: {type(error).__name__}: {error}"
        if fault is None:
            digest = hashlib.sha256(hashlib.sha256(image["bytes"]).digest())
            for column in TEXT_COLUMNS:
                digest.update(b"\0" + row[column].replace("<image>", "").strip().encode())
            if digest.digest() in seen:
                fault = "duplicate_pair: the same image, question and answers as an earlier row"
            seen.add(digest.digest())
        if fault is not None:
            reason, _, detail = fault.partition(": ")
            counts[f"skipped_{reason}"] += 1
            if per_reason[reason] < EXAMPLES_PER_REASON:  # every reason gets an example naming its row
                examples.append(f"{where}: {detail}")
            per_reason[reason] += 1
            continue
        counts["images_converted"] += converted
        counts["image_placeholder_removed"] += "<image>" in row["question"]
        keep.append(index)
        images.append(image)
    counts = {k: v for k, v in counts.items() if v or k == "rows_in"}
    counts["pairs"] = len(keep)
    if examples:
        counts["examples"] = examples
    if not keep:
        raise PairsFileError(f"{source}: no usable pair among {len(frame)} rows ({counts})")
    usable = frame.iloc[keep].reset_index(drop=True).copy()
    usable["question"] = [q.replace("<image>", "").strip() for q in usable["question"]]
    usable["image"] = images
    return usable, counts
