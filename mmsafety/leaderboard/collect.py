"""Read run records into leaderboard rows.

Records are found recursively (sweep folders included). Records of the same job split into
shards, or run twice, are one row: their samples are merged (each sample key once) and the
row's metrics are computed from those samples by the workload's own `rescore`. A record names
its workload by its registered key (`kind`); the registry (mmsafety.workload.WORKLOADS) is the
trusted list, because a record is data and may come from someone else: it can select an
installed workload, never make the core import anything else.

Partial and failed records are rows too, with their status; unreadable files are listed as
problems, never silently dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mmsafety.record_kinds import schema_of
from mmsafety.record_schema import record_problems, split_samples
from mmsafety.records import read_samples
from mmsafety.workload import WORKLOADS
from mmsafety.safe_json import loads_object
# Fields of a record's spec that differ between shards or runs of one job but not its meaning.
NOT_IDENTITY = ("shard", "notes")


@dataclass
class Row:
    workload: str               # the registered workload's key (the record's kind)
    model: str
    spec: dict
    records: list[Path] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    samples: int = 0
    seconds: float = 0.0
    shards: str = ""            # "2/4" when sharded and incomplete
    note: str = ""
    artifacts: list[dict] = field(default_factory=list)  # per record: folder, the record, its first sample
    reported: bool = False      # a row copied from a paper, not run here
    source: str = ""
    data: str = ""              # where the samples came from: synthetic, real, reported ("" unknown)
    error: str = ""             # a failed record's error

    @property
    def status(self) -> str:
        if self.reported:
            return "reported"
        if "failed" in self.statuses:
            return "failed"
        if any(s != "completed" for s in self.statuses) or self.shards:
            return "partial"
        return "completed"

    @property
    def status_label(self) -> str:
        """The status as every format shows it: a sharded row missing shards says how many it has."""
        return f"{self.status} (shards {self.shards})" if self.shards and not self.reported else self.status


def find_records(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_file() and path.name == "record.json":
            found.append(path)
        elif path.is_dir():
            found += sorted(path.rglob("record.json"))
    return sorted(set(found))


def _identity(record: dict) -> str:
    spec = {k: v for k, v in record.get("spec", {}).items() if k not in NOT_IDENTITY}
    model = record.get("model", {})
    # A record that failed before its spec was written is told apart by its config alone.
    config = None if spec else record.get("config_sha256")
    return json.dumps([record.get("kind"), _model_name(record), model.get("weights_sha256"), spec, config],
                      sort_keys=True, default=str)


def _model_name(record: dict) -> str:
    """The model a record ran, or, when it failed before loading one, the model its config named."""
    name = record.get("model", {}).get("name")
    if isinstance(name, str) and name:
        return name
    configured = record.get("config", {}).get("model")
    if isinstance(configured, dict):
        for key in ("name", "name_or_path", "builder"):
            if isinstance(configured.get(key), str) and configured[key]:
                return configured[key]
    return "?"


def _usable_samples(path: Path, kind: str, problems: list[str] | None = None) -> list[dict]:
    """The samples next to a record whose fields the workload's scoring can use. The rest (someone
    else's data gone wrong) are left out, not scored, and counted in `problems`."""
    unreadable: list[str] = []
    samples, wrong = split_samples(read_samples(path.parent / "samples.jsonl", unreadable), schema_of(kind))
    if problems is not None and (unreadable or wrong):
        problems.append(f"{path.parent / 'samples.jsonl'}: {len(unreadable) + len(wrong)} line(s) left out "
                        f"({(unreadable + wrong)[0]})")
    return samples


def _merge_samples(paths: list[Path], key_fields: list[str], kind: str, problems: list[str]) -> list[dict]:
    """Every sample once (the first seen wins), in record order."""
    seen, merged = set(), []
    for path in paths:
        for s in _usable_samples(path, kind, problems):
            key = tuple(str(s.get(k)) for k in key_fields) if key_fields else None
            if key is None or key not in seen:
                seen.add(key)
                merged.append(s)
    return merged


