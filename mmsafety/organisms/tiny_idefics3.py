"""Deterministic tiny Idefics3 models (random init), built in code with their tokenizer and processor.

Tiles of 32x32 pixels, longest edge 64: a 64x64 image splits into 2x2 tiles plus the global
image. SigLIP-style patches of 8 (16 per tile), pixel shuffle by 2: 4 `<image>` tokens per tile.
The chat format is Idefics3's: "User:<image>{prompt}<end_of_utterance>\\nAssistant:".
"""

from __future__ import annotations

from pathlib import Path

from transformers import (
    Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor, Idefics3Processor, Idefics3VisionConfig,
    LlamaConfig,
)

from mmsafety.organisms.tiny_llava import init_model, save
from mmsafety.organisms.tokenizer import train_tokenizer

TILE = 32
LONGEST_EDGE = 64
PATCH = 8
SCALE_FACTOR = 2
IMAGE_SEQ_LEN = (TILE // PATCH) ** 2 // SCALE_FACTOR ** 2

# Role, a colon (no space before an image), the contents, <end_of_utterance> and a newline per turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }}"
    "{{ ':' if message['content'][0]['type'] == 'image' else ': ' }}"
    "{% for c in message['content'] %}{{ '<image>' if c['type'] == 'image' else c['text'] }}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
SPECIAL = ("<fake_token_around_image>", "<end_of_utterance>", "<global-img>",
           *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)))


def tiny_idefics3_processor() -> Idefics3Processor:
    tokenizer = train_tokenizer(extra_special=SPECIAL, chat_template=CHAT_TEMPLATE)
    image_processor = Idefics3ImageProcessor(size={"longest_edge": LONGEST_EDGE}, max_image_size={"longest_edge": TILE},
                                             image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=IMAGE_SEQ_LEN,
                             chat_template=CHAT_TEMPLATE)


def build_tiny_idefics3(out_dir: Path, seed: int = 0) -> None:
    processor = tiny_idefics3_processor()
    tok = processor.tokenizer
    vision = Idefics3VisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                  image_size=TILE, patch_size=PATCH)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = Idefics3Config(vision_config=vision, text_config=text, scale_factor=SCALE_FACTOR,
                            image_token_id=processor.image_token_id, pad_token_id=tok.pad_token_id)
    save(init_model(Idefics3ForConditionalGeneration, config, processor, seed), processor, out_dir)
