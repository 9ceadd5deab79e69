"""What a tracker logs of one job, read from its run folder: the record is the source, so a tracker shows
exactly what `record.json` and `samples.jsonl` say (no second bookkeeping inside the job).

- `config`: the record's resolved job config;
- `metrics`: the record's metrics flattened to `a/b/c` keys with numeric leaves (per task for GOAT-Bench,
  per success measure, per group and stealth for an attack), plus `per_behavior/<id>/<measure>` from the
  samples of a HarmBench case, and the sample counts;
- `samples`: one row per sample, scalar fields only (nested ones as `a/b` columns);
- `files`: the images the samples name (`*_png`) and the loss curve, inside the run folder only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from mmsafety.paths import inside
from mmsafety.record_models import answered
from mmsafety.records import read_samples
from mmsafety.safe_json import JSONRejected, loads_object


def flatten(value, prefix: str = "") -> dict[str, object]:
    """Nested dicts to `a/b/c` keys; lists stay values."""
    if not isinstance(value, dict):
        return {prefix: value} if prefix else {}
    out: dict[str, object] = {}
    for key, inner in value.items():
        out.update(flatten(inner, f"{prefix}/{key}" if prefix else str(key)))
    return out


def numeric(values: dict[str, object]) -> dict[str, float]:
    """The finite numbers among `values` (bools are not numbers in a record; inf and NaN are not
    loggable by every tracker, and mean "unchanged image" or "no value": they stay in the record)."""
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def per_behavior(samples: list[dict]) -> dict[str, float]:
    """A HarmBench case's per-behaviour results: each attacked image is one behaviour."""
    out: dict[str, float] = {}
    for s in samples:
        behavior = (s.get("base") or {}).get("behavior_id") if isinstance(s.get("base"), dict) else None
        if answered(s) and isinstance(behavior, str) and isinstance(s.get("adversarial"), dict):
            out.update({f"per_behavior/{behavior}/{k}": v for k, v in numeric(flatten(s["adversarial"])).items()})
    return out


def scalar_row(sample: dict) -> dict[str, object]:
    return {k: v for k, v in flatten(sample).items() if v is None or isinstance(v, (str, int, float, bool))}


@dataclass
class JobRun:
    folder: Path
    record: dict
    samples: list[dict] = field(default_factory=list)

    @classmethod
    def read(cls, folder: str | Path) -> "JobRun | None":
        """The job in `folder`, or None when it wrote no readable record (it failed before opening one)."""
        folder = Path(folder)
        try:
            record = loads_object((folder / "record.json").read_bytes())
        except (OSError, JSONRejected):
            return None
        return cls(folder, record, read_samples(folder / "samples.jsonl"))

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def config(self) -> dict:
        return self.record.get("config") or {}

    @property
    def metrics(self) -> dict[str, float]:
        out = numeric(flatten(self.record.get("metrics") or {}))
        out.update(per_behavior(self.samples))
        out.update({f"counts/{k}": v for k, v in numeric(self.record.get("counts") or {}).items()})
        return out

    def sample_rows(self) -> tuple[list[str], list[list[object]]]:
        """(columns, rows) of the samples table: every scalar field any sample has, in first-seen order."""
        rows = [scalar_row(s) for s in self.samples]
        columns = list(dict.fromkeys(k for r in rows for k in r))
        # One type per column (W&B's tables require it): mixed columns become text.
        mixed = {c for c in columns if len({type(r[c]) for r in rows if r.get(c) is not None}) > 1}
        return columns, [[str(r[c]) if c in mixed and r.get(c) is not None else r.get(c) for c in columns]
                         for r in rows]

    def files(self) -> dict[str, Path]:
        """Artefact name (relative to the run folder) -> path: the samples' PNGs and the loss curve."""
        names = [v for s in self.samples for k, v in flatten(s).items() if k.endswith("_png")]
        curve = ((self.record.get("artifacts") or {}).get("loss_curve") or {})
        names += [v for v in curve.values() if isinstance(v, str)] if isinstance(curve, dict) else []
        out = {}
        for name in names:
            path = inside(self.folder, name)  # a file name in a record is data: never outside the run folder
            if path is not None and path.is_file():
                out[path.relative_to(self.folder.resolve()).as_posix()] = path
        return out
