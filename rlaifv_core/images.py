"""Images in prompt records: PNG bytes in tables, PIL in memory, with safety limits.

    image = load_image_bytes(data)      # raises BadImage with a reason for corrupt or huge images
    image = load_image_bytes(data, refuse_blank=True)   # also BadImage `blank_image` for a one-colour image
    rgb = to_rgb(pil_image)             # 8-bit RGB as a viewer shows it (any PIL mode, EXIF orientation)
    data = fetch_image(url, max_bytes=20_000_000, timeout_s=30)   # bounded download of an image URL
"""

from __future__ import annotations

import io
import time
import urllib.request

import numpy as np
from PIL import Image, ImageOps

from .backends.base import VisualPrompt

MAX_PIXELS = 64_000_000  # larger images are refused (decompression bombs)


class BadImage(ValueError):
    """An image that cannot be used: corrupt, too large, missing. `reason` is a short slug
    (bad_image, image_too_large, missing_image, path_outside_root) that skip counts use."""

    def __init__(self, message: str, reason: str = "bad_image"):
        super().__init__(message)
        self.reason = reason


ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


def _scaled_grey(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit int and float greyscale as 8-bit 'L', scaled as a viewer does: 'I;16' by its bit
    depth; 'I' as 8-bit when its values fit 0..255, as 16-bit when they fit 0..65535 (16-bit PNGs, TIFFs),
    else from its real range; 'F' from 0..1 when its values fit, else from its real range (NaN → the minimum)."""
    values = np.asarray(image, dtype=np.float64)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    values = np.nan_to_num(values, nan=low, posinf=high, neginf=low)
    if image.mode.startswith("I;16"):
        scale_low, scale_high = 0.0, 65535.0
    elif image.mode == "I" and low >= 0 and high <= 255:
        scale_low, scale_high = 0.0, 255.0
    elif image.mode == "I" and low >= 0 and high <= 65535:
        scale_low, scale_high = 0.0, 65535.0
    elif image.mode == "F" and low >= 0 and high <= 1:
        scale_low, scale_high = 0.0, 1.0
    else:  # the real range (a constant image stays constant: 0, and counts as blank)
        scale_low, scale_high = low, (high if high > low else low + 1.0)
    values = (values - scale_low) * (255.0 / (scale_high - scale_low))
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image, name: str = "image") -> Image.Image:
    """An 8-bit RGB image as a viewer shows `image`: EXIF orientation applied; 16/32-bit and float greyscale
    scaled (`_scaled_grey`); transparency (alpha, a palette's or a colour key's) composited on white; CMYK,
    YCbCr, HSV and LAB converted. An animated or multi-frame image is refused (BadImage `animated_image`)."""
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise BadImage(f"{name}: animated or multi-frame image ({frames} frames); give one still frame",
                       "animated_image")
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a broken EXIF block: the pixels as stored
        pass
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _scaled_grey(image)
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def is_blank(image: Image.Image) -> bool:
    """Every pixel the same colour (after decoding): there is nothing to ask about."""
    return all(low == high for low, high in image.getextrema())


def load_image_bytes(data: bytes, name: str = "image", refuse_blank: bool = False) -> Image.Image:
    """Image bytes → 8-bit RGB as a viewer shows them (`to_rgb`). BadImage with a reason for empty,
    corrupt, huge (`image_too_large`), animated (`animated_image`) and, with `refuse_blank`, one-colour
    (`blank_image`) images."""
    if not data:
        raise BadImage(f"{name}: empty image bytes")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            if width * height > MAX_PIXELS:
                raise BadImage(f"{name}: {width}x{height} exceeds the {MAX_PIXELS:,}-pixel limit", "image_too_large")
            probe.verify()
        image = Image.open(io.BytesIO(data))
        image.load()
        image = to_rgb(image, name)
    except BadImage:
        raise
    except Image.DecompressionBombError as error:  # PIL's own limit (2 x its MAX_IMAGE_PIXELS) hit first
        raise BadImage(f"{name}: exceeds the {MAX_PIXELS:,}-pixel limit ({error})", "image_too_large") from error
    except Exception as error:  # PIL raises many types for corrupt data
        raise BadImage(f"{name}: cannot decode image ({type(error).__name__}: {error})") from error
    if refuse_blank and is_blank(image):
        colour = image.getpixel((0, 0))
        raise BadImage(f"{name}: blank image (every pixel is RGB {colour} after decoding)", "blank_image")
    return image


def image_to_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def decode_image(record: dict) -> VisualPrompt:
    """A prompt record (with `image` PNG bytes or None, and `question`) → VisualPrompt."""
    data = record.get("image")
    image = load_image_bytes(data, record.get("prompt_id", "image")) if data is not None else None
    return VisualPrompt(image=image, question=record["question"])


def fetch_image(url: str, max_bytes: int = 20_000_000, timeout_s: float = 30.0) -> bytes:
    """The bytes of an http(s) image URL, with a size and a total time limit: a body (declared or
    actual) over `max_bytes`, a download longer than `timeout_s` in all (a slow trickle included),
    another scheme or an HTTP error raise BadImage naming the URL. Decode with load_image_bytes."""
    if not url.lower().startswith(("http://", "https://")):
        raise BadImage(f"{url}: only http(s) image URLs are fetched", "bad_url")
    deadline = time.monotonic() + timeout_s
    stall_s = max(0.05, timeout_s / 4)  # one connect/read waits at most this: total <= 1.25 x timeout_s
    try:
        with urllib.request.urlopen(url, timeout=stall_s) as response:
            if not response.geturl().lower().startswith(("http://", "https://")):
                raise BadImage(f"{url}: redirected to a non-http(s) URL", "bad_url")
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise BadImage(f"{url}: {int(declared):,} bytes declared, limit {max_bytes:,}", "image_too_large")
            chunks, size = [], 0
            while block := response.read1(65536):
                size += len(block)
                if size > max_bytes:
                    raise BadImage(f"{url}: body exceeds the {max_bytes:,}-byte limit", "image_too_large")
                if time.monotonic() > deadline:
                    raise BadImage(f"{url}: download exceeded {timeout_s:g} s", "fetch_timeout")
                chunks.append(block)
    except BadImage:
        raise
    except TimeoutError as error:
        raise BadImage(f"{url}: download exceeded {timeout_s:g} s ({error})", "fetch_timeout") from error
    except OSError as error:  # URLError, HTTPError, connection errors
        if isinstance(getattr(error, "reason", None), TimeoutError):
            raise BadImage(f"{url}: download exceeded {timeout_s:g} s ({error})", "fetch_timeout") from error
        raise BadImage(f"{url}: cannot fetch ({type(error).__name__}: {error})", "fetch_failed") from error
    return b"".join(chunks)
