"""The GOAT-Bench leaderboard section: accuracy / macro-F1 per task and overall (like the paper's
Table 2), the paper's own rows beside measured ones, and a bar plot of macro-F1 per task."""

from __future__ import annotations

from goat_bench.tasks import TASKS
from mmsafety.leaderboard.plots import png_of, pyplot
from mmsafety.leaderboard.tables import num
from mmsafety.workload import Figure, Section

COLUMNS = ["model", "status", "scoring"] + [f"{t}_{m}" for t in TASKS for m in ("acc", "f1")] + [
    "overall_acc", "overall_f1", "memes", "skipped", "note"]


def cells(row) -> dict:
    per_task, overall = row.metrics.get("per_task", {}), row.metrics.get("overall", {})
    spec = row.spec
    out = {"model": row.model, "status": row.status,
           "scoring": spec.get("scoring", "reported" if row.reported else ""),
           "prompt": (spec.get("prompt") or {}).get("name", "")}
    for task in TASKS:
        m = per_task.get(task, {})
        out[f"{task}_acc"], out[f"{task}_f1"] = num(m.get("accuracy")), num(m.get("macro_f1"))
    out["overall_acc"], out["overall_f1"] = num(overall.get("accuracy")), num(overall.get("macro_f1"))
    out["memes"] = None if row.reported else sum(m.get("n", 0) for m in per_task.values())
    out["skipped"] = None if row.reported else sum(m.get("skipped", 0) for m in per_task.values())
    out["shards"] = row.shards
    out["data"] = "synthetic" if spec.get("synthetic") else (spec.get("root") or "")
    out["note"] = row.source if row.reported else row.note
    return out


def f1_bars(goat_rows: list[dict]) -> bytes | None:
    """Macro-F1 per task, one bar per leaderboard row (reported rows hatched)."""
    rows = [r for r in goat_rows if any(r[f"{t}_f1"] is not None for t in TASKS)]
    if not rows:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=110)
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        xs = [t + (i - (len(rows) - 1) / 2) * width for t in range(len(TASKS))]
        ys = [r[f"{t}_f1"] or 0 for t in TASKS]
        label = f"{r['model']}" + (" (reported)" if r["status"] == "reported" else f" ({r['scoring']})")
        ax.bar(xs, ys, width, label=label, hatch="//" if r["status"] == "reported" else None,
               alpha=0.6 if r["status"] == "reported" else 0.9)
    ax.set_xticks(range(len(TASKS)), TASKS, fontsize=8)
    ax.set(ylabel="macro-F1 (%)", ylim=(0, 105), title="GOAT-Bench macro-F1 per task")
    ax.legend(fontsize=7, ncol=2)
    return png_of(fig)


def figures(rows, table: list[dict]) -> list[Figure]:
    png = f1_bars(table)
    return [Figure("f1_per_task", "Macro-F1 per task", png)] if png else []


SECTION = Section(key="goat_bench", title="GOAT-Bench (accuracy / macro-F1, %)", columns=COLUMNS,
                  cells=cells, figures=figures)
