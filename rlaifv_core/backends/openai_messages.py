"""Request content for the openai backend: images as PNG data URLs, one user turn.

    from rlaifv_core.backends.openai_messages import image_data_url, user_message
    user_message(VisualPrompt(image, "What is in the image?"))  # {"role": "user", "content": [...]}
"""

from __future__ import annotations

import base64
import io

from PIL import Image

from .base import VisualPrompt
from .user_text import COMMON_MARKERS, neutralise


def image_data_url(image: Image.Image) -> str:
    """A PNG base64 data URL (lossless, so the server sees exactly these pixels).

    Transparency travels as RGBA: vLLM composites only RGBA on white and converts every other mode with
    a plain `convert("RGB")` (vllm/multimodal/image.py, convert_image_mode), which drops an LA image's
    alpha, while the in-process processors composite any transparency on white (transformers'
    convert_to_rgb). Sent as RGBA, a served model sees the pixels an in-process one does, whatever the
    server does with the other modes."""
    if image.mode != "RGBA" and ("A" in image.getbands() or image.info.get("transparency") is not None):
        image = image.convert("RGBA")
    elif image.mode not in ("RGB", "RGBA", "L", "P", "1", "I", "I;16"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def user_message(prompt: VisualPrompt) -> dict:
    """One user turn with the image part (if any) before the text part."""
    content: list[dict] = []
    if prompt.image is not None:
        content.append({"type": "image_url", "image_url": {"url": image_data_url(prompt.image)}})
    content.append({"type": "text", "text": neutralise(prompt.question, COMMON_MARKERS)[0]})
    return {"role": "user", "content": content}