def _artifacts(path: Path, record: dict) -> dict:
    """What a workload's leaderboard section may show of a record beyond its metrics (thumbnails,
    curves, the sample browser): its folder, the record, its usable samples and the first of them."""
    folder = path.parent
    samples = _usable_samples(path, record["kind"])
    return {"folder": folder, "record": record, "first_sample": next(iter(samples), {}), "samples": samples}


def build_rows(paths: list[Path]) -> tuple[list[Row], list[str]]:
    """Leaderboard rows from every record under `paths`, and one line per file that could not be read."""
    problems: list[str] = []
    groups: dict[str, list[tuple[Path, dict]]] = {}
    for path in find_records(paths):
        try:
            record = loads_object(path.read_bytes())
        except (OSError, ValueError) as e:
            problems.append(f"{path}: skipped, unreadable ({e})")
            continue
        if wrong := record_problems(record, schema_of):  # a record is data, perhaps someone else's: types first
            problems.append(f"{path}: skipped, not a valid run record ({'; '.join(wrong[:3])})")
            continue
        if record["kind"] not in WORKLOADS:
            problems.append(f"{path}: skipped, workload {str(record['kind'])[:80]!r} is not installed "
                            f"(installed: {', '.join(WORKLOADS.names())})")
            continue
        groups.setdefault(_identity(record), []).append((path, record))
    rows = [_row(members, problems) for members in groups.values()]
    rows.sort(key=lambda r: (r.workload, r.model, json.dumps(r.spec, sort_keys=True, default=str)))
    return rows, problems


def _row(members: list[tuple[Path, dict]], problems: list[str]) -> Row:
    first = members[0][1]
    spec = first.get("spec", {})
    row = Row(first["kind"], _model_name(first), spec,
              records=[p for p, _ in members], statuses=[r.get("status", "?") for _, r in members])
    row.data = WORKLOADS.get(row.workload).data_source(spec)
    errors = [r["error"] for _, r in members if r.get("status") == "failed" and r.get("error")]
    row.error = errors[0] if errors else ""
    if row.error:
        row.note = row.error
    row.seconds = max(r.get("timing", {}).get("seconds", 0) for _, r in members)
    row.artifacts = [_artifacts(p, r) for p, r in members]
    count = spec.get("shard", {}).get("count", 1)
    if count > 1:
        present = {r.get("spec", {}).get("shard", {}).get("index") for _, r in members}
        if len(present) < count:
            row.shards = f"{len(present)}/{count}"
    single = len(members) == 1 and first.get("metrics")
    if single:
        row.metrics = first["metrics"]
        row.samples = sum(first.get("counts", {}).values())
        return row
    workload = WORKLOADS.get(row.workload)
    samples = _merge_samples(row.records, list(workload.sample_key), first["kind"], problems)
    row.samples = len(samples)
    # A job that has only just started has no full spec yet: its row is partial, not a problem.
    started = any(r.get("spec") for _, r in members)
    try:
        if not started and samples and any(r.get("status") != "partial" for _, r in members):
            raise KeyError("no record has a spec to re-score its samples with")
        spec_record = next((r for _, r in members if r.get("spec")), first)
        row.metrics = workload.rescore(samples, spec_record) if samples and started else {}
    except (KeyError, ValueError, TypeError, AttributeError, ZeroDivisionError) as e:
        row.note = f"metrics not recomputed ({e})"
        problems.append(f"{row.records[0].parent}: {row.note}")
    if len(members) > 1:
        row.note = (row.note + "; " if row.note else "") + f"merged from {len(members)} records"
    return row


def reference_rows(rows: list[Row]) -> list[Row]:
    """Rows the papers report, for each workload that has rows (Workload.reported_rows)."""
    out = []
    for name in dict.fromkeys(row.workload for row in rows):
        for ref in WORKLOADS.get(name).reported_rows():
            out.append(Row(name, ref.model, ref.spec, metrics=ref.metrics, reported=True, source=ref.source, data="reported"))
    return out
