"""Where mmsafety keeps what it builds: tiny models, organisms, synthetic data."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from typing import Callable


def cache_root() -> Path:
    """Where the cache is, without creating it: `$MMSAFETY_CACHE`, else the XDG cache,
    `${XDG_CACHE_HOME:-~/.cache}/mmsafety`. One default for the console scripts and the Makefile,
    so a model built by `make demo` is found by a command typed in a shell."""
    explicit = os.environ.get("MMSAFETY_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg and Path(xdg).expanduser().is_absolute() else Path.home() / ".cache"
    return base / "mmsafety"


def cache_dir() -> Path:
    """`cache_root()`, created on first use."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    return root


def build_once(path: Path, build: Callable[[Path], None], marker: str = "BUILT") -> Path:
    """Make `path` by calling `build(tmp)` on a temporary folder and renaming it into place, under
    a file lock: concurrent jobs (a sweep) build it once, and nobody sees half of it."""
    if (path / marker).exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent job waits here, then finds it built
        if not (path / marker).exists():
            tmp = path.with_name(path.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            build(tmp)
            (tmp / marker).write_text(f"{path.name}\n")
            shutil.rmtree(path, ignore_errors=True)  # an incomplete earlier attempt
            tmp.rename(path)
    return path


def inside(folder: str | Path, relative) -> Path | None:
    """`folder / relative`, resolved, or None when it leaves `folder` (an absolute path, `..`, a symlink
    out): file names in a record or a sample are data, and must not make a reader open or publish a
    file elsewhere on the machine."""
    if not isinstance(relative, str) or not relative:
        return None
    root = Path(folder).resolve()
    path = (root / relative).resolve()
    return path if path.is_relative_to(root) else None
