"""The trained organisms that ship inside the package, so that first use loads them and trains nothing.

`shipped/<name>-v<version>-seed<seed>/` holds a builder's output as it was built (safetensors, config,
tokenizer files); `shipped/manifest.json` holds each file's sha256 and size, the library versions that
built it and its held-out behaviour measured on the shipped files. A copy is checked against the
manifest every time it is looked up (a few MB: milliseconds), and a mismatch is one line.

`MMSAFETY_ORGANISMS=build` ignores the shipped copies and builds from the recipe into the cache
(`mmsafety-build-organism NAME` does that for one name and compares the result with the shipped copy).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from datetime import date
from importlib import metadata
from pathlib import Path

from mmsafety.errors import ConfigError
from mmsafety.records import atomic_write_text

SHIPPED = Path(__file__).resolve().parent / "shipped"
MANIFEST_NAME = "manifest.json"
MODE_ENV = "MMSAFETY_ORGANISMS"
MODES = ("shipped", "build")
# What decides the bytes a build writes: the numerics (torch, numpy), the tokenizer and the model classes,
# the synthetic images (pillow) and the file format.
LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "pillow")
MARKERS = {"BUILT"}  # written by the cache's build_once, not part of a checkpoint


def folder_name(name: str, version: int, seed: int) -> str:
    return f"{name}-v{version}-seed{seed}"


def mode() -> str:
    """`shipped` (default: load the shipped copy where there is one) or `build` (build from the recipe)."""
    value = os.environ.get(MODE_ENV, "shipped").strip().lower() or "shipped"
    if value not in MODES:
        raise ConfigError(f"{MODE_ENV}={value!r}: use one of {', '.join(MODES)} "
                          f"(shipped: the files inside the package; build: train from the recipe into the cache)")
    return value


def library_versions() -> dict[str, str]:
    """The versions of the libraries that decide a build's bytes (read from package metadata: no import)."""
    versions = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = "absent"
    return versions


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checkpoint_files(folder: Path) -> dict[str, Path]:
    """Relative name -> path of every file of a built checkpoint (sub-folders included, markers left out)."""
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in MARKERS}


def manifest(root: Path | None = None) -> dict:
    """`{folder name: entry}`; empty when nothing ships (a package built without the files)."""
    path = (root or SHIPPED) / MANIFEST_NAME
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())["organisms"]
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: not a readable manifest ({e}); reinstall mmsafety, "
                          f"or set {MODE_ENV}=build to build the organisms from their recipes") from None


def verify(folder: Path, entry: dict, name: str) -> None:
    """One line when a shipped file is missing, or its bytes are not the manifest's."""
    fix = (f"the installed package is damaged: reinstall mmsafety, or rebuild from the recipe with "
           f"`mmsafety-build-organism {name}` and run with {MODE_ENV}=build")
    for rel, want in entry["files"].items():
        path = folder / rel
        if not path.is_file():
            raise ConfigError(f"shipped organism {name}: {path} is missing; {fix}")
        got = file_sha256(path)
        if got != want["sha256"]:
            raise ConfigError(f"shipped organism {name}: {path} has sha256 {got[:12]}..., the manifest says "
                              f"{want['sha256'][:12]}...; {fix}")


def shipped_copy(name: str, version: int, seed: int, root: Path | None = None) -> Path | None:
    """The verified shipped folder of this builder, version and seed; None when none ships."""
    root = root or SHIPPED
    key = folder_name(name, version, seed)
    entry = manifest(root).get(key)
    if entry is None:
        return None
    folder = root / key
    verify(folder, entry, name)
    return folder


def ship(name: str, version: int, seed: int, built: Path, behaviour: dict | None, root: Path | None = None) -> Path:
    """Copy a built checkpoint into the package and record it in the manifest (maintainers, from a
    source checkout: `mmsafety-build-organism NAME --ship`)."""
    root = root or SHIPPED
    key = folder_name(name, version, seed)
    files = checkpoint_files(built)
    tmp = root / f".{key}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, path in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, tmp / rel)
    target = root / key
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    entries = manifest(root)
    entries[key] = {
        "builder": name, "version": version, "seed": seed, "built": date.today().isoformat(),
        "built_with": library_versions(),
        "files": {rel: {"sha256": file_sha256(p), "bytes": p.stat().st_size} for rel, p in checkpoint_files(target).items()},
        "behaviour": behaviour,
    }
    doc = {"about": "Organisms built by mmsafety from scratch (synthetic data, tokenizers trained in code); "
                    "Apache-2.0 like the package. Rebuild one: mmsafety-build-organism NAME.",
           "organisms": dict(sorted(entries.items()))}
    atomic_write_text(root / MANIFEST_NAME, json.dumps(doc, indent=1, sort_keys=False) + "\n")
    return target


def version_drift(entry: dict) -> dict[str, tuple[str, str]]:
    """Library -> (version that built the shipped copy, version here), for those that differ."""
    now = library_versions()
    return {lib: (was, now.get(lib, "absent")) for lib, was in entry["built_with"].items() if now.get(lib) != was}
