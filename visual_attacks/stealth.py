"""How visible a perturbation is, measured on the saved 8-bit images (pixels in [0,1])."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def alexnet_weights_path() -> Path:
    """Where torchvision looks for the ImageNet AlexNet that LPIPS builds on (torchmetrics ships
    LPIPS's own linear layers). mmsafety never downloads it; if the file is there, LPIPS is reported."""
    # heavy, deferred to when this runs: torchvision
    from torchvision.models import AlexNet_Weights

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(AlexNet_Weights.DEFAULT.url).name


def lpips_available() -> bool:
    return alexnet_weights_path().is_file()


def lpips_note() -> str:
    return (f"LPIPS not reported: AlexNet weights not found at {alexnet_weights_path()}; copy "
            f"torchvision's alexnet-owt-7be5be79.pth there (or set TORCH_HOME) to get LPIPS")


@lru_cache(maxsize=1)
def _lpips_model():
    # heavy, deferred to when this runs: torchmetrics
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    # normalize=True: inputs in [0,1]. Weights come from the local file checked above.
    return LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).eval()


def stealth_metrics(clean: torch.Tensor, adversarial: torch.Tensor) -> list[dict[str, float]]:
    """Per image: L-inf and L2 distance (pixel units), PSNR (dB, data range 1), SSIM, and LPIPS
    (AlexNet) when its weights are on disk."""
    with_lpips = lpips_available()
    out = []
    for x, y in zip(clean.float(), adversarial.float()):
        delta = (y - x).flatten()
        row = {
            "linf": delta.abs().max().item(),
            "l2": delta.norm().item(),
            "psnr": peak_signal_noise_ratio(y[None], x[None], data_range=1.0).item() if delta.any() else float("inf"),
            "ssim": structural_similarity_index_measure(y[None], x[None], data_range=1.0).item(),
        }
        if with_lpips:
            with torch.no_grad():
                row["lpips"] = _lpips_model()(y[None], x[None]).item()
        out.append(row)
    return out
