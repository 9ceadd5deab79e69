"""Idefics3 family (Idefics3ForConditionalGeneration): HuggingFaceM4/Idefics3-8B-Llama3 and
HuggingFaceTB/SmolVLM-Instruct (an Idefics3 checkpoint).

Image splitting, as Idefics3ImageProcessor does it: the longest edge is resized to
`size["longest_edge"]` (aspect kept, the other side rounded to even; upscaling too), both
sides are rounded up to multiples of the tile (`max_image_size`, 364 or 384), the result is
cut into rows x cols tiles in reading order, and the whole image squashed to one more tile
(the global image). Each tile becomes `image_seq_len` tokens after the connector's pixel
shuffle. In the prompt, every tile is `<fake_token_around_image><row_r_col_c>` and its
`<image>` tokens, each row ends with a newline, and the global image comes last between fake
tokens after `<global-img>`.

Attack resolution: the square of side `size["longest_edge"]` (1456 for Idefics3-8B, 1536 for
SmolVLM-Instruct). A PNG of that size needs no resize before splitting, so its tiles are exact
crops and only the global image is resampled (Lanczos, re-implemented as two matrix products).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from mmsafety.models.base import Images
from mmsafety.models.hf_adapter import HFVLMAdapter
from mmsafety.models.loading import LoadOptions, load_hf_vlm
from mmsafety.models.pixels import normalize, resize_lanczos, run_image_processor
from mmsafety.models.registry import register_adapter
from mmsafety.models.sequences import (
    cached_choice_logprobs, choice_variants, combine_variants, pad_batch, prompt_target_batch, repeat_rows, token_nll,
)
from mmsafety.placement import Placement
from mmsafety.organisms.builders import register_builder

MAX_SIDE = 4096  # the processor's cap on either side after the longest-edge resize


def split_size(height: int, width: int, longest: int, tile: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The processor's two sizes for an image: after the longest-edge resize, and after rounding
    both sides up to tile multiples (the split grid is the second divided by `tile`)."""
    ratio = width / height
    if width >= height:
        width, height = longest, int(longest / ratio)
        height += height % 2
    else:
        height, width = longest, int(longest * ratio)
        width += width % 2
    height, width = max(height, 1), max(width, 1)
    if max(height, width) > MAX_SIDE:  # only reachable with size["longest_edge"] > 4096
        height, width = (int(MAX_SIDE / ratio), MAX_SIDE) if width >= height else (MAX_SIDE, int(MAX_SIDE * ratio))
    resized = (height, width)
    if width >= height:
        width = math.ceil(width / tile) * tile
        height = math.ceil(int(width / ratio) / tile) * tile
    else:
        height = math.ceil(height / tile) * tile
        width = math.ceil(int(height * ratio) / tile) * tile
    return resized, (height, width)


