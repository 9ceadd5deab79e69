"""The attack workload's leaderboard section: one row per attack record, grouped by case and target,
success measured on saved PNGs; the plots of success against budget (a line joins only runs that
differ in the budget alone) and of the loss curves (legends name what differs); and each image's
clean and adversarial PNGs with the held-out prompts' answers for the page's sample browser."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

from mmsafety.leaderboard.plots import CURVE_POINTS, plain_log_ticks, png_of, pyplot
from mmsafety.leaderboard.tables import num
from mmsafety.paths import inside
from mmsafety.leaderboard.views import CASE_SECTIONS, Figure, SampleView, Section, WorkloadViews
from mmsafety.numbers import pct, pct_of
from mmsafety.record_models import answered
from visual_attacks.deploy import deploy_label

MAX_CURVES = 12
# Case, target and success measure head the row groups on the page (Section.group_by): rows of one
# group are comparable, so those are not columns there.
COLUMNS = ["model", "status", "attack", "objective", "eps", "steps", "deploy", "images", "asr", "asr_argument", "clean_baseline", "utility", "ssim", "psnr", "lpips", "seconds", "note"]
# Spec fields that do not make two runs incomparable on a budget axis: the budget itself, the step
# size derived from it, and what differs between shards or repeats of one job.
BUDGET_FIELDS = ("eps", "step_size", "notes", "shard")
UNCONSTRAINED = "unconstrained"


def eps_label(eps, norm: str | None = None) -> str:
    """8/255 when the budget is a whole number of 8-bit levels, else the float; "unconstrained" when
    the attack has no norm bound (its eps is only the [0,1] box, not a budget)."""
    if norm == "none":
        return UNCONSTRAINED
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
        "eps": eps_label(spec.get("eps"), spec.get("norm")),
        "eps_value": None if spec.get("norm") == "none" else spec.get("eps"), "steps": spec.get("steps"),
        "deploy": deploy_label(spec.get("deploy")),  # what the judged images went through
        "images": m.get("images"), "success_measure": headline,
        "asr": num(100 * asr[headline], 1) if headline in asr else None,
        "asr_argument": num(100 * asr["argument"], 1) if "argument" in asr else None,
        "clean_baseline": num(100 * clean[headline], 1) if headline in clean else None,
        # case=agent: the user's tasks done in the agent loop, "under attack / clean image" (%)
        "utility": f"{pct_of(asr['utility'])} / {pct_of(clean['utility'])}" if "utility" in asr and "utility" in clean else None,
        "ssim": num(stealth.get("ssim"), 3), "psnr": num(stealth.get("psnr"), 1),
        "lpips": num(stealth.get("lpips"), 3), "seconds": num(m.get("attack_seconds", row.seconds), 1),
        "note": "; ".join(n for n in (row.note, attack_note(m)) if n),
    }


def attack_note(m: dict) -> str:
    """What a row adds in its note (the table has no room for more columns): a worst case's wins per
    member (its row sits beside each single attack's), and the passes the per-image early stop saved."""
    parts = []
    if isinstance(m.get("won_by"), dict):
        parts.append("won by " + ", ".join(f"{k} {v}" for k, v in m["won_by"].items()))
    if isinstance(m.get("budget_saved"), (int, float)) and m["budget_saved"] > 0:
        parts.append(f"{100 * m['budget_saved']:.1f}% of passes saved by early stop")
    return "; ".join(parts)


def images(row) -> list[tuple[str, Path]]:
    """The first sample's clean and adversarial PNGs of the row's first record, for thumbnails."""
    if not row.artifacts:
        return []
    folder = row.artifacts[0]["folder"]
    first = row.artifacts[0].get("first_sample", {})
    found = [(k, inside(folder, first.get(k))) for k in ("clean_png", "adversarial_png")]
    return [(k, p) for k, p in found if p is not None and p.is_file()]


def _comparable(row) -> dict:
    """What must be equal for two runs to share a line on the budget axis: everything but the budget."""
    return {"model": row.model, **{k: v for k, v in row.spec.items() if k not in BUDGET_FIELDS}}


def _describe(fields: list[dict]) -> list[str]:
    """A legend label per run that names only what differs between the runs (the model when nothing does)."""
    keys = sorted({k for f in fields for k in f} - {"target_text"}, key=lambda k: (k != "model", k))
    differing = [k for k in keys if len({repr(f.get(k)) for f in fields}) > 1]
    if not differing:
        return [str(f.get("model", "?")) for f in fields]
    short = lambda v: (s if len(s := str(v)) <= 40 else s[:37] + "...")
    return [", ".join(f"{k}={short(f.get(k))}" if k != "model" else short(f.get(k)) for k in differing) for f in fields]


def budget_series(rows, table: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """Attack success (%) against eps (x 1/255), one line per group of runs that differ in the budget
    alone; each line's label names what sets it apart from the other lines."""
    groups: dict[str, tuple[dict, list[tuple[float, float]]]] = {}
    for row, r in zip(rows, table):
        if r.get("asr") is None or r.get("eps_value") is None or row.spec.get("norm") == "none":
            continue
        fields = _comparable(row)
        key = repr(sorted(fields.items(), key=lambda kv: kv[0]))
        groups.setdefault(key, (fields, []))[1].append((float(r["eps_value"]) * 255, r["asr"]))
    labels = _describe([fields for fields, _ in groups.values()])
    return {label: sorted(points) for label, (_, points) in zip(labels, groups.values())}


def legend_below(ax) -> None:
    """The legend under the x-axis label, never over the lines: in two columns when it is long."""
    entries = len(ax.get_legend_handles_labels()[1])
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.24), ncol=2 if entries > 3 else 1, frameon=False)


