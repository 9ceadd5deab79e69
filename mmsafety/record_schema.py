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

# What the leaderboard reads from every record, whatever its workload.
RECORD = {
    "kind": Required(str),
    "status": Required(str),
    "config": dict,
    "model": {"name": str, "weights_sha256": (str, type(None))},
    "spec": {
        "shard": {"index": int, "count": int},
        "sample_key": ListOf(str), "rescore": str, "reference_rows": str, "group_by": ListOf(str),
        "tasks": ListOf(str), "synthetic": bool, "root": (str, type(None)), "scoring": str, "prompt": {"name": str},
        "eps": OPTIONAL_NUMBER, "steps": OPTIONAL_NUMBER, "headline": str, "case": str, "target": (str, type(None)),
        "caption": str, "attack": (str, type(None)), "objective": (str, type(None)), "norm": (str, type(None)),
    },
    "metrics": dict,
    "counts": MapOf(int),
    "timing": {"seconds": NUMBER},
    "artifacts": {"loss_curve": {"csv": str}},
    "seeds": {"seed": int},
    "error": str,
}

RATES = MapOf(OPTIONAL_NUMBER)
GOAT_TASK_METRICS = {"n": int, "skipped": int, "accuracy": NUMBER, "macro_f1": NUMBER, "invalid_rate": NUMBER}
# The metrics each workload's tables read (by record kind).
METRICS = {
    "goat_bench": {"per_task": MapOf(dict), "overall": GOAT_TASK_METRICS},
    "visual_attack": {"images": int, "asr": RATES, "clean_baseline": RATES, "stealth": RATES,
                      "attack_seconds": NUMBER},
}

# The fields the workloads' scoring reads from each sample (by record kind and sample status).
SAMPLES = {
    "goat_bench": {
        "ok": {"task": Required(str), "id": Required(str), "label": Required(int), "pred": Required((int, type(None))),
               "correct": bool},
        "skipped": {"task": Required(str), "id": Required(str), "reason": Required(str)},
    },
    "visual_attack": {
        "ok": {"image": Required(int), "clean_png": Required(str), "adversarial_png": Required(str),
               "steps_run": Required(int), "attack_seconds": Required(NUMBER), "stealth": Required(RATES),
               "clean": Required(RATES), "adversarial": Required(RATES), "utility": (dict, type(None)),
               "base": dict},
        "skipped": {"image": Required(int), "reason": Required(str)},
    },
}


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
    metrics_shape = METRICS.get(record["kind"])
    if metrics_shape is not None and isinstance(record.get("metrics"), dict):
        check(record["metrics"], metrics_shape, "metrics", problems)
        per_task = record["metrics"].get("per_task") if record["kind"] == "goat_bench" else None
        for task, values in per_task.items() if isinstance(per_task, dict) else ():
            check(values, GOAT_TASK_METRICS, f"metrics.per_task.{task}", problems)
    return problems


def sample_problems(kind: str, sample: Any) -> list[str]:
    """One line per field of a sample (a samples.jsonl line) that its workload's scoring cannot use."""
    if not isinstance(sample, dict):
        return [f"sample is {_describe(sample)}, not an object"]
    status = sample.get("status", "ok")
    if status not in SAMPLE_STATUSES:
        return [f"status is {_describe(status)}, not one of {', '.join(SAMPLE_STATUSES)}"]
    shape = SAMPLES.get(kind, {}).get(status, {})
    problems: list[str] = []
    check(sample, shape, "", problems)
    if kind == "goat_bench" and status == "ok" and not problems and sample["label"] not in (0, 1):
        problems.append(f"label is {sample['label']}, not 0 or 1")
    for key in ("clean_png", "adversarial_png"):  # the leaderboard opens these: they must stay in the run folder
        value = sample.get(key)
        if isinstance(value, str) and (value.startswith(("/", "\\")) or ".." in value.replace("\\", "/").split("/")):
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
