"""`mmsafety-leaderboard PATH... --out DIR [--with-paper [--compare-synthetic]]`: tables, plots and one HTML page from records."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmsafety.leaderboard.export import write_leaderboard


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mmsafety-leaderboard", description=__doc__)
    ap.add_argument("paths", nargs="+", help="run folders, sweep folders or record.json files (searched recursively)")
    ap.add_argument("--out", required=True, help="folder for leaderboard.{csv,json,md,html} and the plots")
    ap.add_argument("--with-paper", action="store_true", help="add the rows the papers report (each workload's reported rows), marked reported")
    ap.add_argument("--compare-synthetic", action="store_true",
                    help="put synthetic-data rows in the same table as the papers' rows (by default they get a table "
                         "of their own: a model organism on generated data is not comparable with a paper's model)")
    args = ap.parse_args(argv)
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        print(f"error: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    summary = write_leaderboard(args.paths, args.out, with_paper=args.with_paper, compare_synthetic=args.compare_synthetic)
    for problem in summary["problems"]:
        print(f"warning: {problem}", file=sys.stderr)
    if not any(summary["rows"].values()):
        print(f"error: no run records (record.json) under {', '.join(args.paths)}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{n} {table} row(s)" for table, n in summary["rows"].items())
    print(f"{counts} -> {summary['out']}/leaderboard.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
