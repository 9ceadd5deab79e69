"""Deterministic tiny PaliGemma models (random init), built in code with their tokenizer and processor.

32x32 input, SigLIP patches of 8 pixels: 16 image tokens, then <bos>, the prompt and a newline
(PaliGemma's prefix, attended bidirectionally); the answer follows causally.
"""

from __future__ import annotations

from pathlib import Path

from transformers import (
    GemmaConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor, SiglipImageProcessor,
    SiglipVisionConfig,
)

from mmsafety.organisms.tiny_llava import init_model, save
from mmsafety.organisms.tokenizer import train_tokenizer

IMAGE_SIZE = 32
PATCH = 8


def tiny_paligemma_processor() -> PaliGemmaProcessor:
    tokenizer = train_tokenizer()  # has "<image>" as its image token
    image_processor = SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                           image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    image_processor.image_seq_length = (IMAGE_SIZE // PATCH) ** 2
    return PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_tiny_paligemma(out_dir: Path, seed: int = 0) -> None:
    processor = tiny_paligemma_processor()
    tok = processor.tokenizer
    vision = SiglipVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                image_size=IMAGE_SIZE, patch_size=PATCH)
    text = GemmaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=1024,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = PaliGemmaConfig(vision_config=vision, text_config=text, image_token_index=processor.image_token_id,
                             projection_dim=64, hidden_size=64, vocab_size=len(tok))
    save(init_model(PaliGemmaForConditionalGeneration, config, processor, seed), processor, out_dir)
