"""Where a model runs: device, dtype and (for several GPUs) a device map."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmsafety.errors import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype
    device_map: str | None = None  # "auto": spread across visible GPUs (accelerate)
    gradient_checkpointing: bool = False  # attacks: recompute layers in the backward (less memory)
    compile: bool = False  # torch.compile the language model (see models/execution.py)


def resolve_placement(device: str | None, dtype: str, device_map: str | None = None,
                      gradient_checkpointing: bool = False, compile: bool = False) -> Placement:
    """Validate a placement config against this machine; errors say what to use instead."""
    if str(dtype) not in DTYPES:
        raise ConfigError(f"placement.dtype={dtype}: use one of {', '.join(DTYPES)}")
    wants_cuda = device_map == "auto" or (device or "").startswith("cuda")
    if wants_cuda and not torch.cuda.is_available():
        raise ConfigError("placement asks for CUDA but no CUDA device is visible; use placement=cpu")
    if device_map not in (None, "auto"):
        raise ConfigError(f"placement.device_map={device_map}: use auto or null")
    if device_map == "auto":
        device = "cuda:0"  # inputs go to the first GPU; accelerate places the layers
    try:
        dev = torch.device(device or "cpu")
    except RuntimeError:
        raise ConfigError(f"placement.device={device}: not a torch device (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"placement.device={device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return Placement(dev, DTYPES[str(dtype)], device_map, gradient_checkpointing, compile)
