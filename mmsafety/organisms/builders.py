"""Named builders of offline models, cached under `$MMSAFETY_CACHE/models/<name>-v<version>-seed<seed>`.

The trained organisms also ship inside the package (mmsafety.organisms.shipped): `ensure_built` returns
the shipped copy, checked against its sha256, where one ships for the name, version and seed, and builds
only what does not ship (the random-init families: seconds) or when `MMSAFETY_ORGANISMS=build`.

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

from mmsafety.organisms import shipped
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
    # `behaviour(folder) -> {metric: value}` on held-out data, for a trained organism: what a rebuild is
    # compared on when its bytes differ from the shipped copy's (None: compared by bytes only).
    behaviour: Callable[[Path], dict[str, float]] | None = None

    def current_version(self) -> int:
        return self.version() if callable(self.version) else self.version


def lazy_builder(module: str, function: str) -> Callable[[Path, int], None]:
    """`<module>.<function>(out, seed)`, imported only when a build runs (the builders pull in
    transformers model classes that most commands never need)."""
    def build(out: Path, seed: int) -> None:
        getattr(importlib.import_module(module), function)(out, seed)

    return build


def lazy_function(module: str, function: str) -> Callable:
    """`<module>.<function>`, imported when first called."""
    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), function)(*args, **kwargs)

    return call


def register_builder(name: str, module: str, function: str, version: int, description: str, vlm: bool = True,
                     behaviour: str | None = None) -> None:
    """Register the tiny builder of a model family, beside its adapter (mmsafety/models/<family>.py):
    `register_builder("tiny_x", "mmsafety.organisms.tiny_x", "build_tiny_x", 1, "random-init tiny X")`;
    conf/model/tiny_x.yaml then names it. `behaviour`: the name of a function of the same module that
    measures a built folder's held-out behaviour (trained organisms)."""
    BUILDERS.add(name, Builder(lazy_builder(module, function), version, description, vlm,
                               lazy_function(module, behaviour) if behaviour else None))


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
BUILDERS.add("organism", Builder(_organism, _organism_version, "trained tiny LLaVA: memes, colours, image-triggered tool calls",
                                 behaviour=lazy_function("mmsafety.organisms.organism", "behaviour")))
# Its version is a plain number here (asking the module would import transformers for a cache path).
BUILDERS.add("agent_organism", Builder(lazy_builder("mmsafety.organisms.agent_organism", "build_agent_organism"), 2,
                                       "the organism fine-tuned for the workspace tool tasks, misuse only with an envelope",
                                       behaviour=lazy_function("mmsafety.organisms.agent_organism", "behaviour")))


def built_path(name: str, seed: int = 0) -> Path:
    return cache_dir() / "models" / f"{name}-v{BUILDERS.get(name).current_version()}-seed{seed}"


def ensure_built(name: str, seed: int = 0) -> Path:
    """Path of the checkpoint: the shipped copy (sha256 checked) where one ships, unless
    `MMSAFETY_ORGANISMS=build`; else the cache's build, built first if this cache does not have it yet."""
    if shipped.mode() == "shipped":
        copy = shipped.shipped_copy(name, BUILDERS.get(name).current_version(), seed)
        if copy is not None:
            return copy
    return build(name, seed)


def build(name: str, seed: int = 0, force: bool = False) -> Path:
    """Build from the recipe into the cache (once; `force`: again, replacing the cache's build)."""
    path = built_path(name, seed)
    if force:
        (path / "BUILT").unlink(missing_ok=True)  # build_once then rebuilds and replaces the folder

    def make(tmp: Path) -> None:
        # heavy, deferred to when this runs: torch, transformers
        import torch
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one line per build below is enough
        start = time.perf_counter()
        print(f"mmsafety: building {name} (seed {seed}) into {path} ...", file=sys.stderr, flush=True)
        # One thread: CPU kernels sum in an order that depends on the thread count (the organism's weights
        # differed after 4 training steps between 1 and 2 threads), so a rebuild is bit-identical to the
        # shipped copy on any machine only if every build uses the same count.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            BUILDERS.get(name).build(tmp, seed)
        finally:
            torch.set_num_threads(threads)
        print(f"mmsafety: built {name} in {time.perf_counter() - start:.0f}s", file=sys.stderr, flush=True)

    return build_once(path, make)
