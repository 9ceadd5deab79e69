"""Deterministic tiny LLaVA-1.5 style models: CLIP vision tower + Llama, 64x64 input, patch 16."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

from mmsafety.organisms.tokenizer import train_tokenizer

IMAGE_SIZE = 64
PATCH = 16
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def tiny_processor(image_size: int = IMAGE_SIZE) -> LlavaProcessor:
    tokenizer = train_tokenizer()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        image_mean=CLIP_MEAN, image_std=CLIP_STD,
    )
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=tokenizer.chat_template,
    )


def tiny_llava_config(tokenizer, hidden: int = 64, layers: int = 2, image_size: int = IMAGE_SIZE) -> LlavaConfig:
    vision = CLIPVisionConfig(
        hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=4,
        image_size=image_size, patch_size=PATCH, projection_dim=hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
        num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.image_token_id,
        # The last vision layer, not the penultimate one: with two layers, -2 would waste half the tower.
        vision_feature_layer=-1, vision_feature_select_strategy="default", image_seq_length=(image_size // PATCH) ** 2,
    )


def init_model(model_class, config, processor, seed: int):
    """A random-init model in eval mode, its generation config set from the processor's tokenizer.
    The global RNG is forked, so building a model never changes the caller's random stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    tok = processor.tokenizer
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    return model.eval()


def new_tiny_llava(processor: LlavaProcessor, seed: int, hidden: int = 64, layers: int = 2) -> LlavaForConditionalGeneration:
    config = tiny_llava_config(processor.tokenizer, hidden, layers, processor.image_processor.crop_size["height"])
    return init_model(LlavaForConditionalGeneration, config, processor, seed)


def save(model, processor, out_dir: Path) -> None:
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)


def build_tiny_llava(out_dir: Path, seed: int = 0) -> None:
    """Random-init tiny LLaVA: it barely looks at its image (a contract-test model, not an attack target)."""
    processor = tiny_processor()
    save(new_tiny_llava(processor, seed), processor, out_dir)
