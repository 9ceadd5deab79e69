"""The attack workload's leaderboard section: one row per attack record, success measured on saved
PNGs, and the plots of success against budget and of the loss curves."""

from __future__ import annotations

import csv
from pathlib import Path

from mmsafety.leaderboard.plots import png_of, pyplot
from mmsafety.leaderboard.tables import num
from mmsafety.workload import Figure, Section

MAX_CURVES = 12
COLUMNS = ["model", "status", "case", "target", "attack", "objective", "eps", "steps", "images",
           "success_measure", "asr", "asr_argument", "clean_baseline", "ssim", "psnr", "lpips", "seconds", "note"]


def eps_label(eps) -> str:
    """8/255 when the budget is a whole number of 8-bit levels, else the float."""
    if eps is None:
        return ""
    levels = float(eps) * 255
    return f"{round(levels)}/255" if abs(levels - round(levels)) < 1e-6 else f"{float(eps):g}"


def cells(row) -> dict:
    spec, m = row.spec, row.metrics
    headline = spec.get("headline", "syntax")
    asr, clean, stealth = m.get("asr", {}), m.get("clean_baseline", {}), m.get("stealth", {})
    return {
        "model": row.model, "status": row.status,
        "case": spec.get("case", "tool_call"),
        "target": spec.get("target") or spec.get("caption") or ("verdict No" if spec.get("case") == "meme_verdict" else ""),
        "attack": spec.get("attack"), "objective": spec.get("objective"), "norm": spec.get("norm"),
        "eps": eps_label(spec.get("eps")), "eps_value": spec.get("eps"), "steps": spec.get("steps"),
        "images": m.get("images"), "success_measure": headline,
        "asr": num(100 * asr[headline], 1) if headline in asr else None,
        "asr_argument": num(100 * asr["argument"], 1) if "argument" in asr else None,
        "clean_baseline": num(100 * clean[headline], 1) if headline in clean else None,
        "ssim": num(stealth.get("ssim"), 3), "psnr": num(stealth.get("psnr"), 1),
        "lpips": num(stealth.get("lpips"), 3), "seconds": num(m.get("attack_seconds", row.seconds), 1),
        "note": row.note,
    }


def images(row) -> list[tuple[str, Path]]:
    """The first sample's clean and adversarial PNGs of the row's first record, for thumbnails."""
    if not row.artifacts:
        return []
    folder = row.artifacts[0]["folder"]
    first = row.artifacts[0].get("first_sample", {})
    found = [(k, folder / first[k]) for k in ("clean_png", "adversarial_png") if first.get(k)]
    return [(k, p) for k, p in found if p.is_file()]


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
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=110)
    for label, points in sorted(series.items()):
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, marker="o", label=label)
    ax.set(xlabel="budget eps (x 1/255)", ylabel="attack success (%)", ylim=(-3, 103), title="Attack success vs budget")
    if max(x for pts in series.values() for x, _ in pts) > 4 * max(1e-9, min(x for pts in series.values() for x, _ in pts)):
        ax.set_xscale("log", base=2)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return png_of(fig)


def loss_curves(rows) -> bytes | None:
    """Mean attack loss per step of each attack record (at most MAX_CURVES)."""
    curves = []
    for row in rows:
        for art in row.artifacts:
            curve = art.get("record", {}).get("artifacts", {}).get("loss_curve", {}).get("csv")
            path = art["folder"] / curve if curve else None
            if path is None or not path.is_file():
                continue
            try:
                with open(path, newline="") as f:
                    values = [float(line["mean"]) for line in csv.DictReader(f)]
            except (OSError, KeyError, ValueError):
                continue  # a curve being written or damaged: the table row still shows
            curves.append((f"{row.model} · {row.spec.get('attack')} · eps {eps_label(row.spec.get('eps'))}", values))
    if not curves:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=110)
    for label, values in curves[:MAX_CURVES]:
        ax.plot(values, label=label, lw=1.2)
    ax.set(xlabel="PGD step", ylabel="mean loss", title="Attack loss curves")
    if all(v > 0 for _, vals in curves[:MAX_CURVES] for v in vals):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return png_of(fig)


def figures(rows, table: list[dict]) -> list[Figure]:
    drawn = [("asr_vs_eps", "Attack success vs budget", asr_vs_eps(table)), ("loss_curves", "Loss curves", loss_curves(rows))]
    return [Figure(name, caption, png) for name, caption, png in drawn if png]


SECTION = Section(key="attacks", title="Visual attacks (success %, measured on saved PNGs)", columns=COLUMNS,
                  cells=cells, figures=figures, images=images)
