"""Leaderboard rows as flat tables, one per section of each workload's registered views (views.VIEWS).

Cells are plain values; every writer (CSV, JSON, Markdown, HTML) escapes for its own format.
"""

from __future__ import annotations

from mmsafety.leaderboard.collect import Row
from mmsafety.leaderboard.views import VIEWS, Section


def num(value, digits: int = 2):
    """A metric rounded for a table cell; None stays None (an empty cell)."""
    return None if value is None else round(float(value), digits)


def section_tables(rows: list[Row]) -> list[tuple[Section, list[Row], list[dict]]]:
    """(section, its rows, its table) for every section of every workload's views, in registry order.
    A section's rows are the workload's rows it accepts; its table is `section.table(rows)` when the
    section builds the whole table (a baseline column), else `section.cells` of each row."""
    out = []
    for name, views in VIEWS.items():
        for section in views.sections():
            mine = [r for r in rows if r.workload == name and section.accepts(r)]
            out.append((section, mine, section.table(mine) if section.table else [section.cells(r) for r in mine]))
    return out
