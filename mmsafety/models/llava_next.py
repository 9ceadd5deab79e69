"""LLaVA-NeXT family (LlavaNextForConditionalGeneration): LLaVA with any-resolution tiling.

The processor picks the best grid resolution for the image (`image_grid_pinpoints`), resizes the
image into it keeping the aspect ratio, pads with black, cuts crop-size tiles, and puts a squashed
copy of the whole image first; the image costs base + unpadded-tile tokens (plus one newline token
per row). Attack resolution: the largest square pinpoint (672x672 for llava-v1.6: 4 tiles and the
base image). A saved PNG of that size selects the same grid, needs no resize or padding for its
tiles, and only its base copy is resized, so attacked and deployed inputs match within the
tolerance of tests/test_processor_parity.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mmsafety.models.base import Images
from mmsafety.models.llava import LlavaAdapter
from mmsafety.models.loading import LoadOptions, load_hf_vlm
from mmsafety.models.pixels import normalize, resize_bicubic, run_image_processor
from mmsafety.models.registry import register_adapter
from mmsafety.placement import Placement
from mmsafety.organisms.builders import register_builder


@dataclass(frozen=True)
class AnyResPreprocess:
    """LlavaNextImageProcessor, differentiable, for one image size at a time: [B,3,H,W] in [0,1] ->
    normalised tiles [B, 1 + rows*cols, 3, crop, crop] (the squashed base image first)."""

    input_size: tuple[int, int]
    pinpoints: tuple[tuple[int, int], ...]
    base: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def resize_and_crop(self, pixels: torch.Tensor) -> torch.Tensor:
        return resize_bicubic(pixels, self.input_size)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        # heavy, deferred to when this runs: transformers
        from transformers.image_processing_utils import select_best_resolution

        x = pixels.float()
        h, w = x.shape[-2:]
        th, tw = select_best_resolution((h, w), [list(p) for p in self.pinpoints])
        if tw / w < th / h:
            nh, nw = min(math.ceil(h * tw / w), th), tw
        else:
            nh, nw = th, min(math.ceil(w * th / h), tw)
        fitted = resize_bicubic(x, (nh, nw))
        left, right_extra = divmod(tw - nw, 2)
        top, bottom_extra = divmod(th - nh, 2)
        padded = F.pad(fitted, [left, left + right_extra, top, top + bottom_extra], value=0.0)
        c = self.crop
        tiles = [padded[..., r:r + c, q:q + c] for r in range(0, th, c) for q in range(0, tw, c)]
        base = resize_bicubic(x, (self.base, self.base))
        if self.base != c:  # the processor's shortest-edge resize + center crop of a square is a plain resize
            base = resize_bicubic(base, (c, c))
        stacked = torch.stack([base] + tiles, dim=1)
        return normalize(stacked, self.mean, self.std)


@register_adapter("llava_next")
class LlavaNextAdapter(LlavaAdapter):
    """llava-hf/llava-v1.6-* checkpoints and the tiny model built like them."""

    def __init__(self, model, processor, placement: Placement, model_id: str, weights_hash: str):
        ip = processor.image_processor
        pinpoints = tuple(tuple(int(v) for v in p) for p in ip.image_grid_pinpoints)
        side = max(min(p) for p in pinpoints)  # the largest square the grid offers
        crop = int(ip.crop_size["height"])
        self._anyres = AnyResPreprocess((side, side), pinpoints, int(ip.size["shortest_edge"]), crop,
                                        tuple(ip.image_mean), tuple(ip.image_std))
        super().__init__(model, processor, placement, model_id, weights_hash)
        self.preprocess = self._anyres
        self.input_size = (side, side)
        self.image_tokens = self._tokens_for(side, side)

    def _tokens_for(self, height: int, width: int) -> int:
        crop = self._anyres.crop
        n = self.processor._get_number_of_features(height, width, crop, crop)
        return n - 1 if self.processor.vision_feature_select_strategy == "default" else n

    @classmethod
    def load(cls, source: str, opts: LoadOptions, placement: Placement) -> "LlavaNextAdapter":
        model, processor, weights_hash = load_hf_vlm("LlavaNextForConditionalGeneration", source, opts, placement)
        return cls(model, processor, placement, source, weights_hash)

    def vision_inputs(self, images: Images) -> dict[str, torch.Tensor]:
        if isinstance(images, torch.Tensor):
            values = self.preprocess(images.to(self.device, torch.float32))
            sizes = torch.tensor([list(images.shape[-2:])] * len(images))
        else:
            out = run_image_processor(self.processor.image_processor, images)
            values, sizes = out["pixel_values"], out["image_sizes"]
        return {"pixel_values": values.to(self.device, self.dtype), "image_sizes": sizes.to(self.device)}

    def image_token_counts(self, vision: dict[str, torch.Tensor]) -> list[int]:
        return [self._tokens_for(int(h), int(w)) for h, w in vision["image_sizes"].tolist()]


# The family's tiny random-init model for tests and demos (mmsafety/organisms/); conf/model presets name it.
register_builder("tiny_llava_next", "mmsafety.organisms.tiny_llava_next", "build_tiny_llava_next", 1, "random-init tiny LLaVA-NeXT (32-pixel tiles, up to 64x64)")
