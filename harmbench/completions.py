"""Completions files: what a judge reads. Formats accepted:

- HarmBench's completions JSON, `{behavior_id: [{test_case, generation, ...}, ...]}`;
- JSON lines, one `{behavior_id, generation, ...}` per line;
- an attack record's `samples.jsonl` (this workload's): each sample's adversarial completion.

A line that cannot be read is skipped with its reason; a last line without its newline that is
not valid JSON is a torn write (a job killed mid-line) and is reported as such. Counts add up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from harmbench.metrics import attack_success_rate
from mmsafety.errors import UserError
from mmsafety.judging import JudgeInput


@dataclass
class Completions:
    rows: list[dict] = field(default_factory=list)      # {behavior_id, generation, test_case?, ...}
    skipped: list[dict] = field(default_factory=list)   # {line, reason}
    read: int = 0


def _rows_of(rec: dict) -> list[dict] | None:
    if "outputs" in rec:  # an attack record's sample
        rows = (rec.get("outputs") or {}).get("adversarial") or []
        return [r for r in rows if isinstance(r, dict)]
    return [rec]


def read_completions(path: str | Path) -> Completions:
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"completions={path}: no such file; give a HarmBench completions JSON or a .jsonl")
    out = Completions()
    data = path.read_bytes()
    if path.suffix == ".json":
        try:
            obj = json.loads(data.decode("utf-8", "replace"))
        except ValueError as e:
            raise UserError(f"{path} is not valid JSON ({e}); fix it or write JSON lines") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path}: expected {{behavior_id: [completions]}} as in HarmBench")
        for bid, entries in obj.items():
            for i, e in enumerate(entries if isinstance(entries, list) else [entries]):
                out.read += 1
                if isinstance(e, dict) and isinstance(e.get("generation"), str):
                    out.rows.append({**e, "behavior_id": bid})
                else:
                    out.skipped.append({"line": f"{bid}[{i}]", "reason": "entry has no generation string"})
        return out
    lines = data.split(b"\n")
    torn_candidate = len(lines) - 1 if lines and lines[-1] != b"" else None
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        out.read += 1
        try:
            rec = json.loads(raw.decode("utf-8", "replace"))
        except ValueError:
            reason = "torn last line (written partly; the job was cut off)" if i == torn_candidate else "not valid JSON"
            out.skipped.append({"line": i + 1, "reason": reason})
            continue
        rows = _rows_of(rec) if isinstance(rec, dict) else None
        good = [r for r in rows or [] if isinstance(r.get("generation"), str) and r.get("behavior_id") is not None]
        if not good:
            out.skipped.append({"line": i + 1, "reason": "no behavior_id and generation"})
        out.rows += good
    return out


def generate_completions(adapter, images: Sequence, prompts: Sequence[str], max_new_tokens: int = 512,
                         batch_size: int = 8) -> list[str]:
    """Greedy completions in batches, as HarmBench generates them (one per image and prompt)."""
    outs: list[str] = []
    for i in range(0, len(prompts), batch_size):
        outs += adapter.generate(list(images[i:i + batch_size]), list(prompts[i:i + batch_size]), max_new_tokens=max_new_tokens)
    return outs


def judge_completions(judge, completions: Completions, behaviors: dict) -> dict:
    """Label every completion with `judge` (behaviour text and context from `behaviors`, id ->
    data.Behavior) and compute HarmBench's ASR. Completions of unknown behaviours are skipped."""
    known, skipped = [], list(completions.skipped)
    for r in completions.rows:
        b = behaviors.get(str(r["behavior_id"]))
        if b is None:
            skipped.append({"line": r["behavior_id"], "reason": f"unknown behaviour id {r['behavior_id']}"})
        else:
            known.append((b, r))
    labels = judge.labels([JudgeInput(b.behavior, r["generation"], b.context) for b, r in known]) if known else []
    pairs = [(b.id, label) for (b, _), label in zip(known, labels)]
    return {"judge": getattr(judge, "name", "?"), "labels": labels, "skipped": skipped, "read": completions.read,
            **attack_success_rate(pairs, {b.id: b.semantic_category for b, _ in known})}
