"""Deterministic tiny InstructBLIP and BLIP-2 models (random init), built in code with their
tokenizers and processor.

32x32 input squashed like BlipImageProcessor, ViT patches of 8 pixels (16 patches + CLS), a
2-layer Q-Former with 8 learned queries cross-attending to them, a linear projection, and a
Llama LM that reads the 8 query outputs as 8 `<image>` tokens before `<s>` and the prompt.
InstructBLIP's Q-Former also reads the prompt, through its own WordPiece tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, Blip2QFormerConfig, Blip2VisionConfig,
    BlipImageProcessor, InstructBlipConfig, InstructBlipForConditionalGeneration, InstructBlipProcessor,
    InstructBlipQFormerConfig, InstructBlipVisionConfig, LlamaConfig,
)

from mmsafety.organisms.tiny_llava import CLIP_MEAN, CLIP_STD, init_model, save
from mmsafety.organisms.tokenizer import train_tokenizer, train_wordpiece_tokenizer

IMAGE_SIZE = 32
PATCH = 8
QUERIES = 8
HIDDEN = 64


def _image_processor() -> BlipImageProcessor:
    return BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=CLIP_MEAN, image_std=CLIP_STD)


def _text_config(tok) -> LlamaConfig:
    return LlamaConfig(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=3 * HIDDEN, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


_VISION = dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2, num_attention_heads=4,
               image_size=IMAGE_SIZE, patch_size=PATCH)
_QFORMER = dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2, num_attention_heads=4,
                cross_attention_frequency=1, encoder_hidden_size=HIDDEN)


def _init_left_at_zero(model, seed: int):
    """transformers leaves BLIP's patch embedding, class and position embeddings and the learned
    queries at zero in a from-config model: the vision tower would then ignore its image and every
    query would be the same. Initialise them as the original BLIP-2 code does (seeded)."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed + 1)
        embeddings = model.vision_model.embeddings
        embeddings.patch_embedding.reset_parameters()
        for tensor in (embeddings.class_embedding, embeddings.position_embedding, model.query_tokens):
            tensor.normal_(0.0, model.config.initializer_range)
    return model


def tiny_instructblip_processor() -> InstructBlipProcessor:
    return InstructBlipProcessor(image_processor=_image_processor(), tokenizer=train_tokenizer(image_token=None, chat_template=None),
                                 qformer_tokenizer=train_wordpiece_tokenizer(), num_query_tokens=QUERIES)


def build_tiny_instructblip(out_dir: Path, seed: int = 0) -> None:
    processor = tiny_instructblip_processor()
    tok, qtok = processor.tokenizer, processor.qformer_tokenizer
    config = InstructBlipConfig(
        vision_config=InstructBlipVisionConfig(**_VISION),
        qformer_config=InstructBlipQFormerConfig(vocab_size=len(qtok), pad_token_id=qtok.pad_token_id, **_QFORMER),
        text_config=_text_config(tok), num_query_tokens=QUERIES, image_token_index=tok.convert_tokens_to_ids("<image>"))
    save(_init_left_at_zero(init_model(InstructBlipForConditionalGeneration, config, processor, seed), seed),
         processor, out_dir)


def build_tiny_blip2(out_dir: Path, seed: int = 0) -> None:
    tok = train_tokenizer(image_token=None, chat_template=None)
    processor = Blip2Processor(image_processor=_image_processor(), tokenizer=tok, num_query_tokens=QUERIES)
    config = Blip2Config(
        vision_config=Blip2VisionConfig(**_VISION), qformer_config=Blip2QFormerConfig(**_QFORMER),
        text_config=_text_config(tok), num_query_tokens=QUERIES, image_token_index=tok.convert_tokens_to_ids("<image>"))
    save(_init_left_at_zero(init_model(Blip2ForConditionalGeneration, config, processor, seed), seed), processor, out_dir)
