"""The zoo's replicas are what they claim: real vocab ids, special tokens, processor classes, templates."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.zoo import templates
from tests.zoo.builders import ARCHITECTURES
from tests.zoo.fixtures import zoo  # noqa: F401 - fixture

# (config class, image processor class, template, vocab checks, image token, tokens per 64×48 image)
EXPECTED = {
    "llava": ("LlavaConfig", "CLIPImageProcessor", templates.LLAVA_15, {"Yes": [3869], "yes": [4874]}, "<image>", 576),
    "llava_next": ("LlavaNextConfig", "LlavaNextImageProcessor", templates.LLAVA_NEXT_MISTRAL, {"Yes": [3869]},
                   "<image>", None),
    "qwen2_vl": ("Qwen2VLConfig", "Qwen2VLImageProcessor", templates.QWEN2_VL, {"Yes": [9454], " Yes": [7414]},
                 "<|image_pad|>", None),
    "qwen2_5_vl": ("Qwen2_5_VLConfig", "Qwen2VLImageProcessor", templates.QWEN2_VL, {"Yes": [9454], " yes": [9834]},
                   "<|image_pad|>", None),
    "idefics3": ("Idefics3Config", "Idefics3ImageProcessor", templates.SMOLVLM, {"<image>": [49190]}, "<image>", 4),
}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_replica_is_the_real_architecture(zoo, name):
    from transformers import AutoConfig

    from rlaifv_core.backends.processors import load_processor

    folder = zoo(name)
    config_cls, image_cls, template, vocab, image_token, per_image = EXPECTED[name]
    config = AutoConfig.from_pretrained(folder)
    assert type(config).__name__ == config_cls
    processor = load_processor(str(folder))
    assert type(processor.image_processor).__name__.removesuffix("Pil") == image_cls
    assert processor.chat_template == template
    tok = processor.tokenizer
    for text, ids in vocab.items():
        assert tok.encode(text, add_special_tokens=False) == ids, (name, text)
    image_id = tok.convert_tokens_to_ids(image_token)
    assert image_id == getattr(config, "image_token_id", getattr(config, "image_token_index", None))
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}],
                                         add_generation_prompt=True, tokenize=False)
    batch = processor(text=[text], images=[Image.new("RGB", (64, 48))], return_tensors="pt")
    count = int((batch["input_ids"] == image_id).sum())
    if per_image is not None:
        assert count == per_image  # LLaVA-1.5: 336 px / patch 14 = 24² = 576 image tokens
    else:
        assert count > 0
