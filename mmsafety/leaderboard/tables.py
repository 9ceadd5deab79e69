"""Leaderboard rows as two flat tables: GOAT-Bench (like the paper's Table 2) and attacks.

Cells are plain values; every writer (CSV, JSON, Markdown, HTML) escapes for its own format.
"""

from __future__ import annotations

from mmsafety.leaderboard.collect import Row

GOAT_TASKS = ("hatefulness", "misogyny", "offensiveness", "sarcasm", "harmfulness")


def _num(value, digits: int = 2):
    return None if value is None else round(float(value), digits)


def eps_label(eps) -> str:
    """8/255 when the budget is a whole number of 8-bit levels, else the float."""
    if eps is None:
        return ""
    levels = float(eps) * 255
    return f"{round(levels)}/255" if abs(levels - round(levels)) < 1e-6 else f"{float(eps):g}"


def goat_table(rows: list[Row]) -> list[dict]:
    out = []
    for row in rows:
        if row.workload != "goat_bench":
            continue
        per_task, overall = row.metrics.get("per_task", {}), row.metrics.get("overall", {})
        spec = row.spec
        cells = {"model": row.model, "status": row.status,
                 "scoring": spec.get("scoring", "reported" if row.reported else ""),
                 "prompt": (spec.get("prompt") or {}).get("name", "")}
        for task in GOAT_TASKS:
            m = per_task.get(task, {})
            cells[f"{task}_acc"], cells[f"{task}_f1"] = _num(m.get("accuracy")), _num(m.get("macro_f1"))
        cells["overall_acc"], cells["overall_f1"] = _num(overall.get("accuracy")), _num(overall.get("macro_f1"))
        cells["memes"] = None if row.reported else sum(m.get("n", 0) for m in per_task.values())
        cells["skipped"] = None if row.reported else sum(m.get("skipped", 0) for m in per_task.values())
        cells["shards"] = row.shards
        cells["data"] = "synthetic" if spec.get("synthetic") else (spec.get("root") or "")
        cells["note"] = row.source if row.reported else row.note
        out.append(cells)
    return out


def attack_table(rows: list[Row]) -> list[dict]:
    out = []
    for row in rows:
        if row.workload != "visual_attack":
            continue
        spec, m = row.spec, row.metrics
        headline = spec.get("headline", "syntax")
        asr, clean, stealth = m.get("asr", {}), m.get("clean_baseline", {}), m.get("stealth", {})
        out.append({
            "model": row.model, "status": row.status,
            "case": spec.get("case", "tool_call"),
            "target": spec.get("target") or spec.get("caption") or ("verdict No" if spec.get("case") == "meme_verdict" else ""),
            "attack": spec.get("attack"), "objective": spec.get("objective"), "norm": spec.get("norm"),
            "eps": eps_label(spec.get("eps")), "eps_value": spec.get("eps"), "steps": spec.get("steps"),
            "images": m.get("images"), "success_measure": headline,
            "asr": _num(100 * asr[headline], 1) if headline in asr else None,
            "asr_argument": _num(100 * asr["argument"], 1) if "argument" in asr else None,
            "clean_baseline": _num(100 * clean[headline], 1) if headline in clean else None,
            "ssim": _num(stealth.get("ssim"), 3), "psnr": _num(stealth.get("psnr"), 1),
            "lpips": _num(stealth.get("lpips"), 3), "seconds": _num(m.get("attack_seconds", row.seconds), 1),
            "note": row.note,
        })
    return out
