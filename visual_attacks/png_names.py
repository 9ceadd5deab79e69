"""Names of the PNGs an attack saves, and the check that a saved PNG is still what was saved.

A PNG is named `<image index>-<role>-<sha256 of its bytes>.png` (`0003-adversarial-9f2c....png`),
so a listing tells the clean image of a base from its adversarial one while the name still proves
the bytes. Runs written before carry the sha256 alone (`9f2c....png`); those names are still read.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from mmsafety.errors import UserError

ROLES = ("clean", "adversarial")
_NAME = re.compile(r"^(?:(?P<index>\d+)-(?P<role>[a-z]+)-)?(?P<sha256>[0-9a-f]{64})\.png$")


def png_name(data: bytes, index: int, role: str) -> str:
    """`0003-adversarial-<sha256>.png` for the PNG bytes `data` of base image `index`."""
    if role not in ROLES:
        raise ValueError(f"role {role!r}: one of {ROLES}")
    return f"{index:04d}-{role}-{hashlib.sha256(data).hexdigest()}.png"


def sha256_in_name(path: Path) -> str | None:
    """The sha256 a PNG's name carries (new or old naming); None when the name carries none."""
    match = _NAME.match(Path(path).name)
    return match["sha256"] if match else None


def read_verified_png(path: Path) -> bytes:
    """The bytes of a saved PNG, refused in one line when the file is missing, its name carries no
    sha256, or its bytes no longer match that sha256 (modified since the attack saved it)."""
    path = Path(path)
    expected = sha256_in_name(path)
    if expected is None:
        raise UserError(f"{path}: not a PNG saved by mmsafety-attack (its name carries no sha256); "
                        f"judge only the images an attack run saved")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read the saved PNG ({e.strerror or e}); "
                        f"the attack run folder is incomplete, rerun the attack") from None
    if hashlib.sha256(data).hexdigest() != expected:
        raise UserError(f"{path}: modified since the attack saved it (its sha256 no longer matches its name); "
                        f"refused, not judged: restore the file or rerun the attack")
    return data
