"""A deterministic tiny open_clip model, saved in open_clip's `local-dir:` checkpoint format."""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_CLIP_NAME = "mmsafety-tiny-clip"
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
PREPROCESS_CFG = {
    "size": 64,
    "mode": "RGB",
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}


def register_tiny_clip_config() -> None:
    """Make `open_clip.create_model("mmsafety-tiny-clip")` work in this process."""
    # heavy, deferred to when this runs: open_clip
    import open_clip
    from open_clip import factory

    if TINY_CLIP_NAME not in open_clip.list_models():
        factory._MODEL_CONFIGS[TINY_CLIP_NAME] = json.loads(json.dumps(TINY_CLIP_CONFIG))


def build_tiny_open_clip(out_dir: Path, seed: int = 0) -> None:
    # heavy, deferred to when this runs: open_clip, safetensors
    import open_clip
    from safetensors.torch import save_file

    register_tiny_clip_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / "open_clip_model.safetensors"))
    (out_dir / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": TINY_CLIP_CONFIG, "preprocess_cfg": PREPROCESS_CFG}, indent=2))
