"""The leaderboard's own types: what a workload hands the leaderboard to show its records (tables,
plots, derived views, sample browsers, rows a paper reports). They live in the leaderboard layer, above
the workload contract, so a contract never carries presentation types.

A workload's views register by the workload's key in `VIEWS` (a `views:<workload>` entry naming a
`WorkloadViews`), and a case's own tables by the case's name in `CASE_SECTIONS`. A workload without
views has its records checked and merged, but no table."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from mmsafety.registry import Registry

if TYPE_CHECKING:
    from mmsafety.leaderboard.collect import Row


@dataclass
class Figure:
    """One leaderboard plot: its file stem, caption and PNG bytes; or, where the data has too few
    points to draw (one budget: a single dot), `text`, a sentence that the page shows instead."""

    name: str
    caption: str
    png: bytes = b""
    text: str = ""


@dataclass
class Pivot:
    """A derived view of a section's table that Markdown, HTML and JSON show after it (e.g. a matrix
    whose rows and columns are two of the table's fields): a heading, column names, one dict per line."""

    title: str
    columns: list[str]
    rows: list[dict]


@dataclass
class Section:
    """One leaderboard table of a workload.

    `key` names the table in leaderboard.json and in the CSV's `table` column; `title` heads it in
    Markdown and HTML; `columns` are the cells Markdown and HTML show (CSV and JSON keep every cell).
    `cells(row)` turns a leaderboard row of this workload into its flat cells (plain values: each
    writer escapes for its format); `figures(rows, tables)` draws plots from them; `images(row)` names
    image files to show as thumbnails in HTML (alt text, path).

    Two optional fields let a section show part of its workload's rows, or cells that depend on other
    rows: `accepts(row)` says whether a row belongs in this table (default: every row of the workload);
    `table(rows)` builds the whole table from the accepted rows, for a column such as a baseline taken
    from another row: one dict per row, in the rows' order, as thumbnails line up with rows (default:
    `cells` of each row).
    """

    key: str
    title: str
    columns: list[str]
    cells: Callable[["Row"], dict]
    # Optional page layout (defaults keep a section as it was). `group_by`: cells whose values head groups
    # of rows (one sortable block each, e.g. case and target). `hover(row)`: text shown on hovering a cell,
    # by column (e.g. a 95% interval). `samples(row)`: the row's per-sample views for the page's sample
    # browser; None: the core shows the fields of the row's samples.jsonl as they are.
    group_by: tuple[str, ...] = ()
    hover: Callable[["Row"], dict[str, str]] | None = None
    samples: Callable[["Row"], list["SampleView"]] | None = None
    figures: Callable[[list["Row"], list[dict]], list[Figure]] = lambda rows, table: []
    images: Callable[["Row"], list[tuple[str, Path]]] | None = None
    accepts: Callable[["Row"], bool] = lambda row: True
    table: Callable[[list["Row"]], list[dict]] | None = None
    # Derived views of the written table (its cells, as every format has them), shown after it.
    pivots: Callable[[list[dict]], list[Pivot]] | None = None
    # Read at a glance: `about`, one sentence under the title saying what the numbers mean and what a
    # higher one means; `headline`, the column whose highest measured value the page's top shows
    # (with its interval when the table has `<headline>_ci95`).
    about: str = ""
    headline: str = ""


@dataclass
class SampleView:
    """One sample in the page's sample browser: its key, a verdict, images (alt text, path) and
    exchanges (prompt or caption, the model's answer, that answer's verdict). Plain text: the page escapes it."""

    key: str
    verdict: str = ""
    images: list[tuple[str, Path]] = field(default_factory=list)
    exchanges: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass
class ReportedRow:
    """A row a paper reports, shown beside measured rows (marked reported)."""

    model: str
    source: str
    spec: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


# Tables of their own for the attack records of one case (spec.case is the case's registered name),
# e.g. rows that compare methods against a baseline run: case name -> `sections() -> list[Section]`,
# from `case_views:<case>` entries. A case that has any leaves its records out of the generic attack
# table. Kept apart from the case itself so that showing records never imports attack code.
CASE_SECTIONS: Registry[Callable[[], list[Section]]] = Registry("case views", kind="case_views")


@dataclass(frozen=True)
class WorkloadViews:
    """What the leaderboard shows of one workload's records: `sections()`, its tables (in order), and
    `reported_rows()`, rows a paper reports (`mmsafety-leaderboard --with-paper`)."""

    sections: Callable[[], list[Section]]
    reported_rows: Callable[[], list[ReportedRow]] = lambda: []


# Workload key (a record's `kind`) -> its views, from `views:<workload>` entries.
VIEWS: Registry[WorkloadViews] = Registry("workload views", kind="views")
