"""Write a leaderboard folder: leaderboard.csv / .json / .md / .html plus the plots as PNGs.

Text from data (model names, captions, paths, notes) is adversarial content: the HTML page
escapes every cell and forbids every script but its own (Content-Security-Policy with the
script's hash), Markdown cells are escaped for tables, and all files are written atomically
so a reader never sees half of one, even while jobs are still writing records.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import re
from pathlib import Path

from mmsafety.leaderboard.collect import Row, build_rows, reference_rows
from mmsafety.leaderboard.tables import section_tables
from mmsafety.records import atomic_write_bytes, atomic_write_text
from mmsafety.workload import Section

THUMB = 96
# Runs on load: counts tables and decoded images into data attributes, so a headless
# browser (tests/test_leaderboard_browser.py) can tell that the page rendered.
RENDER_CHECK = ("window.addEventListener('load',function(){var b=document.body;"
                "b.dataset.tables=document.querySelectorAll('table').length;"
                "b.dataset.imagesDecoded=Array.prototype.filter.call(document.images,"
                "function(i){return i.complete&&i.naturalWidth>0;}).length;"
                "b.dataset.images=document.images.length;});")


def write_leaderboard(paths: list[str | Path], out: str | Path, with_paper: bool = False) -> dict:
    """Read every record under `paths` and write the leaderboard files into `out`: one table per
    section of each registered workload that has rows. Returns a summary (`rows`: rows per table)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, problems = build_rows([Path(p) for p in paths])
    if with_paper:
        rows = rows + reference_rows(rows)
    every = section_tables(rows)
    tables = [(section, mine, table) for section, mine, table in every if table]
    figures = {}
    for section, mine, table in tables:
        for figure in section.figures(mine, table):
            figures[figure.name] = figure
    for figure in figures.values():
        atomic_write_bytes(out / f"{figure.name}.png", figure.png)
    atomic_write_text(out / "leaderboard.csv", to_csv(tables))
    atomic_write_text(out / "leaderboard.json", json.dumps(
        # Every installed workload's tables, empty ones too: readers can count on the keys.
        {**{section.key: table for section, _, table in every}, "problems": problems},
        indent=2, ensure_ascii=False, default=str))
    atomic_write_text(out / "leaderboard.md", to_markdown(tables, problems))
    atomic_write_text(out / "leaderboard.html", to_html(tables, figures, problems))
    return {"out": str(out), "rows": {section.key: len(table) for section, _, table in tables},
            "problems": problems, "figures": sorted(figures)}


def to_csv(tables: list[tuple[Section, list[Row], list[dict]]]) -> str:
    """One CSV: a `table` column says which table a row belongs to; the columns are the union."""
    columns = ["table"] + list(dict.fromkeys(k for _, _, table in tables for r in table for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, lineterminator="\n")
    w.writeheader()
    for section, _, table in tables:
        for r in table:
            # A leading = + - @ makes spreadsheets evaluate a cell: quote it as text.
            w.writerow({"table": section.key, **{k: ("'" + v if isinstance(v, str) and v[:1] in "=+-@" else v)
                                                 for k, v in r.items()}})
    return buf.getvalue()


def md_cell(value) -> str:
    """A Markdown table cell that renders as the text it holds: HTML-escaped, no pipes, no newlines,
    Markdown punctuation backslash-escaped."""
    if value is None:
        return ""
    text = html.escape(str(value)).replace("\r", " ").replace("\n", " ")
    return re.sub(r"([\\`*_{}\[\]()#+!|~])", r"\\\1", text)


def _md_table(rows: list[dict], columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(md_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return lines


def to_markdown(tables: list[tuple[Section, list[Row], list[dict]]], problems: list[str]) -> str:
    lines = ["# mmsafety leaderboard", ""]
    for section, _, table in tables:
        lines += [f"## {section.title}", ""] + _md_table(table, section.columns) + [""]
    if problems:
        lines += ["## Problems", ""] + [f"- {md_cell(p)}" for p in problems] + [""]
    return "\n".join(lines)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _thumbnail(path: Path) -> str | None:
    """A small PNG of a run's image, or None when the file is missing or not a readable image
    (the robust loader: a damaged file in a runs folder must not stop the export)."""
    from mmsafety.images import ImageRejected, load_image

    try:
        im = load_image(path).image
    except ImageRejected:
        return None
    im.thumbnail((THUMB, THUMB))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return _data_uri(buf.getvalue())


def _html_table(rows: list[dict], columns: list[str], thumbs: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns) + ("<th>images</th>" if thumbs else "")
    body = []
    for i, r in enumerate(rows):
        status = html.escape(str(r.get("status", "")))
        cells = "".join(f"<td>{html.escape('' if r.get(c) is None else str(r.get(c)))}</td>" for c in columns)
        if thumbs:
            cells += f"<td>{thumbs[i]}</td>"
        body.append(f'<tr class="{status}">{cells}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _thumbs(section: Section, rows: list[Row]) -> list[str] | None:
    """One cell of thumbnails per row, of the images the section names; None when it names none."""
    if section.images is None:
        return None
    out = []
    for row in rows:
        tags = [f'<img alt="{html.escape(alt)}" src="{uri}">' for alt, path in section.images(row)
                if (uri := _thumbnail(path))]
        out.append("".join(tags))
    return out


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:12px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
tr.reported td{color:#666;font-style:italic}tr.partial td{background:#fff8e0}tr.failed td{background:#fde8e8}
img{image-rendering:pixelated;margin:0 2px;vertical-align:middle}
figure{display:inline-block;margin:0 1em 1em 0}
"""


def to_html(tables: list[tuple[Section, list[Row], list[dict]]], figures: dict, problems: list[str]) -> str:
    script_hash = base64.b64encode(hashlib.sha256(RENDER_CHECK.encode()).digest()).decode()
    csp = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        "<title>mmsafety leaderboard</title>", f"<style>{STYLE}</style>", "</head><body>",
        "<h1>mmsafety leaderboard</h1>",
    ]
    for section, rows, table in tables:
        parts += [f"<h2>{html.escape(section.title)}</h2>", _html_table(table, section.columns, _thumbs(section, rows))]
    for figure in figures.values():
        parts.append(f'<figure><img alt="{html.escape(figure.name)}" src="{_data_uri(figure.png)}">'
                     f'<figcaption>{html.escape(figure.caption)}</figcaption></figure>')
    if problems:
        parts += ["<h2>Problems</h2><ul>"] + [f"<li>{html.escape(p)}</li>" for p in problems] + ["</ul>"]
    parts += [f"<script>{RENDER_CHECK}</script>", "</body></html>"]
    return "\n".join(parts)
