"""The workload contract: what a plug-in package supplies so the core can run, check and re-score
it without naming it (its leaderboard tables register apart, in the leaderboard layer).

A workload is registered under a key (`WORKLOADS`), which is also the `kind` its records carry.
The core finds plug-in packages through the one entry-point group `mmsafety.plugins`
(mmsafety.registry): an entry `workload:<key>` names the module that registers the workload, e.g. in
the package's pyproject.toml:

    [project.entry-points."mmsafety.plugins"]
    "workload:my_bench" = "my_bench.workload"

A record is data and may be someone else's: it selects a workload only by its registered key, so
reading a record never makes the core import anything that is not installed as a plug-in.
"""

from __future__ import annotations

import abc
import json
from typing import TYPE_CHECKING, ClassVar

from mmsafety.errors import ConfigError
from mmsafety.registry import PLUGIN_GROUP, Registry  # noqa: F401  (PLUGIN_GROUP: a stable name)

if TYPE_CHECKING:
    from mmsafety.models.base import ModelAdapter
    from mmsafety.records import RunRecord

class Workload(abc.ABC):
    """A workload: its config, what it needs from a model, how to run it and re-score it. How the
    leaderboard shows it is the leaderboard's business (mmsafety.leaderboard.views.VIEWS, by the same key)."""

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


WORKLOADS: Registry[Workload] = Registry("workload", kind="workload")


def workload_for_config(config_name: str) -> tuple[str, Workload]:
    """The registered workload whose console script runs `config_name`."""
    for name, workload in WORKLOADS.items():
        if workload.config_name == config_name:
            return name, workload
    raise ConfigError(f"no registered workload runs config {config_name!r}; "
                      f"installed: {', '.join(WORKLOADS.names()) or 'none'} (reinstall the package: pip install -e .)")
