"""Named builders of offline models, cached under `$MMSAFETY_CACHE/models/<name>-v<version>-seed<seed>`.

A build writes into a temporary folder and renames it into place, under a file lock
(`build_once`), so concurrent jobs (a sweep) build once and never load a half-written checkpoint.
"""

from __future__ import annotations

import importlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mmsafety.paths import build_once, cache_dir
from mmsafety.workload import PLUGIN_GROUP
from mmsafety.registry import Registry


@dataclass(frozen=True)
class Builder:
    build: Callable[[Path, int], None]
    version: int
    description: str
    vlm: bool = True  # a vision-language model with a conf/model preset; False: e.g. a text-only judge model


def _lazy(module: str, function: str) -> Callable[[Path, int], None]:
    """`mmsafety.organisms.<module>.<function>(out, seed)`, imported only when a build runs (the
    builders pull in transformers model classes that most commands never need)."""
    def build(out: Path, seed: int) -> None:
        getattr(importlib.import_module(f"mmsafety.organisms.{module}"), function)(out, seed)

    return build


def _organism(out: Path, seed: int) -> None:
    from mmsafety.organisms.organism import build_organism

    build_organism(out, seed, log=lambda line: print(line, file=sys.stderr, flush=True))


def _organism_version() -> int:
    from mmsafety.organisms.organism import ORGANISM_VERSION

    return ORGANISM_VERSION


# name -> Builder; `BUILDERS.add("tiny_x", Builder(...))` adds one (conf/model/tiny_x.yaml then names it).
BUILDERS: Registry[Builder] = Registry("model.builder", entry_points=PLUGIN_GROUP)  # plug-ins add their organisms
for _name, _builder in {
    "tiny_llava": Builder(_lazy("tiny_llava", "build_tiny_llava"), 1,
                          "random-init tiny LLaVA (contract tests; ignores its image)"),
    "organism": Builder(_organism, _organism_version(), "trained tiny LLaVA: memes, colours, image-triggered tool calls"),
    "tiny_open_clip": Builder(_lazy("tiny_open_clip", "build_tiny_open_clip"), 1, "random-init tiny open_clip ViT"),
    "tiny_qwen2_vl": Builder(_lazy("tiny_qwen2_vl", "build_tiny_qwen2_vl"), 1,
                             "random-init tiny Qwen2-VL (56x56, 4 image tokens)"),
    "tiny_qwen2_5_vl": Builder(_lazy("tiny_qwen2_vl", "build_tiny_qwen2_5_vl"), 1,
                               "random-init tiny Qwen2.5-VL (56x56, 4 image tokens)"),
    "tiny_paligemma": Builder(_lazy("tiny_paligemma", "build_tiny_paligemma"), 1,
                              "random-init tiny PaliGemma (32x32, 16 image tokens)"),
    "tiny_llava_next": Builder(_lazy("tiny_llava_next", "build_tiny_llava_next"), 1,
                               "random-init tiny LLaVA-NeXT (32-pixel tiles, up to 64x64)"),
    "tiny_instructblip": Builder(_lazy("tiny_blip", "build_tiny_instructblip"), 1,
                                 "random-init tiny InstructBLIP (32x32, 8 Q-Former queries)"),
    "tiny_blip2": Builder(_lazy("tiny_blip", "build_tiny_blip2"), 1, "random-init tiny BLIP-2 (32x32, 8 Q-Former queries)"),
    "tiny_idefics3": Builder(_lazy("tiny_idefics3", "build_tiny_idefics3"), 1,
                             "random-init tiny Idefics3 (32-pixel tiles, 64x64 split into 2x2 + global)"),
}.items():
    BUILDERS.add(_name, _builder)


def built_path(name: str, seed: int = 0) -> Path:
    return cache_dir() / "models" / f"{name}-v{BUILDERS.get(name).version}-seed{seed}"


def ensure_built(name: str, seed: int = 0) -> Path:
    """Path of the built checkpoint, building it first if this cache does not have it yet."""
    path = built_path(name, seed)

    def build(tmp: Path) -> None:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one line per build below is enough
        start = time.perf_counter()
        print(f"mmsafety: building {name} (seed {seed}) into {path} ...", file=sys.stderr, flush=True)
        BUILDERS.get(name).build(tmp, seed)
        print(f"mmsafety: built {name} in {time.perf_counter() - start:.0f}s", file=sys.stderr, flush=True)

    return build_once(path, build)
