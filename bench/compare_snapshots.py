"""Compare two behaviour snapshots written by bench/behaviour_snapshot.sh (before and after a change).

For each job folder: samples.jsonl line by line with timing fields removed, and the sha256 of
every PNG under images/. Prints one line per job and exits 1 on any difference.

    bench/behaviour_snapshot.sh /tmp/before   # on the old code
    bench/behaviour_snapshot.sh /tmp/after    # on the new code
    python bench/compare_snapshots.py /tmp/before /tmp/after
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

TIMING_FIELDS = {"attack_seconds"}  # wall-clock time: differs run to run


def samples(folder: Path) -> list[dict]:
    lines = (folder / "samples.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_FIELDS} for line in lines]


def png_hashes(folder: Path) -> list[str]:
    return sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in (folder / "images").glob("*.png"))


def compare(before: Path, after: Path) -> bool:
    same = True
    for job in sorted(p.name for p in before.iterdir() if (p / "samples.jsonl").exists()):
        a, b = samples(before / job), samples(after / job)
        pa, pb = png_hashes(before / job), png_hashes(after / job)
        ok = a == b and pa == pb and len(a) > 0
        same &= ok
        print(f"{job}: {len(a)} samples, {len(pa)} PNGs: {'identical' if ok else 'DIFFERENT'}")
        if a != b:
            for i, (x, y) in enumerate(zip(a, b)):
                if x != y:
                    print(f"  first differing sample {i}: keys {sorted(k for k in x if x.get(k) != y.get(k))}")
                    break
    return same


if __name__ == "__main__":
    sys.exit(0 if compare(Path(sys.argv[1]), Path(sys.argv[2])) else 1)
