from __future__ import annotations

from mmsafety.models.loading import LoadOptions
from mmsafety.models.registry import adapter_class
from mmsafety.organisms.builders import ensure_built
from mmsafety.placement import resolve_placement

ADAPTER_OF = {"tiny_llava": "llava", "organism": "llava", "tiny_open_clip": "open_clip", "tiny_qwen2_vl": "qwen2_vl",
              "tiny_paligemma": "paligemma", "tiny_llava_next": "llava_next",
              "tiny_qwen2_5_vl": "qwen2_vl", "tiny_instructblip": "blip", "tiny_blip2": "blip",
              "tiny_idefics3": "idefics3"}


def load_builtin(builder: str, seed: int = 0, dtype: str = "float32", device: str = "cpu", **execution):
    """A built-in model's adapter; `execution`: gradient_checkpointing / compile (placement options)."""
    path = ensure_built(builder, seed)
    return adapter_class(ADAPTER_OF[builder]).load(str(path), LoadOptions(), resolve_placement(device, dtype, **execution))
