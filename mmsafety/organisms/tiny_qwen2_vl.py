"""Deterministic tiny Qwen2-VL models (random init), built in code with their tokenizer and processor.

56x56 input: 4x4 patches of 14 pixels, merged 2x2 into 4 image tokens; every image is resized to
exactly 56x56 by the processor (min_pixels = max_pixels), like an attack resolution.
"""

from __future__ import annotations

from pathlib import Path

from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from mmsafety.organisms.tiny_llava import init_model, save
from mmsafety.organisms.tokenizer import train_tokenizer

IMAGE_SIZE = 56
VISION_TOKENS = ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>")
# Qwen2-VL's placement of the image (vision_start, image_pad, vision_end) in a plain USER/ASSISTANT frame.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for c in message['content'] if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% endfor %}"
    "{% for c in message['content'] if c['type'] == 'text' %}{{ c['text'] }} {% endfor %}"
    "{% else %}ASSISTANT:{% for c in message['content'] if c['type'] == 'text' %} {{ c['text'] }}{% endfor %}</s>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def tiny_qwen2_vl_processor() -> Qwen2VLProcessor:
    tokenizer = train_tokenizer(extra_special=VISION_TOKENS, image_token="<|image_pad|>", chat_template=CHAT_TEMPLATE)
    tokenizer.video_token = "<|video_pad|>"
    pixels = IMAGE_SIZE * IMAGE_SIZE
    image_processor = Qwen2VLImageProcessor(min_pixels=pixels, max_pixels=pixels)

    return Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                            video_processor=Qwen2VLVideoProcessor(), chat_template=CHAT_TEMPLATE)


def _text_and_token_config(tok) -> tuple[dict, dict]:
    ids = {t: tok.convert_tokens_to_ids(t) for t in VISION_TOKENS}
    text = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=1024,
                rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]},
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    tokens = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return text, tokens


def build_tiny_qwen2_vl(out_dir: Path, seed: int = 0) -> None:
    processor = tiny_qwen2_vl_processor()
    text, tokens = _text_and_token_config(processor.tokenizer)
    config = Qwen2VLConfig(
        text_config=text, **tokens,
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=4, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, in_chans=3),
    )
    save(init_model(Qwen2VLForConditionalGeneration, config, processor, seed), processor, out_dir)


def build_tiny_qwen2_5_vl(out_dir: Path, seed: int = 0) -> None:
    """Qwen2.5-VL: the same processor and tokens; a windowed-attention vision tower with SwiGLU."""
    processor = tiny_qwen2_vl_processor()
    text, tokens = _text_and_token_config(processor.tokenizer)
    config = Qwen2_5_VLConfig(
        text_config=text, **tokens,
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, window_size=28, out_hidden_size=64,
                           fullatt_block_indexes=[1]),
    )
    save(init_model(Qwen2_5_VLForConditionalGeneration, config, processor, seed), processor, out_dir)
