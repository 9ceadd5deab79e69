"""The output folder: refused before any job when it cannot be written; a full or read-only disk
met mid-job explained in one line that says how to resume."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from mmsafety.errors import UserError

# A disk that is full, over quota, read-only or not ours: the user can fix these, then resume.
STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def describe_os_error(error: OSError, out_dir, key: str = "hydra.run.dir") -> str:
    """One line for a failed read or write (disk full, permissions, ...) that names the fix (`key`:
    the override that moves the output, hydra.sweep.dir under -m)."""
    where = error.filename or out_dir
    return (f"{error.strerror or error} ({where}); the record keeps every sample written so far: "
            f"free space or fix permissions and run the same command again to resume, "
            f"or pass {key}=ANOTHER_DIR")


def check_output_dir(target: Path, key: str) -> None:
    """Refuse an output folder that cannot be created or written (`key`: the override that moves it)."""
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot create output folder {target}: {existing} is a file, not a folder; pass {key}=A_FOLDER")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to output folder {target}: {existing} is not writable; "
                        f"pass {key}=A_WRITABLE_FOLDER")
