"""The types of a run record's and a sample's fields, checked before anything is computed from them.

A record or a samples.jsonl may come from someone else (a shared results folder, a copied
sweep), so the leaderboard and a resumed job treat them as untrusted data: `record_problems`
and `sample_problems` return one line per field that is missing or has the wrong type, and
the caller lists the file as a problem (leaderboard) or sets the sample aside (resume).
An empty list means every field the readers use has the type they expect.

A shape is a Python type (or a tuple of them), a `{key: shape}` dict (keys listed are
checked when present; REQUIRED ones must be there), `ListOf(shape)` or `MapOf(shape)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NUMBER = (int, float)
STATUSES = ("completed", "partial", "failed")
SAMPLE_STATUSES = ("ok", "skipped", "error")


@dataclass(frozen=True)
class ListOf:
    item: Any


@dataclass(frozen=True)
class MapOf:
    value: Any


@dataclass(frozen=True)
class Required:
    shape: Any


OPTIONAL_NUMBER = (int, float, type(None))

# What the leaderboard reads from every record, whatever its workload. A workload adds the shapes of
# its own spec, metrics and samples (`Workload.spec_shape`, `metrics_shape`, `sample_shapes`).
RECORD = {
    "kind": Required(str),
    "status": Required(str),
    "config": dict,
    "model": {"name": str, "weights_sha256": (str, type(None))},
    "spec": {"shard": {"index": int, "count": int}, "sample_key": ListOf(str)},
    "metrics": dict,
    "counts": MapOf(int),
    "timing": {"seconds": NUMBER},
    "artifacts": dict,
    "seeds": {"seed": int},
    "error": str,
}

RATES = MapOf(OPTIONAL_NUMBER)


def _workload(kind):
    from mmsafety.workload import WORKLOADS

    return WORKLOADS.get(kind) if isinstance(kind, str) and kind in WORKLOADS else None


def _type_name(shape) -> str:
    if isinstance(shape, tuple):
        return " or ".join(_type_name(s) for s in shape)
    if isinstance(shape, (dict, MapOf)):
        return "an object"
    if isinstance(shape, ListOf):
        return "a list"
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false", dict: "an object",
            list: "a list", type(None): "null", object: "any"}.get(shape, getattr(shape, "__name__", str(shape)))


def _is(value, types) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool):  # a bool is an int to Python, never to a record
        return bool in types or object in types
    return isinstance(value, types)


def check(value, shape, where: str, problems: list[str]) -> None:
    """Append one line to `problems` per place where `value` does not match `shape`."""
    if isinstance(shape, Required):
        shape = shape.shape
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            problems.append(f"{where} is {_describe(value)}, not an object")
            return
        for key, sub in shape.items():
            if key in value:
                check(value[key], sub, f"{where}.{key}" if where else key, problems)
            elif isinstance(sub, Required):
                problems.append(f"{where + '.' if where else ''}{key} is missing")
    elif isinstance(shape, MapOf):
        if not isinstance(value, dict):
            problems.append(f"{where} is {_describe(value)}, not an object")
            return
        for key, sub in value.items():
            check(sub, shape.value, f"{where}.{key}", problems)
    elif isinstance(shape, ListOf):
        if not isinstance(value, list):
            problems.append(f"{where} is {_describe(value)}, not a list")
            return
        for i, item in enumerate(value):
            check(item, shape.item, f"{where}[{i}]", problems)
    elif not _is(value, shape):
        problems.append(f"{where} is {_describe(value)}, not {_type_name(shape)}")


def _describe(value) -> str:
    text = repr(value)
    return text if len(text) <= 30 else f"{_type_name(type(value))} ({len(text)} characters)"


def record_problems(record: Any) -> list[str]:
    """One line per field of a record.json the leaderboard cannot use; [] when it can use all."""
    problems: list[str] = []
    check(record, RECORD, "", problems)
    if problems:
        return problems[:1] if not isinstance(record, dict) else problems
    if record["status"] not in STATUSES:
        problems.append(f"status is {_describe(record['status'])}, not one of {', '.join(STATUSES)}")
    workload = _workload(record["kind"])
    if workload is not None:
        if isinstance(record.get("spec"), dict):
            check(record["spec"], workload.spec_shape, "spec", problems)
        if isinstance(record.get("metrics"), dict):
            check(record["metrics"], workload.metrics_shape, "metrics", problems)
    return problems


def sample_problems(kind: str, sample: Any) -> list[str]:
    """One line per field of a sample (a samples.jsonl line) that its workload's scoring cannot use."""
    if not isinstance(sample, dict):
        return [f"sample is {_describe(sample)}, not an object"]
    status = sample.get("status", "ok")
    if status not in SAMPLE_STATUSES:
        return [f"status is {_describe(status)}, not one of {', '.join(SAMPLE_STATUSES)}"]
    workload = _workload(kind)
    problems: list[str] = []
    check(sample, workload.sample_shapes.get(status, {}) if workload else {}, "", problems)
    if workload is not None and not problems:
        problems += workload.sample_value_problems(sample)
    for key, value in sample.items():  # files the leaderboard opens must stay in the run folder
        if key.endswith("_png") and isinstance(value, str) and (
                value.startswith(("/", "\\")) or ".." in value.replace("\\", "/").split("/")):
            problems.append(f"{key} {_describe(value)} leaves the run folder")
    return problems


def split_samples(kind: str, samples: list) -> tuple[list[dict], list[str]]:
    """(the samples the workload can use, one line per sample set aside)."""
    good, problems = [], []
    for i, sample in enumerate(samples, 1):
        found = sample_problems(kind, sample)
        if found:
            problems.append(f"sample {i}: {'; '.join(found[:3])}")
        else:
            good.append(sample)
    return good, problems
