"""Deterministic tiny LLaVA-NeXT models (random init): 32x32 tiles of 16-pixel patches, grids of
32x64, 64x32 and 64x64 pixels, so a 64x64 image is 4 tiles plus the base image."""

from __future__ import annotations

from pathlib import Path

from transformers import (
    CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessor,
    LlavaNextProcessor,
)

from mmsafety.organisms.tiny_llava import CLIP_MEAN, CLIP_STD, init_model, save
from mmsafety.organisms.tokenizer import train_tokenizer

TILE = 32
PATCH = 16
PINPOINTS = [[32, 64], [64, 32], [64, 64]]


def tiny_llava_next_processor() -> LlavaNextProcessor:
    tokenizer = train_tokenizer()
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE}, image_grid_pinpoints=PINPOINTS,
        image_mean=CLIP_MEAN, image_std=CLIP_STD)
    return LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH,
                              vision_feature_select_strategy="default", num_additional_image_tokens=1,
                              chat_template=tokenizer.chat_template)


def build_tiny_llava_next(out_dir: Path, seed: int = 0) -> None:
    processor = tiny_llava_next_processor()
    tok = processor.tokenizer
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              image_size=TILE, patch_size=PATCH, projection_dim=64)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                       num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=1024,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = LlavaNextConfig(vision_config=vision, text_config=text, image_token_id=tok.image_token_id,
                             image_grid_pinpoints=PINPOINTS, vision_feature_layer=-1,
                             vision_feature_select_strategy="default")
    save(init_model(LlavaNextForConditionalGeneration, config, processor, seed), processor, out_dir)