def asr_figure(rows, table: list[dict]):
    """The budget plot (matplotlib figure), or None when no line has two budgets to join (a lone dot
    is no curve: `budget_sentence` says it in words)."""
    series = budget_series(rows, table)
    if not any(len(points) >= CURVE_POINTS for points in series.values()):
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=110)
    for label, points in sorted(series.items()):
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", label=label)
    ax.set(xlabel="budget eps (x 1/255)", ylabel="attack success (%)", ylim=(-3, 103), title="Attack success vs budget")
    xs = [x for pts in series.values() for x, _ in pts]
    if max(xs) > 4 * max(1e-9, min(xs)):
        ax.set_xscale("log", base=2)
        plain_log_ticks(ax)
    ax.grid(alpha=0.3)
    legend_below(ax)
    return fig


def budget_sentence(series: dict[str, list[tuple[float, float]]]) -> str:
    """What a budget plot with no line would have shown, in words: each run's success at its budget."""
    runs = "; ".join(f"{label} {pct(y, unit=' %')} at eps {x:g}/255" for label, points in sorted(series.items()) for x, y in points)
    return f"One budget per comparable group of runs, so no curve to draw: {runs}."


def asr_vs_eps(rows, table: list[dict]) -> bytes | None:
    fig = asr_figure(rows, table)
    return png_of(fig) if fig else None


def _curve(art) -> list[float] | None:
    curve = art.get("record", {}).get("artifacts", {}).get("loss_curve", {}).get("csv")
    path = art["folder"] / curve if isinstance(curve, str) else None
    if path is None or not path.is_file():
        return None
    try:
        with open(path, newline="") as f:
            return [float(line["mean"]) for line in csv.DictReader(f)]
    except (OSError, KeyError, ValueError, TypeError):
        return None  # a curve being written or damaged: the table row still shows


def loss_figure(rows):
    """Mean attack loss per step, one colour and one legend entry per row (its shards or repeats share
    both), labelled by what differs between the rows; at most MAX_CURVES rows."""
    drawn = [(row, curves) for row in rows
             if (curves := [c for art in row.artifacts if (c := _curve(art)) and len(c) >= CURVE_POINTS])]
    drawn = drawn[:MAX_CURVES]
    if not drawn:
        return None
    labels = _describe([{**_comparable(row), "eps": eps_label(row.spec.get("eps"), row.spec.get("norm"))}
                        for row, _ in drawn])
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=110)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, ((row, curves), label) in enumerate(zip(drawn, labels)):
        for j, values in enumerate(curves):
            ax.plot(values, label=label if j == 0 else "_nolegend_", lw=1.2, color=colours[i % len(colours)])
    ax.set(xlabel="PGD step", ylabel="mean loss", title="Attack loss curves")
    if all(v > 0 for _, curves in drawn for values in curves for v in values):
        ax.set_yscale("log")
        plain_log_ticks(ax)
    ax.grid(alpha=0.3)
    legend_below(ax)
    return fig


