"""How visible a perturbation is, measured on the saved 8-bit images (pixels in [0,1])."""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def stealth_metrics(clean: torch.Tensor, adversarial: torch.Tensor) -> list[dict[str, float]]:
    """Per image: L-inf and L2 distance (pixel units), PSNR (dB, data range 1) and SSIM."""
    out = []
    for x, y in zip(clean.float(), adversarial.float()):
        delta = (y - x).flatten()
        out.append({
            "linf": delta.abs().max().item(),
            "l2": delta.norm().item(),
            "psnr": peak_signal_noise_ratio(y[None], x[None], data_range=1.0).item() if delta.any() else float("inf"),
            "ssim": structural_similarity_index_measure(y[None], x[None], data_range=1.0).item(),
        })
    return out


# LPIPS needs pretrained network weights that this project never downloads, and torchmetrics'
# LPIPS fetches them at construction; until a local-weights path exists, records say so.
LPIPS_NOTE = "LPIPS not reported: it needs pretrained network weights, which mmsafety does not download"
