"""The workload contract: what a plug-in package supplies so the core can run, check, re-score
and tabulate it without naming it.

A workload is registered under a key (`WORKLOADS`), which is also the `kind` its records carry.
The core finds plug-in packages through the Python entry-point group `mmsafety.workloads`: each
entry names a module whose import registers the package's workload (and its attack cases and
objectives), e.g. in the package's pyproject.toml:

    [project.entry-points."mmsafety.workloads"]
    my_bench = "my_bench.workload"

A record is data and may be someone else's: it selects a workload only by its registered key, so
reading a record never makes the core import anything that is not installed as a plug-in.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar

from mmsafety.registry import Registry

if TYPE_CHECKING:
    from mmsafety.leaderboard.collect import Row
    from mmsafety.models.base import ModelAdapter
    from mmsafety.records import RunRecord

PLUGIN_GROUP = "mmsafety.workloads"


@dataclass
class Figure:
    """One leaderboard plot: its file stem, caption and PNG bytes."""

    name: str
    caption: str
    png: bytes


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


class Workload(abc.ABC):
    """A workload: its config, what it needs from a model, how to run it, re-score it and tabulate it."""

    # The Hydra primary config its console script runs (conf/<config_name>.yaml).
    config_name: ClassVar[str]
    # Fields that identify a sample in samples.jsonl: resume skips them, merged shards keep each once.
    sample_key: ClassVar[tuple[str, ...]]
    # Shapes (mmsafety.record_schema) of the record fields and samples this workload's readers use:
    # a record or samples.jsonl may be someone else's data, so the types are checked before use.
    spec_shape: ClassVar[dict] = {}
    metrics_shape: ClassVar[dict] = {}
    sample_shapes: ClassVar[dict[str, dict]] = {}  # by sample status: ok, skipped, error

    def register_schemas(self, store) -> None:
        """Put the workload's structured config schemas into Hydra's ConfigStore `store`."""

    def validate(self, cfg):
        """Every check that needs no model (ranges, names); raise ConfigError in one line. May return
        what it built from the config (e.g. an attack case): the job hands it to `run` as `prepared`,
        so nothing is built twice."""
        return None

    def needs(self, cfg) -> dict[str, frozenset[str]]:
        """Capabilities the configured job needs from its model, by who needs them
        ("the GOAT eval with scoring=generate": {generate}); checked against the adapter class before loading."""
        return {}

    @abc.abstractmethod
    def run(self, cfg, model: "ModelAdapter", record: "RunRecord", prepared=None, log=print) -> dict:
        """Run the job on `model`, streaming samples into `record`; return the metrics."""

    @abc.abstractmethod
    def rescore(self, samples: list[dict], record: dict) -> dict:
        """Metrics of a (merged) record from its samples alone: what the leaderboard calls."""

    def summary(self, metrics: dict) -> str:
        """What the console script prints after a job."""
        import json

        return json.dumps(metrics, indent=2, default=str)

    def sample_value_problems(self, sample: dict) -> list[str]:
        """Checks of a well-typed sample's values that a shape cannot express (one line each)."""
        return []

    def data_source(self, spec: dict) -> str:
        """Where a record's samples came from, from its spec: "synthetic" (generated data, a harness
        check), "real" (a dataset on disk) or "" when the spec does not say. The leaderboard marks
        every row with it and keeps synthetic rows apart from the papers' rows."""
        synthetic = spec.get("synthetic")
        return "synthetic" if synthetic is True else "real" if synthetic is False else ""

    def sections(self) -> list[Section]:
        """Its leaderboard tables."""
        return []

    def reported_rows(self) -> list[ReportedRow]:
        """Rows a paper reports (`mmsafety-leaderboard --with-paper`)."""
        return []


WORKLOADS: Registry[Workload] = Registry("workload", entry_points=PLUGIN_GROUP)


def workload_for_config(config_name: str) -> tuple[str, Workload]:
    """The registered workload whose console script runs `config_name`."""
    from mmsafety.errors import ConfigError

    for name, workload in WORKLOADS.items():
        if workload.config_name == config_name:
            return name, workload
    raise ConfigError(f"no registered workload runs config {config_name!r}; "
                      f"installed: {', '.join(WORKLOADS.names()) or 'none'} (reinstall the package: pip install -e .)")
