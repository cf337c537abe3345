"""Tiny random-init replicas of real VLM architectures: real config classes, vocabularies, special
tokens, image processor classes and chat templates; a few M parameters each.

    from tests.zoo.builders import ARCHITECTURES, build
    folder = build("qwen2_vl", tmp_path / "qwen2-vl")     # a save_pretrained folder (hub layout)

Each builder saves the model and its processor exactly as the hub checkpoints are laid out, so the
project loads them as it would load the real ones. Size choices (all documented in README's
"Architectures tested"): LLaVA-1.5 keeps the real 336-px / patch-14 image (576 image tokens);
LLaVA-NeXT, Qwen2-VL/2.5-VL and Idefics3 use 56-px tiles with the real token arithmetic
(patch 14; 2×2 merge / pixel shuffle), so prompts stay short on a CPU.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rlaifv_core.backends.processors import images_only

from . import templates
from .vocab import cache_root, vocab_tokenizer

#: architecture → (vocabulary file, what it stands for)
VOCABS = {
    "llava": ("llama-spm", "Llama-2 / Vicuna SentencePiece, 32,000 (LLaVA-1.5's own)"),
    "llava_next": ("llama-spm", "Llama-2 SentencePiece, 32,000 (Mistral-7B's is a different 32,000-token SPM; closest shipped)"),
    "qwen2_vl": ("qwen2", "Qwen2 byte-level BPE, 151,936 (Qwen2-VL's own)"),
    "qwen2_5_vl": ("qwen2", "Qwen2 byte-level BPE, 151,936 (Qwen2.5-VL's own)"),
    "idefics3": ("starcoder", "StarCoder byte-level BPE, 49,152 (SmolLM2's is a 49,152-token GPT-2-style BPE; closest shipped)"),
}

QWEN_SPECIAL = {151646: "<|object_ref_start|>", 151647: "<|object_ref_end|>", 151648: "<|box_start|>",
                151649: "<|box_end|>", 151650: "<|quad_start|>", 151651: "<|quad_end|>",
                151652: "<|vision_start|>", 151653: "<|vision_end|>", 151654: "<|vision_pad|>",
                151655: "<|image_pad|>", 151656: "<|video_pad|>"}


def _tokenizer(vocab: str, work: Path, rename: dict[int, str] | None = None):
    """The cached real vocabulary, with placeholder tokens renamed to the checkpoint's special tokens."""
    from transformers import AutoTokenizer

    vocab_tokenizer(vocab)  # converts and caches on first use
    folder = work / f"tok-{vocab}"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(cache_root() / vocab, folder)
    if rename:
        data = json.loads((folder / "tokenizer.json").read_text())
        by_id = {t["id"]: t for t in data["added_tokens"]}
        inverse = {v: k for k, v in data["model"]["vocab"].items()}
        for token_id, name in rename.items():
            old = inverse.get(token_id)
            if old is not None:
                data["model"]["vocab"].pop(old)
                data["model"]["vocab"][name] = token_id
            entry = by_id.get(token_id)
            if entry is None:
                entry = {"id": token_id, "single_word": False, "lstrip": False, "rstrip": False,
                         "normalized": False, "special": True}
                data["added_tokens"].append(entry)
            entry.update(content=name, special=True, normalized=False)
        (folder / "tokenizer.json").write_text(json.dumps(data))
    return AutoTokenizer.from_pretrained(folder)


def _seed(seed: int):
    import torch

    torch.manual_seed(seed)


def _llama_text(vocab_size: int, **extra) -> dict:
    return dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096, **extra)


def build_llava(folder: Path, seed: int = 0) -> Path:
    """llava-hf/llava-1.5-7b-hf's layout: Llama-2 vocab + <image> 32000 + <pad> 32001, CLIP 336/14."""
    from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    tok = _tokenizer("llama-spm", folder.parent)
    tok.add_tokens(["<image>"], special_tokens=True)
    tok.add_special_tokens({"pad_token": "<pad>"})
    assert tok.convert_tokens_to_ids("<image>") == 32000 and tok.pad_token_id == 32001
    image = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    processor = LlavaProcessor(image_processor=image, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=templates.LLAVA_15)
    text = LlamaConfig(**_llama_text(32064, bos_token_id=1, eos_token_id=2, pad_token_id=32001))
    vision = CLIPVisionConfig(image_size=336, patch_size=14, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                              num_attention_heads=2, projection_dim=16)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=32000, vision_feature_layer=-2,
                         vision_feature_select_strategy="default", image_seq_length=576)
    _seed(seed)
    model = LlavaForConditionalGeneration(config)
    return _save(model, processor, folder)


