"""Leaderboard plots (matplotlib, Agg) as PNG bytes, for the HTML page and the output folder."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from mmsafety.leaderboard.collect import Row
from mmsafety.leaderboard.tables import GOAT_TASKS, eps_label

MAX_CURVES = 12


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    _pyplot().close(fig)
    return buf.getvalue()


def asr_vs_eps(attack_rows: list[dict]) -> bytes | None:
    """Attack success (%) against the L-inf/L2 budget, one line per model, case and target."""
    series: dict[str, list[tuple[float, float]]] = {}
    for r in attack_rows:
        if r["asr"] is None or r["eps_value"] is None or r["norm"] == "none":
            continue
        label = f"{r['model']} · {r['case']} · {r['target']} ({r['norm']})"
        series.setdefault(label, []).append((float(r["eps_value"]) * 255, r["asr"]))
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=110)
    for label, points in sorted(series.items()):
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, marker="o", label=label)
    ax.set(xlabel="budget eps (x 1/255)", ylabel="attack success (%)", ylim=(-3, 103), title="Attack success vs budget")
    if max(x for pts in series.values() for x, _ in pts) > 4 * max(1e-9, min(x for pts in series.values() for x, _ in pts)):
        ax.set_xscale("log", base=2)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def f1_bars(goat_rows: list[dict]) -> bytes | None:
    """Macro-F1 per task, one bar per leaderboard row (reported rows hatched)."""
    rows = [r for r in goat_rows if any(r[f"{t}_f1"] is not None for t in GOAT_TASKS)]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=110)
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        xs = [t + (i - (len(rows) - 1) / 2) * width for t in range(len(GOAT_TASKS))]
        ys = [r[f"{t}_f1"] or 0 for t in GOAT_TASKS]
        label = f"{r['model']}" + (" (reported)" if r["status"] == "reported" else f" ({r['scoring']})")
        ax.bar(xs, ys, width, label=label, hatch="//" if r["status"] == "reported" else None,
               alpha=0.6 if r["status"] == "reported" else 0.9)
    ax.set_xticks(range(len(GOAT_TASKS)), GOAT_TASKS, fontsize=8)
    ax.set(ylabel="macro-F1 (%)", ylim=(0, 105), title="GOAT-Bench macro-F1 per task")
    ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def loss_curves(rows: list[Row]) -> bytes | None:
    """Mean attack loss per step of each attack record (at most MAX_CURVES)."""
    curves = []
    for row in rows:
        if row.workload != "visual_attack":
            continue
        for art in row.artifacts:
            path: Path | None = art.get("loss_curve")
            if path is None:
                continue
            try:
                with open(path, newline="") as f:
                    values = [float(line["mean"]) for line in csv.DictReader(f)]
            except (OSError, KeyError, ValueError):
                continue  # a curve being written or damaged: the table row still shows
            curves.append((f"{row.model} · {row.spec.get('attack')} · eps {eps_label(row.spec.get('eps'))}", values))
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=110)
    for label, values in curves[:MAX_CURVES]:
        ax.plot(values, label=label, lw=1.2)
    ax.set(xlabel="PGD step", ylabel="mean loss", title="Attack loss curves")
    if all(v > 0 for _, vals in curves[:MAX_CURVES] for v in vals):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)
