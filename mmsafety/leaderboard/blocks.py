"""The tables every format writes, from each section's table: rows marked with their data source and
status label, and, beside the papers' rows, synthetic-data rows kept apart unless asked.

A synthetic-data row (a model organism on its own generated memes) measures the harness, not the
model: set beside a paper's row (GPT-4V's 72.17) it reads as a comparison it is not. So when a
section holds both reported and synthetic rows, the synthetic ones go into a table of their own
(`<key>_synthetic`), unless `compare_synthetic` puts them together.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmsafety.leaderboard.collect import Row
from mmsafety.leaderboard.tables import section_tables
from mmsafety.leaderboard.views import Section

SYNTHETIC_APART = ("synthetic data: checks the harness; not comparable with the rows the papers report "
                   "(mmsafety-leaderboard --compare-synthetic puts them in one table)")


@dataclass
class Block:
    """One table as written: the section it comes from, its key in leaderboard.json and the CSV's
    `table` column, its heading, an optional line under the heading, and its rows with their cells."""

    section: Section
    key: str
    title: str
    rows: list[Row]
    table: list[dict]
    caption: str = ""

    @property
    def pivots(self) -> list:
        """The section's derived views of this table (Section.pivots), e.g. the transfer matrix."""
        return self.section.pivots(self.table) if self.section.pivots and self.table else []

    @property
    def columns(self) -> list[str]:
        """The section's shown columns with the core's `data` column after the first (the model)."""
        columns = list(self.section.columns)
        return columns if "data" in columns else columns[:1] + ["data"] + columns[1:]


def marked(row: Row, cells: dict) -> dict:
    """The section's cells plus what the core knows of every row: where its data came from, its status
    with missing shards, and a failed run's error."""
    out = dict(cells)
    out["data"] = row.data or "unknown"
    if "status" in out:
        out["status"] = row.status_label
    out.setdefault("shards", row.shards)
    if row.error:
        out["error"] = row.error
    return out


def blocks(rows: list[Row], compare_synthetic: bool = False) -> list[Block]:
    """Every section's table (empty ones too: leaderboard.json keeps each key), split as above."""
    out = []
    for section, mine, table in section_tables(rows):
        table = [marked(row, cells) for row, cells in zip(mine, table)]
        if section.group_by:  # a group's rows together, groups in a stable order
            order = sorted(range(len(mine)), key=lambda i: tuple(str(table[i].get(g) or "") for g in section.group_by))
            mine, table = [mine[i] for i in order], [table[i] for i in order]
        synthetic = [i for i, row in enumerate(mine) if row.data == "synthetic"]
        if compare_synthetic or not synthetic or not any(row.reported for row in mine):
            out.append(Block(section, section.key, section.title, mine, table))
            continue
        rest = [i for i in range(len(mine)) if i not in synthetic]
        out.append(Block(section, section.key, section.title, [mine[i] for i in rest], [table[i] for i in rest]))
        out.append(Block(section, f"{section.key}_synthetic", f"{section.title}: synthetic data",
                         [mine[i] for i in synthetic], [table[i] for i in synthetic], SYNTHETIC_APART))
    return out
