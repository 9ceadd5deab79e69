"""Named builders of offline models, cached under `$MMSAFETY_CACHE/models/<name>-v<version>-seed<seed>`.

A build writes into a temporary folder and renames it into place, under a file lock
(`build_once`), so concurrent jobs (a sweep) build once and never load a half-written checkpoint.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mmsafety.paths import build_once, cache_dir
from mmsafety.registry import Registry


@dataclass(frozen=True)
class Builder:
    """`build(out, seed)` writes a checkpoint into `out`. `version` names the cache folder; a callable is
    asked only when a path is needed (the organism's version lives beside its training code, which
    imports transformers)."""

    build: Callable[[Path, int], None]
    version: int | Callable[[], int]
    description: str
    vlm: bool = True  # a vision-language model with a conf/model preset; False: e.g. a text-only judge model

    def current_version(self) -> int:
        return self.version() if callable(self.version) else self.version


def lazy_builder(module: str, function: str) -> Callable[[Path, int], None]:
    """`<module>.<function>(out, seed)`, imported only when a build runs (the builders pull in
    transformers model classes that most commands never need)."""
    def build(out: Path, seed: int) -> None:
        getattr(importlib.import_module(module), function)(out, seed)

    return build


def register_builder(name: str, module: str, function: str, version: int, description: str, vlm: bool = True) -> None:
    """Register the tiny builder of a model family, beside its adapter (mmsafety/models/<family>.py):
    `register_builder("tiny_x", "mmsafety.organisms.tiny_x", "build_tiny_x", 1, "random-init tiny X")`;
    conf/model/tiny_x.yaml then names it."""
    BUILDERS.add(name, Builder(lazy_builder(module, function), version, description, vlm))


def _organism(out: Path, seed: int) -> None:
    from mmsafety.organisms.organism import build_organism  # trains with transformers: only when it builds

    build_organism(out, seed, log=lambda line: print(line, file=sys.stderr, flush=True))


def _organism_version() -> int:
    from mmsafety.organisms.organism import ORGANISM_VERSION  # imports transformers: asked for a cache path only

    return ORGANISM_VERSION


def _adapter_modules() -> list[str]:
    """The family builders register beside their adapters, so a lookup imports the adapter modules (as
    mmsafety.models.registry does; found by scanning the folder, so a new family lists itself)."""
    folder = Path(__file__).resolve().parents[1] / "models"
    return [f"mmsafety.models.{m.name}" for m in pkgutil.iter_modules([str(folder)])]


# name -> Builder. The core's families register in their adapter modules; plug-ins through
# `builder:<name>` entries in the mmsafety.plugins group.
BUILDERS: Registry[Builder] = Registry("model.builder", kind="builder", modules=_adapter_modules)
BUILDERS.add("organism", Builder(_organism, _organism_version, "trained tiny LLaVA: memes, colours, image-triggered tool calls"))


def built_path(name: str, seed: int = 0) -> Path:
    return cache_dir() / "models" / f"{name}-v{BUILDERS.get(name).current_version()}-seed{seed}"


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
