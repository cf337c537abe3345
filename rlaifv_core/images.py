"""Images in prompt records: PNG bytes in tables, PIL in memory, with safety limits.

    image = load_image_bytes(data)      # raises BadImage with a reason for corrupt or huge images
"""

from __future__ import annotations

import io

from PIL import Image

from .backends.base import VisualPrompt

MAX_PIXELS = 64_000_000  # larger images are refused (decompression bombs)


class BadImage(ValueError):
    """An image that cannot be used: corrupt, too large, missing."""


def load_image_bytes(data: bytes, name: str = "image") -> Image.Image:
    if not data:
        raise BadImage(f"{name}: empty image bytes")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            if width * height > MAX_PIXELS:
                raise BadImage(f"{name}: {width}x{height} exceeds the {MAX_PIXELS:,}-pixel limit")
            probe.verify()
        image = Image.open(io.BytesIO(data))
        image.load()
    except BadImage:
        raise
    except Exception as error:  # PIL raises many types for corrupt data
        raise BadImage(f"{name}: cannot decode image ({type(error).__name__}: {error})") from error
    return image.convert("RGB")


def image_to_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def decode_image(record: dict) -> VisualPrompt:
    """A prompt record (with `image` PNG bytes or None, and `question`) → VisualPrompt."""
    data = record.get("image")
    image = load_image_bytes(data, record.get("prompt_id", "image")) if data is not None else None
    return VisualPrompt(image=image, question=record["question"])