def loss_curves(rows) -> bytes | None:
    fig = loss_figure(rows)
    return png_of(fig) if fig else None


def hover(row) -> dict[str, str]:
    m = row.metrics
    headline = row.spec.get("headline", "syntax")
    def rates_of(value) -> str:  # `utility` is not in the record's checked shape: anything may be there
        items = value.items() if isinstance(value, dict) else []
        return ", ".join(f"{k} {100 * v:.1f}%" for k, v in items if isinstance(v, (int, float)) and not isinstance(v, bool))

    rates, utility = rates_of(m.get("asr")), rates_of(m.get("utility"))
    out = {"asr": f"success measure {headline}; every measure: {rates or '?'}"}
    if utility:
        out["clean_baseline"] = f"benign behaviour kept: {utility}"
    return out


def samples(row) -> list[SampleView]:
    """Each attacked image: clean and adversarial PNGs, and the adversarial image's held-out answers."""
    headline = row.spec.get("headline", "syntax")
    views = []
    for art in row.artifacts:
        folder = art["folder"]
        for s in art.get("samples", []):
            key = str(s.get("key") or s.get("image"))
            if not answered(s):
                views.append(SampleView(key, f"{s.get('status')}: {s.get('reason', '')}"))
                continue
            images = [(k, p) for k in ("clean_png", "adversarial_png") if (p := inside(folder, s.get(k))) is not None]
            outputs = s.get("outputs") if isinstance(s.get("outputs"), dict) else {}  # unchecked by the shape
            outputs = outputs.get("adversarial") if isinstance(outputs.get("adversarial"), list) else []
            exchanges = [(str(o.get("prompt", "")), str(o.get("output", "")), "success" if o.get(headline) else "—")
                         for o in outputs if isinstance(o, dict)]
            rate = (s.get("adversarial") or {}).get(headline)
            verdict = f"{headline} {100 * rate:.0f}% of held-out prompts" if isinstance(rate, (int, float)) else ""
            views.append(SampleView(key, verdict, [(k, p) for k, p in images if p.is_file()], exchanges))
    return views


def figures(rows, table: list[dict]) -> list[Figure]:
    drawn = [("asr_vs_eps", "Attack success vs budget (a line joins runs that differ in the budget alone)",
              asr_vs_eps(rows, table)), ("loss_curves", "Loss curves", loss_curves(rows))]
    out = [Figure(name, caption, png) for name, caption, png in drawn if png]
    series = budget_series(rows, table)
    if series and not drawn[0][2]:
        out.insert(0, Figure("asr_vs_eps", "Attack success vs budget", text=budget_sentence(series)))
    return out


SECTION = Section(key="attacks", title="Visual attacks (success %, measured on saved PNGs)", columns=COLUMNS,
                  cells=cells, figures=figures, images=images, group_by=("case", "target", "success_measure"), hover=hover,
                  samples=samples, headline="asr",
                  about="Attack success (%): how often the attacked image, judged as a saved PNG, makes the model do "
                        "the target on held-out prompts (clean_baseline: the unattacked image); higher means a stronger "
                        "attack, a less robust model.")


def sections() -> list[Section]:
    """The generic attack table, then each registered case's own tables (CASE_SECTIONS),
    which take that case's records; the generic table keeps the records of every other case."""
    own = {name: found() for name, found in CASE_SECTIONS.items()}
    own = {name: found for name, found in own.items() if found}

    def generic(row) -> bool:
        return row.spec.get("case", "tool_call") not in own

    def of_case(name: str, section):
        return replace(section, accepts=lambda row: row.spec.get("case") == name and section.accepts(row))

    return [replace(SECTION, accepts=generic)] + [of_case(name, s) for name, found in own.items() for s in found]


VIEWS = WorkloadViews(sections)  # the `views:visual_attack` entry
