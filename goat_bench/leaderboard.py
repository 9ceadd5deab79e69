"""The GOAT-Bench leaderboard section in the paper's layout (Table 2): one "Acc / F1" cell per task,
Overall first, the 95% bootstrap intervals on hover; the paper's own rows beside measured ones; a
bar plot of macro-F1 per task; and each row's memes (image, caption, answer, verdict) for the
page's sample browser."""

from __future__ import annotations

from pathlib import Path

from goat_bench.data import load_task
from goat_bench.tasks import TASKS, paper_rows
from mmsafety.errors import UserError
from mmsafety.leaderboard.plots import png_of, pyplot
from mmsafety.leaderboard.tables import num
from mmsafety.leaderboard.views import Figure, ReportedRow, SampleView, Section, WorkloadViews
from mmsafety.numbers import interval, pct
from mmsafety.record_models import answered

# Markdown and HTML show these; CSV and JSON keep the separate numbers (hatefulness_acc, ..._f1) too.
COLUMNS = ["model", "status", "scoring", "overall"] + list(TASKS) + ["memes", "skipped", "note"]


def acc_f1(acc, f1) -> str | None:
    """The paper's cell, one decimal as every percent people read (mmsafety.numbers): "71.7 / 71.3";
    None when neither was measured."""
    if acc is None and f1 is None:
        return None
    return " / ".join(pct(v) or "–" for v in (acc, f1))


def cells(row) -> dict:
    per_task, overall = row.metrics.get("per_task", {}), row.metrics.get("overall", {})
    spec = row.spec
    out = {"model": row.model, "status": row.status,
           "scoring": spec.get("scoring", "reported" if row.reported else ""),
           "prompt": (spec.get("prompt") or {}).get("name", "")}
    out["overall_acc"], out["overall_f1"] = num(overall.get("accuracy")), num(overall.get("macro_f1"))
    # An Overall without one of the five tasks says so in its own cell (markdown, page) and column (CSV, JSON).
    missing = [] if row.reported else [t for t in TASKS if not (per_task.get(t) or {}).get("n")]
    out["overall_missing"] = ", ".join(missing)
    out["overall"] = acc_f1(out["overall_acc"], out["overall_f1"])
    if out["overall"] is not None and missing:
        # Short (cells do not wrap on the page); the hover and `overall_missing` name the tasks.
        out["overall"] += f" ({len(TASKS) - len(missing)}/{len(TASKS)} tasks)"
    for task in TASKS:
        m = per_task.get(task, {})
        out[f"{task}_acc"], out[f"{task}_f1"] = num(m.get("accuracy")), num(m.get("macro_f1"))
        out[task] = acc_f1(out[f"{task}_acc"], out[f"{task}_f1"])
    out["memes"] = None if row.reported else sum(m.get("n", 0) for m in per_task.values())
    out["skipped"] = None if row.reported else sum(m.get("skipped", 0) for m in per_task.values())
    out["shards"] = row.shards
    out["root"] = spec.get("root") or ""
    out["note"] = row.source if row.reported else row.note
    return out


def hover(row) -> dict[str, str]:
    """The 95% bootstrap intervals a measured task cell stands for; what a reported cell is."""
    if row.reported:
        return {c: f"reported by {row.source}" for c in ["overall", *TASKS]}
    out = {}
    for task, m in row.metrics.get("per_task", {}).items():
        ci = m.get("ci95") if isinstance(m, dict) else None
        ci = ci if isinstance(ci, dict) else {}  # not in the record's checked shape: anything may be there
        acc, f1 = interval(ci.get("accuracy")), interval(ci.get("macro_f1"))
        if acc or f1:
            out[task] = f"95% bootstrap interval: accuracy {acc or '?'}, macro-F1 {f1 or '?'} (n={m.get('n', '?')})"
    n = row.metrics.get("overall", {}).get("n")
    per_task = row.metrics.get("per_task", {})
    missing = [t for t in TASKS if not (per_task.get(t) or {}).get("n")]
    out["overall"] = f"accuracy pooled over {n} memes; F1 the mean of the per-task macro-F1" + (
        f"; without {', '.join(missing)} (no meme scored), so not the paper's Overall" if missing else "")
    return out