@dataclass(frozen=True)
class SplitPreprocess:
    """Idefics3ImageProcessor, differentiable (per image size: images of one size share a grid)."""

    input_size: tuple[int, int]  # the attack resolution
    longest: int
    tile: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def resize_and_crop(self, pixels: torch.Tensor) -> torch.Tensor:
        return resize_lanczos(pixels, self.input_size)

    def __call__(self, pixels: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """[B,3,H,W] in [0,1] -> (tiles [B, rows*cols+1, 3, tile, tile] normalised, rows, cols);
        rows = cols = 0 when the image fits one tile (then it is the only one)."""
        resized, grid = split_size(*pixels.shape[-2:], self.longest, self.tile)
        x = resize_lanczos(resize_lanczos(pixels.float(), resized), grid)
        b, t = x.shape[0], self.tile
        rows, cols = grid[0] // t, grid[1] // t
        if rows * cols == 1:
            return normalize(x, self.mean, self.std).unsqueeze(1), 0, 0
        tiles = x.reshape(b, 3, rows, t, cols, t).permute(0, 2, 4, 1, 3, 5).reshape(b, rows * cols, 3, t, t)
        everything = torch.cat([tiles, resize_lanczos(x, (t, t)).unsqueeze(1)], dim=1)
        return normalize(everything, self.mean, self.std), rows, cols


@register_adapter("idefics3")
class Idefics3Adapter(HFVLMAdapter):
    """HuggingFaceM4/Idefics3-*, HuggingFaceTB/SmolVLM-Instruct and the tiny model built like them."""

    def __init__(self, model, processor, placement: Placement, model_id: str, weights_hash: str):
        super().__init__(model, processor, placement, model_id, weights_hash)
        ip = processor.image_processor
        longest, tile = int(ip.size["longest_edge"]), int(ip.max_image_size["longest_edge"])
        self.input_size = split_size(longest, longest, longest, tile)[1]
        self.preprocess = SplitPreprocess(self.input_size, longest, tile, tuple(ip.image_mean), tuple(ip.image_std))

    @classmethod
    def load(cls, source: str, opts: LoadOptions, placement: Placement) -> "Idefics3Adapter":
        model, processor, weights_hash = load_hf_vlm("Idefics3ForConditionalGeneration", source, opts, placement)
        return cls(model, processor, placement, source, weights_hash)

    # -- tokens ------------------------------------------------------------------------
    def _image_text(self, rows: int, cols: int) -> str:
        p = self.processor
        tile_tokens = p.image_token * p.image_seq_len
        around = p.fake_image_token
        whole = around + p.global_image_tag + tile_tokens
        if rows == 0 and cols == 0:
            return whole + around
        grid = "".join("".join(f"{around}<row_{r + 1}_col_{c + 1}>{tile_tokens}" for c in range(cols)) + "\n"
                       for r in range(rows))
        return grid + "\n" + whole + around

    def prompt_ids(self, prompt: str, grid: tuple[int, int] | None = None) -> list[int]:
        """Chat-templated prompt with `<image>` expanded for an image split into `grid` (rows,
        cols; default: the attack resolution's), tokenised once and cached."""
        rows, cols = grid if grid is not None else self._attack_grid()

        def tokenize() -> list[int]:
            chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            text = self.chat_text(chat)
            return self.tokenizer(text.replace(self.processor.image_token, self._image_text(rows, cols), 1))["input_ids"]

        return self._prompts_cache.get((prompt, rows, cols), tokenize)

    def _attack_grid(self) -> tuple[int, int]:
        rows, cols = (side // self.preprocess.tile for side in self.input_size)
        return (0, 0) if rows * cols == 1 else (rows, cols)

    # -- pixels ------------------------------------------------------------------------
    def vision_inputs(self, images: Images) -> tuple[dict[str, torch.Tensor], list[tuple[int, int]]]:
        """({pixel_values [B, tiles, 3, t, t], pixel_attention_mask}, grid per image): the real
        processor for PIL images (tiles padded per batch, padding tiles all zero), the
        differentiable one for tensors (one size, one grid)."""
        if isinstance(images, torch.Tensor):
            values, rows, cols = self.preprocess(images.to(self.device, torch.float32))
            mask = torch.ones(values.shape[:2] + values.shape[-2:], dtype=torch.long, device=self.device)
            grids = [(rows, cols)] * len(values)
        else:
            out = run_image_processor(self.processor.image_processor, images, one_per_sample=True,
                                      return_row_col_info=True)
            values, mask = out["pixel_values"], out["pixel_attention_mask"]
            grids = [(r[0], c[0]) for r, c in zip(out["rows"], out["cols"])]
        return {"pixel_values": values.to(self.device, self.dtype), "pixel_attention_mask": mask.to(self.device)}, grids

    # -- the contract ------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, images: Images, prompts: Sequence[str], max_new_tokens: int = 64) -> list[str]:
        vision, grids = self.vision_inputs(images)
        ids, mask = pad_batch([self.prompt_ids(p, g) for p, g in zip(prompts, grids)], self.pad_id, side="left")
        out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **vision,
                                  max_new_tokens=max_new_tokens, **self.decoding, pad_token_id=self.pad_id)
        return [s.strip() for s in self.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)]

    def target_nll(self, images, prompts, target_ids, repeat=1):
        vision, grids = self.vision_inputs(images)
        vision, grids = repeat_rows(vision, repeat), [g for g in grids for _ in range(repeat)]
        ids, mask, labels = prompt_target_batch([self.prompt_ids(p, g) for p, g in zip(prompts, grids)], target_ids,
                                                self.pad_id)
        return token_nll(self.model, ids.to(self.device), mask.to(self.device), labels.to(self.device), **vision)

    @torch.inference_mode()
    def choice_logprobs(self, images: Images, prompts: Sequence[str], choices: Sequence[str]) -> torch.Tensor:
        """The prompts, with their many tile tokens, run once (`cached_choice_logprobs`); equal to
        `appended_logprobs` (tests check)."""
        vision, grids = self.vision_inputs(images)
        prompt_ids = [self.prompt_ids(p, g) for p, g in zip(prompts, grids)]
        choice_ids, owners = choice_variants(choices, self.answer_ids)  # " Yes" and "Yes": log-sum-exp
        scores = cached_choice_logprobs(self.model, prompt_ids, choice_ids, self.pad_id, self.device, **vision)
        return combine_variants(scores, owners, len(choices))


# The family's tiny random-init model for tests and demos (mmsafety/organisms/); conf/model presets name it.
register_builder("tiny_idefics3", "mmsafety.organisms.tiny_idefics3", "build_tiny_idefics3", 1, "random-init tiny Idefics3 (32-pixel tiles, 64x64 split into 2x2 + global)")
