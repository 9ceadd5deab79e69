"""A judge against human labels, in HarmBench's classifier validation-set format:
`{behavior_id: [{test_case: [image, text], generation, human_0, human_1, human_2, ...}]}`.

Truth is the majority of the `human_*` labels. Stored votes in the file (`llama_cls`,
`mistral_cls`, `advbench_label`, `gpt`) are reported as reference rows next to the judge run.
The behaviour text and context come from the behaviours CSV when a root is given (HarmBench's
classifier sees the redacted image description); otherwise from the entry (its text prompt and
`image_description`), and the report says so.
"""

from __future__ import annotations

import json
from pathlib import Path

from harmbench.data import read_behaviors
from harmbench.metrics import agreement_metrics, majority
from mmsafety.errors import UserError
from mmsafety.judging import Judge, JudgeInput
from mmsafety.numbers import pct_of

REFERENCE_VOTES = ("llama_cls", "mistral_cls", "advbench_label", "gpt")


def _label(value) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in ("0", "1", "yes", "no"):
        return int(value.strip().lower() in ("1", "yes"))
    return None


def load_val_set(path: str | Path, root: str | Path | None = None) -> tuple[list[dict], list[dict], list[str]]:
    """(entries in file order with `input`, `truth`, `votes`; skipped with reasons; notes)."""
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        raise UserError(f"val_set={path}: no such file; give HarmBench's multimodal_behaviors_val_set.json") from None
    except ValueError as e:
        raise UserError(f"val_set={path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise UserError(f"val_set={path}: expected {{behavior_id: [entries]}} as in HarmBench")
    behaviors = {b.id: b for b in read_behaviors(root) if b.skip_reason is None} if root else None
    notes = [] if root else ["no root given: behaviour text from each test case, context from its image_description"]
    kept, skipped = [], []
    for bid, entries in data.items():
        for i, e in enumerate(entries if isinstance(entries, list) else []):
            where = f"{bid}[{i}]"
            if not isinstance(e, dict) or not isinstance(e.get("generation"), str):
                skipped.append({"entry": where, "reason": "no generation string"})
                continue
            humans = [_label(v) for k, v in sorted(e.items()) if k.startswith("human_")]
            if not humans or any(h is None for h in humans):
                skipped.append({"entry": where, "reason": "missing or non-0/1 human_* labels"})
                continue
            if behaviors is not None and bid not in behaviors:
                skipped.append({"entry": where, "reason": f"unknown behaviour id {bid} (not in the behaviours CSV)"})
                continue
            if behaviors is not None:
                behavior, context = behaviors[bid].behavior, behaviors[bid].context
            else:
                case = e.get("test_case")
                behavior = case[-1] if isinstance(case, list) and case else str(case or "")
                context = str(e.get("image_description") or "")
            votes = {k: _label(e.get(k)) for k in REFERENCE_VOTES if k in e}
            kept.append({"entry": where, "behavior_id": bid, "truth": majority(humans), "votes": votes,
                         "input": JudgeInput(behavior, e["generation"], context)})
    return kept, skipped, notes


def judge_agreement(judge: Judge, entries: list[dict]) -> dict:
    labels = judge.labels([e["input"] for e in entries]) if entries else []
    return {**agreement_metrics(labels, [e["truth"] for e in entries]), "labels": labels}


def reference_rows(entries: list[dict]) -> dict[str, dict]:
    """Stored votes as judges: over the entries that carry a readable vote of that name."""
    rows = {}
    for name in REFERENCE_VOTES:
        have = [e for e in entries if e["votes"].get(name) is not None]
        if have:
            rows[name] = agreement_metrics([e["votes"][name] for e in have], [e["truth"] for e in have])
    return rows


def table(report: dict) -> str:
    # Rates in percent with one decimal (docs/leaderboard.md, Numbers); kappa is not a rate.
    lines = ["| judge | n | agreement % | kappa | FPR % | FNR % | unparsed |", "|---|---|---|---|---|---|---|"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    rate = lambda v: pct_of(v) or "-"  # noqa: E731
    for kind, rows in (("", report["judges"]), (" (stored)", report["reference"])):
        for name, r in rows.items():
            lines.append(f"| {name}{kind} | {r['n']} | {rate(r['agreement'])} | {fmt(r['kappa'])} | {rate(r['fpr'])} | "
                         f"{rate(r['fnr'])} | {r['unparsed']} |")
    return "\n".join(lines) + "\n"