def f1_figure(goat_rows: list[dict]):
    """Macro-F1 per task, one bar per leaderboard row (reported rows hatched); the legend sits below
    the axes so it never covers a bar. Returns the matplotlib figure, or None without F1 values."""
    rows = [r for r in goat_rows if any(r.get(f"{t}_f1") is not None for t in TASKS)]
    if not rows:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.4 + 0.18 * ((len(rows) + 2) // 3)), dpi=110)
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        xs = [t + (i - (len(rows) - 1) / 2) * width for t in range(len(TASKS))]
        ys = [r[f"{t}_f1"] or 0 for t in TASKS]
        reported = r["status"] == "reported"
        model = r["model"] if len(r["model"]) <= 40 else r["model"][:37] + "..."  # a legend line, not a page
        label = model + (" (reported)" if reported else f" ({r['scoring']}, {r.get('data') or 'data ?'})")
        ax.bar(xs, ys, width, label=label, hatch="//" if reported else None, alpha=0.6 if reported else 0.9)
    ax.set_xticks(range(len(TASKS)), TASKS, fontsize=8)
    ax.set(ylabel="macro-F1 (%)", ylim=(0, 105), title="GOAT-Bench macro-F1 per task")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    return fig


def figures(rows, table: list[dict]) -> list[Figure]:
    fig = f1_figure(table)
    return [Figure("f1_per_task", "Macro-F1 per task", png_of(fig))] if fig else []


def _memes_by_id(root: str, task: str, image_root: str | None = None) -> dict:
    """The task's memes under `root` by id (caption, image path, looked up under `image_root` too);
    empty when the data is not there."""
    try:
        return {m.id: m for m in load_task(root, task, image_root if isinstance(image_root, str) else None)}
    except (UserError, OSError, ValueError):
        return {}


def _logprob(value) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "?"


def samples(row) -> list[SampleView]:
    """Each scored meme of the row: its image and caption from the dataset the record names, the
    model's answer, and whether it matched the label."""
    views, datasets = [], {}
    root = row.spec.get("root")
    for art in row.artifacts:
        for s in art.get("samples", []):
            task, sid = str(s.get("task")), str(s.get("id"))
            if isinstance(root, str) and task not in datasets:
                datasets[task] = _memes_by_id(root, task, row.spec.get("image_root"))
            meme = datasets.get(task, {}).get(sid)
            images = [("meme", meme.image_path)] if meme is not None and isinstance(meme.image_path, Path) else []
            if not answered(s):
                verdict = f"{s.get('status')}: {s.get('reason', '')}"
            else:
                verdict = ("correct" if s.get("correct") else "wrong") + f" (label {s.get('label')})"
            answer = s.get("answer")
            if answer is None and s.get("pred") is not None:
                answer = f"{'Yes' if s.get('pred') == 1 else 'No'} (log p Yes {_logprob(s.get('logprob_yes'))}, " \
                         f"No {_logprob(s.get('logprob_no'))})"
            views.append(SampleView(f"{task} / {sid}", verdict, images,
                                    [(meme.text if meme is not None else "(caption not found in the dataset)",
                                      "" if answer is None else str(answer), "")]))
    return views


SECTION = Section(key="goat_bench", title="GOAT-Bench (accuracy / macro-F1, %)", columns=COLUMNS,
                  cells=cells, figures=figures, hover=hover, samples=samples, headline="overall",
                  about="Accuracy / macro-F1 (%) of the model's yes/no verdict on each task's memes (hateful, "
                        "misogynistic, offensive, sarcastic, harmful or not); higher means it recognises them better.")


def reported_rows() -> list[ReportedRow]:
    """GOAT-Bench's Table 2 rows (goat_bench.tasks.paper_rows), shown beside the measured ones."""
    return [ReportedRow(r["model"], r["source"], {"tasks": list(r["per_task"])},
                        {"per_task": r["per_task"], "overall": r["overall"]}) for r in paper_rows()]


VIEWS = WorkloadViews(lambda: [SECTION], reported_rows)  # the `views:goat_bench` entry