def build_llava_next(folder: Path, seed: int = 0) -> Path:
    """llava-hf/llava-v1.6-mistral-7b-hf's layout: Mistral text model, AnyRes tiles (56-px tiles here)."""
    from transformers import (CLIPVisionConfig, LlavaNextConfig, LlavaNextForConditionalGeneration,
                              LlavaNextImageProcessorPil, LlavaNextProcessor, MistralConfig)

    tok = _tokenizer("llama-spm", folder.parent)
    tok.add_tokens(["<image>"], special_tokens=True)
    tok.add_special_tokens({"pad_token": "<pad>"})
    pinpoints = [[56, 112], [112, 56], [112, 112]]
    image = LlavaNextImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56},
                                       image_grid_pinpoints=pinpoints)
    processor = LlavaNextProcessor(image_processor=image, tokenizer=tok, patch_size=14,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=templates.LLAVA_NEXT_MISTRAL)
    text = MistralConfig(**_llama_text(32064, bos_token_id=1, eos_token_id=2, pad_token_id=32001, sliding_window=None))
    vision = CLIPVisionConfig(image_size=56, patch_size=14, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                              num_attention_heads=2, projection_dim=16)
    config = LlavaNextConfig(vision_config=vision, text_config=text, image_token_index=32000, vision_feature_layer=-2,
                             vision_feature_select_strategy="default", image_grid_pinpoints=pinpoints,
                             image_seq_length=16)
    _seed(seed)
    model = LlavaNextForConditionalGeneration(config)
    return _save(model, processor, folder)


def _qwen_tokenizer(folder: Path):
    tok = _tokenizer("qwen2", folder.parent, rename=QWEN_SPECIAL)
    tok.add_special_tokens({"pad_token": "<|endoftext|>", "eos_token": "<|im_end|>"})
    assert tok.convert_tokens_to_ids("<|image_pad|>") == 151655
    return tok


def _qwen_text(head_dim_half_sections):
    return dict(vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, max_position_embeddings=4096, bos_token_id=151643, eos_token_id=151645,
                pad_token_id=151643, tie_word_embeddings=True,
                rope_parameters={"rope_type": "default", "mrope_section": head_dim_half_sections, "rope_theta": 1e6})


def build_qwen2_vl(folder: Path, seed: int = 0) -> Path:
    """Qwen/Qwen2-VL-2B-Instruct's layout: Qwen2 vocab with its vision tokens, M-RoPE, 2×2 merger."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil, Qwen2VLProcessor

    tok = _qwen_tokenizer(folder)
    image = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112)
    processor = images_only(Qwen2VLProcessor)(image_processor=image, tokenizer=tok, chat_template=templates.QWEN2_VL)
    config = Qwen2VLConfig(text_config=_qwen_text([4, 2, 2]),
                           vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2,
                                              patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
                           image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                           vision_end_token_id=151653, tie_word_embeddings=True)
    _seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    return _save(model, processor, folder)


def build_qwen2_5_vl(folder: Path, seed: int = 0) -> Path:
    """Qwen/Qwen2.5-VL-3B-Instruct's layout: windowed vision attention, RMSNorm/SwiGLU vision blocks."""
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessorPil)

    tok = _qwen_tokenizer(folder)
    image = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112)
    processor = images_only(Qwen2_5_VLProcessor)(image_processor=image, tokenizer=tok,
                                                 chat_template=templates.QWEN2_VL)
    config = Qwen2_5_VLConfig(text_config=_qwen_text([4, 2, 2]),
                              vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                                                 out_hidden_size=32, patch_size=14, spatial_merge_size=2,
                                                 temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1]),
                              image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                              vision_end_token_id=151653, tie_word_embeddings=True)
    _seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    return _save(model, processor, folder)


def build_idefics3(folder: Path, seed: int = 0) -> Path:
    """HuggingFaceTB/SmolVLM-Instruct's layout: Idefics3 (SigLIP-style vision, pixel shuffle ×2, Llama
    text), SmolVLM's image tokens at their real ids (49152 … 49190, <end_of_utterance> 49279)."""
    from transformers import (Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil,
                              Idefics3Processor, LlamaConfig)

    tok = _tokenizer("starcoder", folder.parent, rename={1: "<|im_start|>", 2: "<|im_end|>"})
    extra = (["<global-img>"] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
             + ["<fake_token_around_image>", "<image>"] + [f"<unused_{i}>" for i in range(88)] + ["<end_of_utterance>"])
    tok.add_tokens(extra, special_tokens=True)
    tok.add_special_tokens({"bos_token": "<|im_start|>", "eos_token": "<end_of_utterance>", "pad_token": "<|im_end|>"})
    assert tok.convert_tokens_to_ids("<image>") == 49190 and tok.convert_tokens_to_ids("<end_of_utterance>") == 49279
    image = Idefics3ImageProcessorPil(size={"longest_edge": 56}, max_image_size={"longest_edge": 56},
                                      do_image_splitting=False)
    processor = Idefics3Processor(image_processor=image, tokenizer=tok, image_seq_len=4, chat_template=templates.SMOLVLM)
    text = LlamaConfig(**_llama_text(49280, bos_token_id=1, eos_token_id=49279, pad_token_id=2))
    config = Idefics3Config(vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                               num_attention_heads=2, image_size=56, patch_size=14),
                            text_config=text, scale_factor=2, image_token_id=49190, pad_token_id=2)
    _seed(seed)
    model = Idefics3ForConditionalGeneration(config)
    return _save(model, processor, folder)


def _save(model, processor, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tok = processor.tokenizer
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


ARCHITECTURES = {
    "llava": build_llava,
    "llava_next": build_llava_next,
    "qwen2_vl": build_qwen2_vl,
    "qwen2_5_vl": build_qwen2_5_vl,
    "idefics3": build_idefics3,
}


def build(name: str, folder: Path, seed: int = 0) -> Path:
    return ARCHITECTURES[name](Path(folder), seed=seed)
