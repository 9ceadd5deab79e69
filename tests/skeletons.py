"""Skeleton checkpoints: the real tokenizer, chat template and processor config of a checkpoint
behind a preset (tests/fixtures/checkpoints/, sources and licences in SOURCE.md there), with the
real model config shrunk in depth and width and random weights, saved as a loadable folder.

Only the metadata is stored in the repository; the weights are built here, seeded, in a few seconds.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "checkpoints"

# fixture folder -> (transformers class, the preset in conf/model/ it stands for)
SKELETONS = {
    "llava-1.5-7b-hf": ("LlavaForConditionalGeneration", "llava_1_5_7b", "llava"),
    "qwen2.5-vl-7b-instruct": ("Qwen2_5_VLForConditionalGeneration", "qwen2_5_vl_7b", "qwen2_vl"),
}


def shrink(name: str, config: dict) -> dict:
    """The real config with depth and widths cut (vocabulary, image sizes, patch sizes, token ids,
    feature layer and select strategy untouched)."""
    c = copy.deepcopy(config)
    if name == "llava-1.5-7b-hf":
        c["text_config"].update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                                num_key_value_heads=2)
        c["vision_config"].update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  projection_dim=32)
    else:
        c.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, max_window_layers=2)
        c["rope_scaling"] = dict(c["rope_scaling"], mrope_section=[4, 6, 6])  # head_dim 32: sections sum to 16
        c["vision_config"].update(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                                  fullatt_block_indexes=[1])
    return c


def build_skeleton(name: str, dest: Path, seed: int = 0) -> Path:
    """A loadable checkpoint folder at `dest`: the fixture's metadata files plus random weights."""
    import transformers

    class_name = SKELETONS[name][0]
    src = FIXTURES / name
    dest.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name not in ("config.json", "SOURCE.md"):
            shutil.copy(f, dest / f.name)
    config_dict = shrink(name, json.loads((src / "config.json").read_text()))
    config = transformers.AutoConfig.for_model(**config_dict)
    torch.manual_seed(seed)
    model = getattr(transformers, class_name)(config).eval()
    model.save_pretrained(dest, safe_serialization=True)
    return dest
