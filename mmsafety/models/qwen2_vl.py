"""Qwen2-VL and Qwen2.5-VL (Qwen2VL / Qwen2_5_VLForConditionalGeneration): dynamic-resolution ViT,
2x2 patch merging, M-RoPE.

The processor resizes each image to a multiple of 28 pixels (`smart_resize`), flattens it
into 14x14 patches doubled in time (`temporal_patch_size` 2) and passes `image_grid_thw`;
each image costs grid_h * grid_w / 4 `<|image_pad|>` tokens.

Attack resolution: attacks optimise a square image of `attack_side` pixels (448 for real
checkpoints, rounded by `smart_resize`; 56 for the tiny model). A saved PNG of that size maps
to the same grid under the real processor (smart_resize is the identity on a multiple of 28
within the pixel bounds), so the attacked and the deployed inputs are the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from mmsafety.models.base import Images
from mmsafety.models.hf_adapter import HFVLMAdapter
from mmsafety.models.loading import LoadOptions, load_hf_vlm
from mmsafety.models.pixels import normalize, resize_bicubic, run_image_processor
from mmsafety.models.registry import register_adapter
from mmsafety.models.sequences import (
    pad_batch, prompt_target_batch, token_nll,
)
from mmsafety.placement import Placement
from mmsafety.organisms.builders import register_builder

DEFAULT_ATTACK_SIDE = 448
# Qwen2.5-VL shares the processor, the tokens and M-RoPE; its vision tower differs (window attention).
MODEL_CLASSES = {"qwen2_vl": "Qwen2VLForConditionalGeneration", "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration"}


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    # heavy, deferred to when this runs: transformers
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize

    return hf_smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)


@dataclass(frozen=True)
class QwenPatchPreprocess:
    """Qwen2VLImageProcessor, differentiable: resize to `smart_resize` (`resize_bicubic`),
    normalise, cut into merged-order patches.

    `resize_and_crop` (the attack's starting point) resizes to the fixed attack size instead."""

    input_size: tuple[int, int]
    patch: int
    merge: int
    temporal: int
    min_pixels: int
    max_pixels: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def resize_and_crop(self, pixels: torch.Tensor) -> torch.Tensor:
        return resize_bicubic(pixels, self.input_size)

    def __call__(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B,3,H,W] in [0,1] -> (pixel_values [B*gh*gw, 3*T*P*P], image_grid_thw [B,3])."""
        h, w = pixels.shape[-2:]
        size = smart_resize(h, w, self.patch * self.merge, self.min_pixels, self.max_pixels)
        x = resize_bicubic(pixels.float(), size)
        x = normalize(x, self.mean, self.std)
        b, c, hh, ww = x.shape
        gh, gw, m, p = hh // self.patch, ww // self.patch, self.merge, self.patch
        patches = x.reshape(b, c, gh // m, m, p, gw // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)
        flat = (patches.unsqueeze(6).expand(-1, -1, -1, -1, -1, -1, self.temporal, -1, -1)
                .reshape(b * gh * gw, c * self.temporal * p * p))
        grid = torch.tensor([[1, gh, gw]] * b, device=x.device)
        return flat, grid


@register_adapter("qwen2_vl")
class Qwen2VLAdapter(HFVLMAdapter):
    """Qwen/Qwen2-VL-* and Qwen/Qwen2.5-VL-* checkpoints and the tiny models built like them."""

    def __init__(self, model, processor, placement: Placement, model_id: str, weights_hash: str,
                 attack_side: int = DEFAULT_ATTACK_SIDE):
        super().__init__(model, processor, placement, model_id, weights_hash)
        ip = processor.image_processor
        factor = ip.patch_size * ip.merge_size
        min_pixels, max_pixels = int(ip.size.shortest_edge), int(ip.size.longest_edge)
        self.input_size = smart_resize(attack_side, attack_side, factor, min_pixels, max_pixels)
        self.preprocess = QwenPatchPreprocess(self.input_size, ip.patch_size, ip.merge_size, ip.temporal_patch_size,
                                              min_pixels, max_pixels, tuple(ip.image_mean), tuple(ip.image_std))
        self.image_token_id = model.config.image_token_id
        self.merge_area = ip.merge_size ** 2

    @classmethod
    def load(cls, source: str, opts: LoadOptions, placement: Placement) -> "Qwen2VLAdapter":
        model, processor, weights_hash = load_hf_vlm(MODEL_CLASSES, source, opts, placement)
        longest = int(processor.image_processor.size.longest_edge)
        # Small processors (the tiny model) cap the side below the default attack resolution.
        side = DEFAULT_ATTACK_SIDE if longest >= DEFAULT_ATTACK_SIDE ** 2 else int(longest ** 0.5)
        return cls(model, processor, placement, source, weights_hash, attack_side=side)

    # -- tokens ------------------------------------------------------------------------
    def prompt_ids(self, prompt: str, image_tokens: int) -> list[int]:
        """Chat-templated prompt with `<|image_pad|>` expanded to the image's token count (cached)."""
        def tokenize() -> list[int]:
            chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            text = self.chat_text(chat)
            pad = self.processor.image_token
            return self.tokenizer(text.replace(pad, pad * image_tokens))["input_ids"]

        return self._prompts_cache.get((prompt, image_tokens), tokenize)

    # -- pixels ------------------------------------------------------------------------
    def vision_inputs(self, images: Images) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixel_values, image_grid_thw): the real processor for PIL images, the differentiable one for tensors."""
        if isinstance(images, torch.Tensor):
            values, grid = self.preprocess(images.to(self.device, torch.float32))
        else:
            out = run_image_processor(self.processor.image_processor, images)
            values, grid = out["pixel_values"], out["image_grid_thw"]
        return values.to(self.device, self.dtype), grid.to(self.device)

    def _per_image(self, values: torch.Tensor, grid: torch.Tensor) -> list[torch.Tensor]:
        return list(values.split(grid.prod(-1).tolist()))

    def _mm_types(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids == self.image_token_id).int()  # 1 marks image tokens, for M-RoPE

    # -- the contract ------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, images: Images, prompts: Sequence[str], max_new_tokens: int = 64) -> list[str]:
        values, grid = self.vision_inputs(images)
        counts = (grid.prod(-1) // self.merge_area).tolist()
        ids, mask = pad_batch([self.prompt_ids(p, n) for p, n in zip(prompts, counts)], self.pad_id, side="left")
        ids, mask = ids.to(self.device), mask.to(self.device)
        out = self.model.generate(input_ids=ids, attention_mask=mask, mm_token_type_ids=self._mm_types(ids),
                                  pixel_values=values, image_grid_thw=grid, max_new_tokens=max_new_tokens,
                                  **self.decoding, pad_token_id=self.pad_id)
        return [s.strip() for s in self.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)]

    def target_nll(self, images, prompts, target_ids, repeat=1):
        values, grid = self.vision_inputs(images)
        if repeat > 1:
            per_image = self._per_image(values, grid)
            values = torch.cat([patches for patches in per_image for _ in range(repeat)])
            grid = grid.repeat_interleave(repeat, dim=0)
        counts = (grid.prod(-1) // self.merge_area).tolist()
        ids, mask, labels = prompt_target_batch([self.prompt_ids(p, n) for p, n in zip(prompts, counts)],
                                                target_ids, self.pad_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        return token_nll(self.model, ids, mask, labels.to(self.device), pixel_values=values, image_grid_thw=grid,
                         mm_token_type_ids=self._mm_types(ids))

    # Choices are scored appended (the base class): M-RoPE positions make a shared prompt cache awkward.


# The family's tiny random-init model for tests and demos (mmsafety/organisms/); conf/model presets name it.
register_builder("tiny_qwen2_vl", "mmsafety.organisms.tiny_qwen2_vl", "build_tiny_qwen2_vl", 1, "random-init tiny Qwen2-VL (56x56, 4 image tokens)")
register_builder("tiny_qwen2_5_vl", "mmsafety.organisms.tiny_qwen2_vl", "build_tiny_qwen2_5_vl", 1, "random-init tiny Qwen2.5-VL (56x56, 4 image tokens)")
