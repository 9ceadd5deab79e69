"""The image-target embedding objective of M-Attack (VILA-Lab/M-Attack): move the image's open_clip
embedding toward a target image's, the target seen through a new random resized crop each step.

Per image n at step t:  1 - cos(f(x_n), f(crop_t(target)))  with f the unit-norm image embedding.
The crop is drawn like an EOT transform (visual_attacks.eot: kornia under a seed of its own, cached
per step, the generator's state in the attack checkpoint), from a seed derived from attack.seed but
not equal to it, so target crops and source crops (attack.eot) are drawn independently.
"""

from __future__ import annotations

import hashlib

import torch
from PIL import Image

from visual_attacks.eot import EOTConfig, EOTransforms


def _derived_seed(seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"target-crop/{seed}".encode()).digest()[:7], "big")


class TargetImageObjective:
    """`(pixels [N,3,H,W] in [0,1], step) -> loss [N]`; `validation(pixels)`: the same loss against the
    whole (uncropped) target, a fixed score keep-best can compare across steps."""

    def __init__(self, adapter, target: Image.Image, crop_scale, seed: int):
        self.adapter = adapter
        self.target = adapter.to_input_pixels([target]).to(adapter.device)
        crop = EOTConfig(samples=1, p=1.0, crop_scale=list(crop_scale), pad=0.0, rescale=1.0, noise_std=0.0,
                         jpeg_quality=None) if crop_scale is not None else None
        self.crops = EOTransforms(crop, _derived_seed(seed)) if crop is not None else None
        with torch.no_grad():
            self.whole = adapter.image_embeddings(self.target)
        self._features: dict[int, torch.Tensor] = {}

    def target_features(self, step: int) -> torch.Tensor:
        if self.crops is None:
            return self.whole
        if step not in self._features:
            with torch.no_grad():
                self._features = {step: self.adapter.image_embeddings(self.crops.for_step(step)[0](self.target))}
        return self._features[step]

    def __call__(self, pixels: torch.Tensor, step: int) -> torch.Tensor:
        return 1 - (self.adapter.image_embeddings(pixels) * self.target_features(step)).sum(-1)

    def validation(self, pixels: torch.Tensor) -> torch.Tensor:
        return 1 - (self.adapter.image_embeddings(pixels) * self.whole).sum(-1)

    def state_dict(self) -> dict:
        return self.crops.state_dict() if self.crops is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.crops is not None:
            self.crops.load_state_dict(state)
            self._features = {}
