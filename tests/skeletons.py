"""Skeleton checkpoints: the real tokenizer, chat template and processor config of a checkpoint
behind a preset, with the real model config shrunk in depth and width and random weights, saved as a
loadable folder.

The metadata comes from tests/fixtures/checkpoints/ when its licence lets the repository carry it
(Qwen2.5-VL, Apache-2.0), and otherwise from a folder of real checkpoint metadata the user names in
$MMSAFETY_REFERENCE_CHECKPOINTS: the llava-1.5 files fall under the Llama 2 Community License, which
requires a copy of the agreement with any redistribution, so the repository does not ship them and
their tests skip unless that variable is set. Nothing outside the repository is read by default. Sources and licences: SOURCE.md in each fixture folder. Weights are built here, seeded, in
a few seconds.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "checkpoints"
REFERENCE_ENV = "MMSAFETY_REFERENCE_CHECKPOINTS"

# fixture folder -> (transformers class, the preset in conf/model/ it stands for, adapter)
SKELETONS = {
    "llava-1.5-7b-hf": ("LlavaForConditionalGeneration", "llava_1_5_7b", "llava"),
    "qwen2.5-vl-7b-instruct": ("Qwen2_5_VLForConditionalGeneration", "qwen2_5_vl_7b", "qwen2_vl"),
}

# Checkpoints whose metadata is read from the reference set (folder name there), not from the
# repository, because their licence does not let the repository redistribute them as it is.
FROM_REFERENCE = {"llava-1.5-7b-hf": "llava-hf__llava-1.5-7b-hf"}

# The files a skeleton needs (the reference set also holds weight indexes and generation configs,
# which must not be copied next to random weights).
METADATA_FILES = {
    "llava-1.5-7b-hf": ("config.json", "added_tokens.json", "chat_template.json", "preprocessor_config.json",
                        "processor_config.json", "special_tokens_map.json", "tokenizer.json",
                        "tokenizer_config.json"),
    "qwen2.5-vl-7b-instruct": ("config.json", "chat_template.json", "merges.txt", "preprocessor_config.json",
                               "tokenizer_config.json", "vocab.json"),
}


def reference_root() -> Path | None:
    """The folder of real checkpoint metadata the user named in the environment variable (None: unset,
    so the tests that need it skip: a clone carries nothing outside the repository)."""
    configured = os.environ.get(REFERENCE_ENV)
    return Path(configured) if configured else None


def metadata_dir(name: str) -> Path:
    """The folder holding the real metadata files of skeleton `name`."""
    if name in FROM_REFERENCE:
        return reference_root() / FROM_REFERENCE[name]
    return FIXTURES / name


def unavailable_reason(name: str) -> str | None:
    """Why skeleton `name` cannot be built here (None when it can): a skip reason naming the fix."""
    if name in FROM_REFERENCE and reference_root() is None:
        return (f"{name} metadata is not in the repository (Llama 2 Community License, see "
                f"tests/fixtures/checkpoints/{name}/SOURCE.md); set ${REFERENCE_ENV} to a folder holding "
                f"{FROM_REFERENCE[name]}/ to run this test")
    folder = metadata_dir(name)
    missing = [f for f in METADATA_FILES[name] if not (folder / f).is_file()]
    if not missing:
        return None
    what = "not found" if len(missing) == len(METADATA_FILES[name]) else f"incomplete (no {', '.join(missing)})"
    return (f"{name} metadata {what} in {folder}: the repository does not ship it (Llama 2 Community License, "
            f"see tests/fixtures/checkpoints/{name}/SOURCE.md); set ${REFERENCE_ENV} to the folder holding "
            f"{FROM_REFERENCE.get(name, name)}/")


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
    """A loadable checkpoint folder at `dest`: the real metadata files (`metadata_dir`) plus random weights."""
    import transformers

    class_name = SKELETONS[name][0]
    src = metadata_dir(name)
    dest.mkdir(parents=True, exist_ok=True)
    for file_name in METADATA_FILES[name]:
        if file_name != "config.json":
            shutil.copyfile(src / file_name, dest / file_name)  # not the reference set's read-only mode
    config_dict = shrink(name, json.loads((src / "config.json").read_text()))
    config = transformers.AutoConfig.for_model(**config_dict)
    torch.manual_seed(seed)
    model = getattr(transformers, class_name)(config).eval()
    model.save_pretrained(dest, safe_serialization=True)
    return dest
