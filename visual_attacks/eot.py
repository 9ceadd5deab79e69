"""Expectation over transformation (EOT, Athalye et al. 2018): each attack step averages the objective
over random differentiable transforms of the image, so the perturbation survives what happens to
the image on its way to a deployed model (a crop, a rescale, re-encoding as JPEG).

The transforms are kornia's augmentations, each applied with probability `p` per image:
random resized crop (`crop_scale`: [lo, hi] of the kept area), shift-and-shrink with padding (`pad`:
largest shift and shrink as a fraction of the side), a down-then-up rescale (`rescale`: smallest
factor), Gaussian noise (`noise_std`), and kornia's differentiable JPEG (`jpeg_quality`: [lo, hi]).

Seeding: kornia draws its parameters from torch's global RNG, so every transform sample runs under
`torch.random.fork_rng` with a seed drawn from this object's own `torch.Generator` (seeded by
`attack.seed`); the global RNG is left as it was. A step's seeds are cached, so evaluating the same
step again (another surrogate, re-scoring) sees the same transforms, and the generator's state is
part of the attack checkpoint (`state_dict`), so a resumed attack draws what an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F

from mmsafety.errors import ConfigError


@dataclass
class EOTConfig:
    samples: int = 0                   # transforms averaged per step (0: EOT off)
    p: float = 0.5                     # probability that each transform is applied to an image
    crop_scale: Optional[List[float]] = field(default_factory=lambda: [0.8, 1.0])  # random resized crop's kept area [lo, hi]; null: off
    pad: float = 0.1                   # shift and shrink by up to this fraction of the side, padding with zeros (0: off)
    rescale: float = 0.5               # downscale by a factor in [rescale, 1], then back up (1: off)
    noise_std: float = 0.02            # Gaussian noise std in pixel units (0: off)
    jpeg_quality: Optional[List[float]] = field(default_factory=lambda: [50.0, 95.0])  # [lo, hi]; null: no JPEG


def check_eot(eot) -> None:
    """Range checks a type cannot express, one line each (before any model loads)."""
    if eot is None:
        return
    if eot.samples < 0:
        raise ConfigError(f"attack.eot.samples={eot.samples}: must be >= 0 (0 turns EOT off, e.g. 4)")
    if not 0 <= eot.p <= 1:
        raise ConfigError(f"attack.eot.p={eot.p}: a probability, must be in [0, 1]")
    if eot.crop_scale is not None:
        lo, hi = pair("attack.eot.crop_scale", eot.crop_scale, "[0.8, 1.0]")
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"attack.eot.crop_scale=[{lo:g}, {hi:g}]: need 0 < lo <= hi <= 1, e.g. [0.8, 1.0]")
    if not 0 <= eot.pad < 0.5:
        raise ConfigError(f"attack.eot.pad={eot.pad}: a fraction of the side, must be in [0, 0.5)")
    if not 0 < eot.rescale <= 1:
        raise ConfigError(f"attack.eot.rescale={eot.rescale}: the smallest downscale factor, must be in (0, 1]")
    if eot.noise_std < 0:
        raise ConfigError(f"attack.eot.noise_std={eot.noise_std}: must be >= 0")
    if eot.jpeg_quality is None:
        return
    lo, hi = jpeg_range(eot)
    if not 1 <= lo <= hi <= 100:
        raise ConfigError(f"attack.eot.jpeg_quality=[{lo}, {hi}]: need 1 <= lo <= hi <= 100, e.g. [50, 95]")


def pair(key: str, value, example: str) -> tuple[float, float]:
    values = list(value)
    if len(values) != 2:
        raise ConfigError(f"{key}={values}: give [lo, hi], e.g. {example}")
    return float(values[0]), float(values[1])


def jpeg_range(eot) -> tuple[float, float]:
    return pair("attack.eot.jpeg_quality", eot.jpeg_quality, "[50, 95]")


def eot_enabled(eot) -> bool:
    return eot is not None and eot.samples > 0


def describe(eot) -> str | None:
    """A short description for the record's spec (`eot`), None when EOT is off."""
    if not eot_enabled(eot):
        return None
    parts = []
    if eot.crop_scale is not None:
        lo, hi = pair("attack.eot.crop_scale", eot.crop_scale, "[0.8, 1.0]")
        parts.append(f"crop {lo:g}-{hi:g}")
    if eot.pad > 0:
        parts.append(f"pad {eot.pad:g}")
    if eot.rescale < 1:
        parts.append(f"rescale {eot.rescale:g}-1")
    if eot.noise_std > 0:
        parts.append(f"noise {eot.noise_std:g}")
    if eot.jpeg_quality is not None:
        lo, hi = jpeg_range(eot)
        parts.append(f"jpeg {lo:g}-{hi:g}")
    return f"{eot.samples} samples, p={eot.p:g}: " + ", ".join(parts or ["identity"])


