"""Images in prompt records: PNG bytes in tables, PIL in memory, with safety limits.

    image = load_image_bytes(data)      # raises BadImage with a reason for corrupt or huge images
    data = fetch_image(url, max_bytes=20_000_000, timeout_s=30)   # bounded download of an image URL
"""

from __future__ import annotations

import io
import time
import urllib.request

from PIL import Image

from .backends.base import VisualPrompt

MAX_PIXELS = 64_000_000  # larger images are refused (decompression bombs)


class BadImage(ValueError):
    """An image that cannot be used: corrupt, too large, missing. `reason` is a short slug
    (bad_image, image_too_large, missing_image, path_outside_root) that skip counts use."""

    def __init__(self, message: str, reason: str = "bad_image"):
        super().__init__(message)
        self.reason = reason


def load_image_bytes(data: bytes, name: str = "image") -> Image.Image:
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
    except BadImage:
        raise
    except Image.DecompressionBombError as error:  # PIL's own limit (2 x its MAX_IMAGE_PIXELS) hit first
        raise BadImage(f"{name}: exceeds the {MAX_PIXELS:,}-pixel limit ({error})", "image_too_large") from error
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
