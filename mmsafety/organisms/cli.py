"""`mmsafety-build-organism NAME [--seed N] [--force] [--ship]`: rebuild a model from its recipe into the cache
and compare it with the copy shipped inside the package (bytes, then held-out behaviour when they differ).

The shipped organisms load without training; this command is for checking them, for another seed, or for
a recipe you changed. Use the cache's build in jobs with MMSAFETY_ORGANISMS=build.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mmsafety.errors import UserError
from mmsafety.organisms import shipped
from mmsafety.organisms.builders import BUILDERS, build


def compare(name: str, seed: int, rebuilt: Path, measure: bool = True) -> dict:
    """The rebuilt folder against the shipped copy: `identical` (every file's sha256), the files that
    differ, the library versions that differ from those that built the shipped copy, and, when the bytes
    differ and the builder measures behaviour, the behaviour of both measured here (`measure=False`: skip)."""
    builder = BUILDERS.get(name)
    version = builder.current_version()
    copy = shipped.shipped_copy(name, version, seed)
    if copy is None:
        return {"shipped": False}
    entry = shipped.manifest()[shipped.folder_name(name, version, seed)]
    now = {rel: shipped.file_sha256(p) for rel, p in shipped.checkpoint_files(rebuilt).items()}
    was = {rel: f["sha256"] for rel, f in entry["files"].items()}
    differ = sorted(rel for rel in set(now) | set(was) if now.get(rel) != was.get(rel))
    report = {"shipped": True, "identical": not differ, "differ": differ, "version_drift": shipped.version_drift(entry)}
    if differ and measure and builder.behaviour is not None:
        report["behaviour"] = {"shipped": builder.behaviour(copy), "rebuilt": builder.behaviour(rebuilt),
                               "shipped_as_recorded": entry.get("behaviour")}
    return report


def describe(name: str, report: dict) -> list[str]:
    if not report["shipped"]:
        return [f"{name}: no shipped copy to compare with"]
    if report["identical"]:
        return [f"{name}: identical to the shipped copy (every file's sha256)"]
    lines = [f"{name}: differs from the shipped copy in {', '.join(report['differ'])}"]
    drift = report["version_drift"]
    lines.append("  library versions (shipped -> here): " + (
        ", ".join(f"{lib} {a} -> {b}" for lib, (a, b) in drift.items()) if drift else "the same"))
    for metric, value in (report.get("behaviour") or {}).get("rebuilt", {}).items():
        before = report["behaviour"]["shipped"].get(metric)
        lines.append(f"  {metric}: shipped {before:.3f}, rebuilt {value:.3f} ({value - before:+.3f})")
    return lines


def build_from_recipes(name: str, seed: int, force: bool):
    """Build `name` with what it builds from (the victim from the organism) also taken from the recipes, not
    the shipped copies; the mode is restored afterwards, so a caller in the same process (a notebook, a test)
    goes on loading the shipped copies."""
    before = os.environ.get(shipped.MODE_ENV)
    os.environ[shipped.MODE_ENV] = "build"
    try:
        return build(name, seed, force=force)
    finally:
        if before is None:
            os.environ.pop(shipped.MODE_ENV, None)
        else:
            os.environ[shipped.MODE_ENV] = before


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mmsafety-build-organism", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example:\n  mmsafety-build-organism harmbench_judge\n"
                                        "  MMSAFETY_ORGANISMS=build mmsafety-eval   # then run on the cache's build")
    ap.add_argument("name", nargs="?", help="a builder name (--list shows them)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="build again even if the cache has this build")
    ap.add_argument("--no-behaviour", action="store_true", help="compare bytes only (no held-out evaluation)")
    ap.add_argument("--ship", action="store_true",
                    help="maintainers: copy the build into the package (mmsafety/organisms/shipped) and its "
                         "sha256, library versions and behaviour into the manifest")
    ap.add_argument("--list", action="store_true", help="the builders, and which of them ship")
    args = ap.parse_args(argv)
    try:
        if args.list or not args.name:
            ships = shipped.manifest()
            for name in sorted(BUILDERS.names()):
                key = shipped.folder_name(name, BUILDERS.get(name).current_version(), 0)
                print(f"{name:22} {'shipped' if key in ships else 'built on first use':18} {BUILDERS.get(name).description}")
            return 0
        builder = BUILDERS.get(args.name)  # an unknown name: one line with the registered ones
        path = build_from_recipes(args.name, args.seed, args.force)
        print(f"{args.name}: built from the recipe in {path}")
        report = compare(args.name, args.seed, path, measure=not args.no_behaviour)
        print("\n".join(describe(args.name, report)))
        if args.ship:
            behaviour = builder.behaviour(path) if builder.behaviour is not None else None
            target = shipped.ship(args.name, builder.current_version(), args.seed, path, behaviour)
            print(f"{args.name}: shipped into {target} (manifest: {target.parent / shipped.MANIFEST_NAME})")
        return 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
