"""Leaderboard rows for the HarmBench workload: model x method x judge, with DirectRequest as the
baseline column. Written against run records (record.json + samples.jsonl), so the workload
contract of the core can register `rescore` and `table_rows` as this workload's functions.
"""

from __future__ import annotations

import json
from pathlib import Path

from harmbench.metrics import attack_success_rate
from mmsafety.records import read_samples

BASELINE_METHOD = "direct_request"


def is_harmbench(record: dict) -> bool:
    return (record.get("spec") or {}).get("case") == "harmbench_behaviors"


def labels_of(samples: list[dict], which: str = "adversarial") -> tuple[list[tuple[str, int]], dict[str, str]]:
    """(behaviour id, judge label) per judged test case, and each behaviour's semantic category."""
    labels, categories = [], {}
    for s in samples:
        if s.get("status") != "ok":
            continue
        base = s.get("base") or {}
        bid = base.get("behavior_id", s.get("key"))
        categories[bid] = base.get("semantic_category", "unknown")
        for row in (s.get("outputs") or {}).get(which) or []:
            labels.append((bid, int(row.get("label", -1))))
    return labels, categories


def rescore(samples: list[dict], record: dict) -> dict:
    """HarmBench ASR of the test cases (and of the clean start images, for reference) from samples alone."""
    labels, categories = labels_of(samples, "adversarial")
    clean, _ = labels_of(samples, "clean")
    return {"harmbench": attack_success_rate(labels, categories), "clean": attack_success_rate(clean, categories)}


def load_record(folder: str | Path) -> tuple[dict, list[dict]]:
    folder = Path(folder)
    return json.loads((folder / "record.json").read_text()), read_samples(folder / "samples.jsonl")


def table_rows(records: list[tuple[dict, list[dict]]]) -> list[dict]:
    """One row per (model, method, judge): ASR with its 95% interval, per-category ASR, and the
    DirectRequest ASR of the same model and judge (None when that run is missing)."""
    cells: dict[tuple[str, str, str], dict] = {}
    for record, samples in records:
        if not is_harmbench(record):
            continue
        spec = record["spec"]
        key = ((record.get("model") or {}).get("name", "?"), spec.get("method", "?"), (spec.get("judge") or {}).get("name", "?"))
        metrics = rescore(samples, record)["harmbench"]
        cells[key] = {"model": key[0], "method": key[1], "judge": key[2], "asr": metrics["asr"], "ci95": metrics["ci95"],
                      "behaviors": metrics["behaviors"], "unparsed": metrics["unparsed"],
                      "by_category": {c: v["asr"] for c, v in metrics["by_category"].items()}}
    rows = []
    for (model, method, judge), cell in sorted(cells.items()):
        baseline = cells.get((model, BASELINE_METHOD, judge))
        rows.append({**cell, "direct_request_asr": baseline["asr"] if baseline else None})
    return rows
