"""`mmsafety-migrate-runs PATH... [--dry-run]`: run folders written in an earlier config layout, rewritten
in today's (mmsafety.config_migration), so that the same command finds and resumes them.

A run's folder name ends with the first 8 hex digits of its config's sha256 (`${config_hash:}`), and
a change of the config schema changes that hash: without this, the same command would start a new
folder beside the old one and pay again for every sample. For each record.json under PATH whose
config reads differently today, the record gets today's config and hash (written atomically, under
the folder's lock), and a folder named with the old hash is renamed with the new one. Samples, PNGs
and attack states are untouched: the layout changed, not what ran. A run given its folder by
`hydra.run.dir=DIR` resumes without this (the record's old config is read as today's).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
from pathlib import Path

from mmsafety.config_migration import upgrade_config
from mmsafety.records import atomic_write_text, config_sha256
from mmsafety.safe_json import loads_object

HASH_CHARS = 8  # as in a folder name (mmsafety.cli.run_identity)


def migrate_run(record_path: Path, dry_run: bool = False) -> str | None:
    """Rewrite one run in today's layout; a line saying what was done (None: already in today's layout)."""
    folder = record_path.parent
    try:
        record = loads_object(record_path.read_bytes())
    except (OSError, ValueError) as e:
        return f"skipped {record_path}: not a readable record ({e})"
    config, old_sha = record.get("config"), record.get("config_sha256")
    if not isinstance(config, dict) or not isinstance(old_sha, str):
        return f"skipped {record_path}: no config or config_sha256 in it"
    upgraded = upgrade_config(config)
    if upgraded == config:
        return None
    new_sha = config_sha256(upgraded)
    target = folder
    if folder.name.endswith("-" + old_sha[:HASH_CHARS]):
        target = folder.with_name(folder.name[:-HASH_CHARS] + new_sha[:HASH_CHARS])
        if target.exists():
            return f"skipped {folder}: {target.name} exists beside it (the run was started again under today's layout)"
    if dry_run:
        return f"would migrate {folder}" + (f" -> {target.name}" if target != folder else "")
    with open(folder / ".record.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return f"skipped {folder}: a job is writing it; run this again when it has finished"
        record.update(config=upgraded, config_sha256=new_sha)
        atomic_write_text(record_path, json.dumps(record, indent=2, ensure_ascii=False, default=str))
        if target != folder:
            folder.rename(target)
    return f"migrated {folder}" + (f" -> {target.name}" if target != folder else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mmsafety-migrate-runs", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("paths", nargs="+", help="run or sweep folders (searched recursively for record.json)")
    ap.add_argument("--dry-run", action="store_true", help="say what would change, change nothing")
    args = ap.parse_args(argv)
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        print(f"error: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    records = sorted({r for p in args.paths for r in ([Path(p)] if Path(p).is_file() else Path(p).rglob("record.json"))},
                     key=lambda r: -len(r.parts))  # deepest first: renaming a sweep's runs before anything above them
    if not records:
        print(f"error: no run records (record.json) under {', '.join(args.paths)}", file=sys.stderr)
        return 1
    counts = {"migrated": 0, "skipped": 0, "current": 0}
    for record_path in records:
        line = migrate_run(record_path, args.dry_run)
        counts["current" if line is None else "skipped" if line.startswith("skipped") else "migrated"] += 1
        if line:
            print(line)
    print(f"{counts['migrated']} run(s) {'to migrate' if args.dry_run else 'migrated'}, {counts['skipped']} skipped, "
          f"{counts['current']} already in today's layout")
    return 1 if counts["skipped"] else 0


if __name__ == "__main__":
    sys.exit(main())
