"""Differentiable re-implementations of image processors, and PIL <-> pixel tensors.

Attacks optimise a float tensor in [0,1]; the model sees what its processor would make
of that image. The functions here reproduce the processors' resize / crop / pad /
normalise in torch so gradients flow through them. tests/test_processor_parity.py
measures the distance to the real Hugging Face processor on varied images.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def pil_to_pixels(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float tensor [3,H,W] in [0,1]."""
    arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255)


def pixels_to_pil(pixels: torch.Tensor) -> Image.Image:
    """Float tensor [3,H,W] in [0,1] -> 8-bit RGB image (round to nearest, as a PNG stores it)."""
    arr = pixels.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, "RGB")


def shortest_edge_size(height: int, width: int, shortest_edge: int) -> tuple[int, int]:
    """Output (h, w) when the shorter side is resized to `shortest_edge` (HF's rounding: int())."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(shortest_edge * long / short)
    return (new_long, shortest_edge) if width <= height else (shortest_edge, new_long)


def resize_bicubic(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic, antialiased resize of [B,3,H,W] in [0,1] to (h, w), as the processors' uint8 resize.

    The real processors resize uint8 images in two passes (width, then height) and clip the
    bicubic overshoot after each; doing the same keeps us within ~1/255 on noise and hard edges,
    where one float pass was off by up to 0.1 in pixel units."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    x = F.interpolate(x, size=(h, size[1]), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    return F.interpolate(x, size=tuple(size), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


@lru_cache(maxsize=64)  # an attack resizes the same sizes every step
def _lanczos_weights(n_in: int, n_out: int) -> torch.Tensor:
    """[n_out, n_in] Lanczos-3 resampling matrix with PIL's antialiased support and rounding
    (the kernel widens by the downscale factor; each row is normalised to sum 1)."""
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    support = 3.0 * stretch
    weights = np.zeros((n_out, n_in))
    for out in range(n_out):
        center = (out + 0.5) * scale
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), n_in)
        x = (np.arange(lo, hi) - center + 0.5) / stretch
        row = np.where(np.abs(x) < 3.0, np.sinc(x) * np.sinc(x / 3.0), 0.0)
        weights[out, lo:hi] = row / row.sum()
    return torch.from_numpy(weights).float()


def resize_lanczos(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Lanczos, antialiased resize of [..., H, W] in [0,1] to (h, w): two matrix products (width,
    then height, clipping the overshoot after each as the uint8 resize does), so gradients flow."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    across = _lanczos_weights(w, size[1]).to(x.device)
    down = _lanczos_weights(h, size[0]).to(x.device)
    x = (x.float() @ across.T).clamp(0, 1)
    return (down @ x).clamp(0, 1)


def normalize(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x - mean) / std per channel, channels in dim -3 ([B,3,H,W] or [B,tiles,3,H,W]); float32."""
    mean_t = torch.tensor(mean, device=pixels.device, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, device=pixels.device, dtype=torch.float32).view(3, 1, 1)
    return (pixels.float() - mean_t) / std_t


@dataclass(frozen=True)
class ClipStylePreprocess:
    """CLIPImageProcessor / LlavaImageProcessor semantics, differentiable.

    pad to square with the mean colour (optional) -> bicubic antialiased resize of the
    shortest edge -> center crop -> (x - mean) / std. Input pixels [B,3,H,W] in [0,1];
    output normalised [B,3,crop_h,crop_w], float32.
    """

    shortest_edge: int
    crop: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pad_to_square: bool = False

    @classmethod
    def from_hf(cls, image_processor) -> "ClipStylePreprocess":
        size = image_processor.size
        shortest = size.get("shortest_edge") if hasattr(size, "get") else getattr(size, "shortest_edge", None)
        crop = image_processor.crop_size
        return cls(
            shortest_edge=int(shortest),
            crop=(int(crop["height"]), int(crop["width"])),
            mean=tuple(float(x) for x in image_processor.image_mean),
            std=tuple(float(x) for x in image_processor.image_std),
            pad_to_square=bool(getattr(image_processor, "do_pad", False)),
        )

    def resize_and_crop(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels
        if self.pad_to_square:
            x = self._pad_to_square(x)
        h, w = x.shape[-2:]
        new_h, new_w = shortest_edge_size(h, w, self.shortest_edge)
        x = resize_bicubic(x, (new_h, new_w))
        ch, cw = self.crop
        top, left = int((new_h - ch) / 2.0), int((new_w - cw) / 2.0)
        if top < 0 or left < 0:
            raise ValueError(f"image {new_h}x{new_w} is smaller than the crop {ch}x{cw}")
        return x[..., top:top + ch, left:left + cw]

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return normalize(self.resize_and_crop(pixels), self.mean, self.std)

    def _pad_to_square(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h == w:
            return x
        side = max(h, w)
        left, top = (side - w) // 2, (side - h) // 2
        fill = torch.tensor([int(m * 255) / 255 for m in self.mean], dtype=x.dtype, device=x.device)
        out = fill.view(1, 3, 1, 1).expand(x.shape[0], 3, side, side).clone()
        out[..., top:top + h, left:left + w] = x
        return out


@dataclass(frozen=True)
class SquashPreprocess:
    """SiglipImageProcessor and BlipImageProcessor, differentiable: resize to (H, W) ignoring the
    aspect ratio (`resize_bicubic`), then (x - mean) / std."""

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def resize_and_crop(self, pixels: torch.Tensor) -> torch.Tensor:
        return resize_bicubic(pixels, self.size)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return normalize(self.resize_and_crop(pixels.float()), self.mean, self.std)


def stack_pil(images: Sequence[Image.Image], preprocess: ClipStylePreprocess) -> torch.Tensor:
    """PIL images of any sizes -> [B,3,crop_h,crop_w] in [0,1] at the model's input size.

    Images of the same size are resized together (one interpolation call per size)."""
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        by_size.setdefault(im.size, []).append(i)
    out: list[torch.Tensor | None] = [None] * len(images)
    for idx in by_size.values():
        resized = preprocess.resize_and_crop(torch.stack([pil_to_pixels(images[i]) for i in idx]))
        for i, r in zip(idx, resized):
            out[i] = r
    return torch.stack(out)


def processed_pixels(images, preprocess, image_processor, device, dtype) -> torch.Tensor:
    """What a model with a single image tensor input sees: PIL images through the real (HF)
    image processor, a pixel tensor in [0,1] through the differentiable `preprocess`."""
    if isinstance(images, torch.Tensor):
        values = preprocess(images.to(device, torch.float32))
    else:
        values = run_image_processor(image_processor, images)["pixel_values"]
    return values.to(device, dtype)


def run_image_processor(image_processor, images: Sequence[Image.Image], one_per_sample: bool = False, **kwargs):
    """The real HF image processor on PIL images (what evaluation feeds a model).

    HF's torchvision backend resizes CPU images one at a time unless told to group them by
    size; grouped, each size is one stacked call with the same per-image result (a test checks
    equality) at about three quarters of the time on memes. `one_per_sample`: for processors that
    take a list of images per sample (Idefics3), each image is its own sample."""
    rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
    grouping = {"disable_grouping": False} if getattr(image_processor, "backend", None) == "torchvision" else {}
    return image_processor([[im] for im in rgb] if one_per_sample else rgb, return_tensors="pt", **grouping, **kwargs)
