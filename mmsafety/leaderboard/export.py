"""Write a leaderboard folder: leaderboard.csv / .json / .md / .html plus the plots as PNGs.

Text from data (model names, captions, paths, notes) is adversarial content: the HTML page
(mmsafety.leaderboard.page) escapes every cell and forbids every script but its own
(Content-Security-Policy with the script's hash), Markdown cells are escaped for tables, and all
files are written atomically so a reader never sees half of one, even while jobs are still writing
records. Every format marks each row's data source (synthetic, real, reported) and shows a
missing shard in its status (`partial (shards 3/4)`).
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
from dataclasses import asdict
from pathlib import Path

from mmsafety.leaderboard.blocks import Block, blocks
from mmsafety.leaderboard.collect import build_rows, reference_rows
from mmsafety.leaderboard.overview import about, headlines, what_ran
from mmsafety.leaderboard.page import to_html
from mmsafety.records import atomic_write_bytes, atomic_write_text


def write_leaderboard(paths: list[str | Path], out: str | Path, with_paper: bool = False,
                      compare_synthetic: bool = False) -> dict:
    """Read every record under `paths` and write the leaderboard files into `out`: one table per
    section of each registered workload that has rows; with `with_paper`, the papers' rows too, and
    synthetic-data rows in a table apart from them unless `compare_synthetic`. Returns a summary
    (`rows`: rows per table)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, problems = build_rows([Path(p) for p in paths])
    if with_paper:
        rows = rows + reference_rows(rows)
    every = blocks(rows, compare_synthetic=compare_synthetic)
    shown = [block for block in every if block.table]
    figures = {}
    for block in shown:
        suffix = block.key[len(block.section.key):]  # "_synthetic" for the block kept apart
        for figure in block.section.figures(block.rows, block.table):
            figure.name += suffix
            figure.caption += " (synthetic data)" if suffix else ""
            figures[figure.name] = figure
    for figure in figures.values():
        if figure.png:
            atomic_write_bytes(out / f"{figure.name}.png", figure.png)
    atomic_write_text(out / "leaderboard.csv", to_csv(shown))
    atomic_write_text(out / "leaderboard.json", json.dumps(
        # Every installed workload's tables, empty ones too: readers can count on the keys.
        {**{block.key: block.table for block in every},
         **{f"{block.key}_pivots": [asdict(p) for p in block.pivots] for block in shown if block.pivots},
         "problems": problems},
        indent=2, ensure_ascii=False, default=str))
    atomic_write_text(out / "leaderboard.md", to_markdown(shown, problems, list(figures.values())))
    atomic_write_text(out / "leaderboard.html", to_html(shown, figures, problems))
    return {"out": str(out), "rows": {block.key: len(block.table) for block in shown},
            "problems": problems, "figures": sorted(name for name, figure in figures.items() if figure.png)}


def to_csv(tables: list[Block]) -> str:
    """One CSV: a `table` column says which table a row belongs to; the columns are the union."""
    columns = ["table"] + list(dict.fromkeys(k for block in tables for r in block.table for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, lineterminator="\n")
    w.writeheader()
    for block in tables:
        for r in block.table:
            # A leading = + - @ makes spreadsheets evaluate a cell: quote it as text.
            w.writerow({"table": block.key, **{k: ("'" + v if isinstance(v, str) and v[:1] in "=+-@" else v)
                                               for k, v in r.items()}})
    return buf.getvalue()


def md_cell(value) -> str:
    """A Markdown table cell that renders as the text it holds: HTML-escaped, no pipes, no newlines,
    Markdown punctuation backslash-escaped."""
    if value is None:
        return ""
    text = html.escape(str(value)).replace("\r", " ").replace("\n", " ")
    return re.sub(r"([\\`*_{}\[\]()#+!|~])", r"\\\1", text)


def _md_table(rows: list[dict], columns: list[str], escape_header: bool = False) -> list[str]:
    """`escape_header`: the column names are data (a pivot's victims), not the section's own names."""
    header = [md_cell(c) for c in columns] if escape_header else columns
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(md_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return lines


def _md_hover_notes(block: Block) -> list[str]:
    """What the page shows on hovering a measured row's cells (its 95 % intervals), as a list under the
    table: Markdown has no hover, and a percent is read with its interval where there is one."""
    if block.section.hover is None:
        return []
    notes = []
    for row, cells in zip(block.rows, block.table):
        if row.reported:
            continue
        texts = [f"{column}: {text}" for column, text in block.section.hover(row).items() if text]
        if texts:
            notes.append(f"- {md_cell(cells.get('model'))} ({md_cell(row.status_label)}): " + "; ".join(md_cell(t) for t in texts))
    return notes + [""] if notes else []


def to_markdown(tables: list[Block], problems: list[str], figures: list | None = None) -> str:
    """The tables as Markdown; a plot with too few points to draw (Figure.text) as its sentence, and the
    drawn plots as links to their PNGs beside the file."""
    lines = ["# mmsafety leaderboard", "", "## What was run", ""] + [f"- {md_cell(line)}" for line in what_ran(tables)] + [""]
    if tops := headlines(tables):
        lines += ["## Headline numbers", ""] + [f"- {md_cell(line)}" for line in tops] + [""]
    for block in tables:
        lines += [f"## {block.title}", "", md_cell(about(block)), ""] + ([md_cell(block.caption), ""] if block.caption else [])
        group_by = block.section.group_by
        groups: dict[tuple, list[dict]] = {}
        for r in block.table:
            groups.setdefault(tuple(r.get(g) for g in group_by), []).append(r)
        for group, table in groups.items():
            if group_by:
                lines += ["### " + md_cell(" · ".join(f"{g} {'' if v is None else v}" for g, v in zip(group_by, group))), ""]
            lines += _md_table(table, block.columns) + [""]
        lines += _md_hover_notes(block)
        for pivot in block.pivots:
            lines += ["### " + md_cell(pivot.title), ""] + _md_table(pivot.rows, pivot.columns, escape_header=True) + [""]
    if figures:
        lines += ["## Plots", ""]
        for figure in figures:
            what = md_cell(figure.text) if not figure.png else f"[{md_cell(figure.name)}.png]({figure.name}.png)"
            lines += [f"- **{md_cell(figure.caption)}**: {what}"]
        lines += [""]
    if problems:
        lines += ["## Problems", ""] + [f"- {md_cell(p)}" for p in problems] + [""]
    return "\n".join(lines)
