"""Read run records into leaderboard rows.

Records are found recursively (sweep folders included). Records of the same job split into
shards, or run twice, are one row: their samples are merged (each sample key once, an answer
winning over an error for the same key) and the row's metrics are computed from those samples by
the workload's own `rescore`. Records whose configs differ in anything but the shard index are
different rows, and each such row's note says what differs. A record names
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

from mmsafety.config_migration import upgrade_config
from mmsafety.leaderboard.views import VIEWS
from mmsafety.record_kinds import schema_of
from mmsafety.record_schema import record_problems, split_samples
from mmsafety.records import read_samples
from mmsafety.workload import WORKLOADS
from mmsafety.safe_json import loads_object
# Fields of a record's spec that differ between shards or runs of one job but not its meaning.
NOT_IDENTITY = ("shard", "notes")
# Keys of a job's config that differ between the shards of one job.
CONFIG_NOT_IDENTITY = ("shard",)
# Which sample of a key a merge keeps: an answer over a skip over an error (a resumed or repeated
# part may hold an answer where another holds only an error).
STATUS_RANK = {"ok": 0, "skipped": 1, "error": 2}


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


def _what_ran(record: dict) -> list:
    """The workload, model and spec (shard aside): rows that agree on these differ only in config."""
    spec = {k: v for k, v in record.get("spec", {}).items() if k not in NOT_IDENTITY}
    return [record.get("kind"), _model_name(record), record.get("model", {}).get("weights_sha256"), spec]


def _job_config(record: dict) -> dict:
    """The record's job config in today's layout (a run recorded before a schema change is the same job)."""
    config = record.get("config")
    return {k: v for k, v in upgrade_config(config).items() if k not in CONFIG_NOT_IDENTITY} if isinstance(config, dict) else {}


def _identity(record: dict) -> str:
    """Records of one job (its shards, its resumed parts, a copy) share this; any other difference
    in their configs (model.cache_path, a retry setting, ...) makes them different rows."""
    return json.dumps(_what_ran(record) + [_job_config(record)], sort_keys=True, default=str)


def _flat(config: dict, prefix: str = "") -> dict[str, str]:
    """{"model.cache_path": "\"/x\"", ...}: a config's leaves by dotted key, values as JSON text."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value, sort_keys=True, default=str)
    return out


def _config_differences(rows_configs: list[tuple["Row", dict]]) -> None:
    """To the note of each row whose workload, model and spec equal another row's: the config keys
    in which they differ, with this row's values (the rows would otherwise look the same)."""
    alike: dict[str, list[tuple[Row, dict]]] = {}
    for row, record in rows_configs:
        key = json.dumps(_what_ran(record), sort_keys=True, default=str)
        alike.setdefault(key, []).append((row, _flat(_job_config(record))))
    for group in alike.values():
        if len(group) < 2:
            continue
        keys = sorted({k for _, flat in group for k in flat if len({f.get(k) for _, f in group}) > 1})
        for row, flat in group:
            shown = ", ".join(f"{k}={flat.get(k, '(unset)')[:60]}" for k in keys[:4])
            more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
            row.note = (row.note + "; " if row.note else "") + f"config differs: {shown}{more}"


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
    """Every sample key once, in the order first seen: an answer wins over a skip, a skip over an
    error (STATUS_RANK); between equals the first seen wins."""
    kept: dict = {}
    merged: list[dict] = []
    for path in paths:
        for s in _usable_samples(path, kind, problems):
            if not key_fields:
                merged.append(s)
                continue
            key = tuple(str(s.get(k)) for k in key_fields)
            rank = STATUS_RANK.get(s.get("status", "ok"), len(STATUS_RANK))
            if key not in kept:
                kept[key] = (rank, len(merged))
                merged.append(s)
            elif rank < kept[key][0]:
                kept[key] = (rank, kept[key][1])
                merged[kept[key][1]] = s
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
    _config_differences([(row, members[0][1]) for row, members in zip(rows, groups.values())])
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
        _note_errors(row, first.get("counts", {}).get("errors", 0), first.get("counts", {}).get("ok", 0))
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
    statuses = [s.get("status", "ok") for s in samples]
    _note_errors(row, statuses.count("error"), statuses.count("ok"))
    if len(members) > 1:
        row.note = (row.note + "; " if row.note else "") + f"merged from {len(members)} records"
    return row


def _note_errors(row: Row, errors: int, answered: int) -> None:
    """Mark a row whose metrics leave out samples that errored (no answer): how many, over what."""
    if errors and not row.error:  # a failed row's note already says why
        row.note = (row.note + "; " if row.note else "") + f"{errors} errored, metrics over {answered} answered"


def reference_rows(rows: list[Row]) -> list[Row]:
    """Rows the papers report, for each workload whose views have rows (WorkloadViews.reported_rows)."""
    out = []
    for name in dict.fromkeys(row.workload for row in rows):
        for ref in VIEWS.get(name).reported_rows() if name in VIEWS else ():
            out.append(Row(name, ref.model, ref.spec, metrics=ref.metrics, reported=True, source=ref.source, data="reported"))
    return out
