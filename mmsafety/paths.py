"""Where mmsafety keeps what it builds: tiny models, organisms, synthetic data."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$MMSAFETY_CACHE`, else `~/.cache/mmsafety`. Created on first use."""
    root = Path(os.environ.get("MMSAFETY_CACHE") or Path.home() / ".cache" / "mmsafety").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root
