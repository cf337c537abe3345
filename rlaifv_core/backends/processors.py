"""Loading a model's processor, with an images-only path for processors whose video half needs torchvision.

    from rlaifv_core.backends.processors import load_processor, images_only
    processor = load_processor("Qwen/Qwen2-VL-2B-Instruct")      # works without torchvision
    processor = images_only(Qwen2VLProcessor)(image_processor=…, tokenizer=…, chat_template=…)

transformers builds Qwen2-VL-family processors with a video processor that imports torchvision
(which the README's CPU install leaves out: it breaks the CPU torch). This project sends images
only, so when `AutoProcessor` fails on the video half, the same processor class is built without
it (`images_only`): image processor, tokenizer and chat template exactly as saved. Asking such a
processor for video is a clear error, never a silent drop.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)


@lru_cache(maxsize=None)
def images_only(processor_cls):
    """A subclass of `processor_cls` without its `video_processor` attribute."""

    class ImagesOnly(processor_cls):
        video_processor = None

        @classmethod
        def get_attributes(cls):
            return [a for a in super().get_attributes() if a != "video_processor"]

        def __call__(self, *args, videos=None, **kwargs):
            if videos is not None:
                raise ValueError(f"{processor_cls.__name__} was loaded images-only (its video processor needs "
                                 "torchvision, which is not installed): video input is not supported")
            return super().__call__(*args, **kwargs)

    ImagesOnly.__name__ = ImagesOnly.__qualname__ = processor_cls.__name__
    ImagesOnly.__module__ = processor_cls.__module__
    return ImagesOnly


def _is_video_failure(error: Exception) -> bool:
    text = f"{type(error).__name__}: {error}".lower()
    return "video" in text or "torchvision" in text


def _processor_class_name(source: str, **kwargs) -> str | None:
    local = Path(source)
    names = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")
    for name in names:
        path = local / name if local.is_dir() else None
        if path is None:
            try:
                from huggingface_hub import hf_hub_download

                path = Path(hf_hub_download(source, name, revision=kwargs.get("revision")))
            except Exception:  # noqa: BLE001 - not every checkpoint has every file
                continue
        if path.exists():
            found = json.loads(path.read_text()).get("processor_class")
            if found:
                return found
    return None


def load_processor(source: str, **kwargs):
    """`AutoProcessor.from_pretrained(source, **kwargs)`, or the same processor class images-only when its
    video processor cannot be loaded without torchvision."""
    import transformers
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(source, **kwargs)
    except (ImportError, OSError, ValueError, AttributeError, TypeError) as error:
        if not _is_video_failure(error):
            raise
        name = _processor_class_name(source, **kwargs)
        cls = getattr(transformers, name, None) if name else None
        if cls is None:
            raise
        log.info("%s: %s's video processor is unavailable (%s); loading it images-only", source, name,
                 type(error).__name__)
        return images_only(cls).from_pretrained(source, **kwargs)