class RandomRescale(torch.nn.Module):
    """Downscale by a factor in [low, 1] and back up (bilinear, antialiased down): the detail a
    product's resize loses. Draws from torch's global RNG, as kornia's augmentations do."""

    def __init__(self, low: float, p: float):
        super().__init__()
        self.low, self.p = low, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        out = []
        for image in x:  # a factor per image
            apply = torch.rand(()) < self.p
            factor = float(self.low + (1 - self.low) * torch.rand(()))
            if apply and factor < 1:
                small = (max(1, round(h * factor)), max(1, round(w * factor)))
                image = F.interpolate(image[None], size=small, mode="bilinear", antialias=True, align_corners=False)
                image = F.interpolate(image, size=(h, w), mode="bilinear", align_corners=False)[0]
            out.append(image)
        return torch.stack(out)


def build_transforms(eot, size: tuple[int, int]) -> torch.nn.Module:
    """The kornia pipeline for images of `size` (H, W); pixels in [0,1] in and out."""
    # heavy, deferred to when this runs: kornia
    import kornia.augmentation as K

    steps: list[torch.nn.Module] = []
    if eot.crop_scale is not None:
        scale = pair("attack.eot.crop_scale", eot.crop_scale, "[0.8, 1.0]")
        steps.append(K.RandomResizedCrop(size, scale=scale, ratio=(3 / 4, 4 / 3), p=eot.p))
    if eot.pad > 0:
        steps.append(K.RandomAffine(degrees=0.0, translate=(eot.pad, eot.pad), scale=(1 - eot.pad, 1.0),
                                    padding_mode="zeros", p=eot.p))
    if eot.rescale < 1:
        steps.append(RandomRescale(eot.rescale, eot.p))
    if eot.noise_std > 0:
        steps.append(K.RandomGaussianNoise(mean=0.0, std=eot.noise_std, p=eot.p))
    if eot.jpeg_quality is not None:
        # kornia's JPEG wants pixels in [0,1]: clamp what the noise pushed out
        steps.append(Clamp())
        steps.append(K.RandomJPEG(jpeg_quality=jpeg_range(eot), p=eot.p))
    steps.append(Clamp())
    return torch.nn.Sequential(*steps)


class Clamp(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0, 1)


class EOTransforms:
    """`for_step(step) -> [transform, ...]` (`samples` of them): each transform maps pixels
    [N,3,H,W] in [0,1] to transformed pixels of the same shape, differentiably, and gives the same
    result every time it is called (its seed is fixed)."""

    def __init__(self, eot, seed: int):
        self.eot = eot
        self.gen = torch.Generator().manual_seed(seed)
        self.cache: dict[int, list[int]] = {}
        self._pipelines: dict[tuple[int, int], torch.nn.Module] = {}

    def state_dict(self) -> dict:
        return {"generator": self.gen.get_state(), "cache": dict(self.cache)}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["generator"])
        self.cache = dict(state["cache"])

    def seeds(self, step: int) -> list[int]:
        if step not in self.cache:
            draws = torch.randint(0, 2 ** 62, (self.eot.samples,), generator=self.gen).tolist()
            self.cache = {step: draws}
        return self.cache[step]

    def for_step(self, step: int) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        return [self._seeded(seed) for seed in self.seeds(step)]

    def _pipeline(self, size: tuple[int, int]) -> torch.nn.Module:
        if size not in self._pipelines:
            self._pipelines[size] = build_transforms(self.eot, size)
        return self._pipelines[size]

    def _seeded(self, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def transform(x: torch.Tensor) -> torch.Tensor:
            pipeline = self._pipeline(tuple(x.shape[-2:]))
            devices = [x.device.index or 0] if x.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                return pipeline(x.float())

        return transform

