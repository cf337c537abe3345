"""Tiny LLaVA-architecture models for the shapes world, built entirely offline.

    from rlaifv_core.shapes.models import ModelSize, build_processor, build_model
    processor = build_processor(); model = build_model(processor, ModelSize())

Own word-level tokenizer (the world's vocabulary), a CLIP image processor sized to the 48-px
images, a `LlavaProcessor` with a prefix-consistent chat template, and
`LlavaForConditionalGeneration` from config: the same classes a LLaVA-1.5 run uses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from typing import TYPE_CHECKING

from .world import CELL, IMAGE_SIZE, vocabulary

if TYPE_CHECKING:  # transformers is imported where models are built: knowing a size must stay cheap
    from transformers import LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast

SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]

# Prefix-consistent: the prompt rendering is a prefix of prompt+answer (TRL relies on it).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}user : "
    "{% if message['content'] is string %}{{ message['content'] }} "
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image> {% elif part['type'] == 'text' %}{{ part['text'] }} {% endif %}"
    "{% endfor %}{% endif %}"
    "{% elif message['role'] == 'assistant' %}assistant : "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %} </s> {% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)


@dataclass(frozen=True)
class ModelSize:
    """Widths and depths of a tiny LLaVA (the policy ~1.6 M parameters at the defaults)."""

    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    vision_hidden: int = 128
    vision_layers: int = 2
    vision_heads: int = 4

    def as_dict(self) -> dict:
        return asdict(self)


def build_tokenizer() -> "PreTrainedTokenizerFast":
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = SPECIAL + [w for w in vocabulary() if w not in SPECIAL]
    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"}, model_max_length=256,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tokenizer


def build_processor(image_size: int = IMAGE_SIZE, patch_size: int = CELL) -> "LlavaProcessor":
    """(image_size / patch_size)² image tokens per image: 9 for the world, 576 at LLaVA-1.5's 336/14."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        do_center_crop=True, do_resize=True, do_convert_rgb=True,
    )
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=build_tokenizer(), chat_template=CHAT_TEMPLATE,
        patch_size=patch_size, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        image_token="<image>",
    )


def build_model(processor: "LlavaProcessor", size: ModelSize, seed: int = 0, image_size: int = IMAGE_SIZE,
                patch_size: int = CELL) -> "LlavaForConditionalGeneration":
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    tokenizer = processor.tokenizer
    vision = CLIPVisionConfig(
        hidden_size=size.vision_hidden, intermediate_size=2 * size.vision_hidden,
        num_hidden_layers=size.vision_layers, num_attention_heads=size.vision_heads,
        image_size=image_size, patch_size=patch_size, projection_dim=size.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=size.text_hidden, intermediate_size=2 * size.text_hidden,
        num_hidden_layers=size.text_layers, num_attention_heads=size.text_heads,
        num_key_value_heads=size.text_heads, max_position_embeddings=max(256, (image_size // patch_size) ** 2 + 128),
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default", vision_feature_layer=-1,
        image_seq_length=(image_size // patch_size) ** 2, projector_hidden_act="gelu",
    )
    # Eager attention: at these widths the fused kernels' overhead outweighs their gain on a CPU.
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model
