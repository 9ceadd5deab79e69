"""Leaderboard rows as flat tables, one per section of each registered workload (Workload.sections).

Cells are plain values; every writer (CSV, JSON, Markdown, HTML) escapes for its own format.
"""

from __future__ import annotations

from mmsafety.leaderboard.collect import Row
from mmsafety.workload import WORKLOADS, Section


def num(value, digits: int = 2):
    """A metric rounded for a table cell; None stays None (an empty cell)."""
    return None if value is None else round(float(value), digits)


def section_tables(rows: list[Row]) -> list[tuple[Section, list[Row], list[dict]]]:
    """(section, its rows, its table) for every section of every registered workload, in registry order."""
    out = []
    for name, workload in WORKLOADS.items():
        mine = [r for r in rows if r.workload == name]
        for section in workload.sections():
            out.append((section, mine, [section.cells(r) for r in mine]))
    return out
