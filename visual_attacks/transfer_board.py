"""The transfer workload's leaderboard section: the transfer matrix.

Each transfer record is one cell: rows are the surrogate (or ensemble) an image was crafted on,
columns are victim x deploy transform, one matrix per case, target and budget (attack preset, eps and steps);
a cell is the attack success on the victim with the victim's clean baseline beside it. The table
holds one line per cell (every format: JSON, CSV, Markdown, HTML); the HTML page and the
leaderboard folder add a heat map per matrix.
"""

from __future__ import annotations

import re

from mmsafety.leaderboard.plots import png_of, pyplot
from mmsafety.leaderboard.tables import num
from mmsafety.leaderboard.views import Figure, Pivot, Section, WorkloadViews
from visual_attacks.deploy import deploy_label
from visual_attacks.leaderboard import eps_label, images

COLUMNS = ["case", "target", "attack", "eps", "steps", "surrogate", "victim", "deploy", "status", "cell", "asr", "clean_baseline",
           "images", "note"]


def surrogate_label(spec: dict) -> str:
    """`organism (seed 0) + organism (seed 1)` for an ensemble (`2 x organism (seed 0) + ...` when the
    weights differ); `+ EOT` when crafted with EOT."""
    names = [str(n) for n in spec.get("surrogates") or []] or ["?"]
    weights = spec.get("surrogate_weights")
    if isinstance(weights, list) and len(weights) == len(names) and len({str(w) for w in weights}) > 1:
        names = [f"{w:g} x {n}" if isinstance(w, (int, float)) else f"{w} x {n}" for w, n in zip(weights, names)]
    return " + ".join(names) + (" + EOT" if spec.get("eot") else "")


def cell_text(asr, clean) -> str | None:
    """`62.5 (clean 0.0)`: success % on the victim, its clean baseline % after the same transform."""
    if asr is None:
        return None
    return f"{asr:.1f} (clean {clean:.1f})" if clean is not None else f"{asr:.1f}"


def cells(row) -> dict:
    spec, m = row.spec, row.metrics
    headline = spec.get("headline", "syntax")
    asr, clean = m.get("asr", {}), m.get("clean_baseline", {})
    asr_pct = num(100 * asr[headline], 1) if asr.get(headline) is not None else None
    clean_pct = num(100 * clean[headline], 1) if clean.get(headline) is not None else None
    return {
        "case": spec.get("case"), "target": spec.get("target") or spec.get("caption") or "", "attack": spec.get("attack"),
        "eps": eps_label(spec.get("eps")) if spec.get("norm") != "none" else "unconstrained", "steps": spec.get("steps"),
        "surrogate": surrogate_label(spec), "victim": spec.get("victim") or row.model,
        "deploy": deploy_label(spec.get("deploy")), "status": row.status,
        "cell": cell_text(asr_pct, clean_pct), "asr": asr_pct, "clean_baseline": clean_pct,
        "success_measure": headline, "images": m.get("images"), "source_run": spec.get("source_run"),
        "deploy_steps": (spec.get("deploy") or {}).get("steps"), "note": row.note,
    }


def pooled(lines: list[dict]) -> dict:
    """One matrix cell from the table lines that fall in it (usually one; several when attack runs
    that differ only in what the matrix does not show, e.g. their seed, were judged alike): success
    and clean baseline averaged over their images, and how many runs that is."""
    measured = [line for line in lines if line["asr"] is not None]
    if not measured:
        return {"asr": None, "clean_baseline": None, "runs": len(lines)}
    weights = [line["images"] or 1 for line in measured]
    mean = lambda key: sum(w * line[key] for w, line in zip(weights, measured)) / sum(weights)  # noqa: E731
    cleans = all(line["clean_baseline"] is not None for line in measured)
    return {"asr": mean("asr"), "clean_baseline": mean("clean_baseline") if cleans else None, "runs": len(measured)}


def matrices(table: list[dict]) -> dict[tuple, dict]:
    """The table's lines grouped into matrices by (case, target, attack, eps, steps): for each, its
    row labels (surrogates), column labels (victim, deploy) and pooled cells {(row, column): cell}."""
    out: dict[tuple, dict] = {}
    for line in table:
        key = (line["case"], line["target"], line["attack"], line["eps"], line["steps"])
        m = out.setdefault(key, {"rows": [], "columns": [], "lines": {}})
        column = (line["victim"], line["deploy"])
        if line["surrogate"] not in m["rows"]:
            m["rows"].append(line["surrogate"])
        if column not in m["columns"]:
            m["columns"].append(column)
        m["lines"].setdefault((line["surrogate"], column), []).append(line)
    for m in out.values():
        m["rows"].sort()
        m["columns"].sort()
        m["cells"] = {where: pooled(lines) for where, lines in m.pop("lines").items()}
    return out


def short(percent: float) -> str:
    """12.5 -> "12.5", 50.0 -> "50": a heat-map cell's number, no rounding hidden."""
    return f"{percent:.1f}".rstrip("0").rstrip(".")


def heat_map(key: tuple, matrix: dict) -> bytes:
    """Success % per surrogate (rows) and victim x deploy (columns), the clean baseline in each cell."""
    # heavy, deferred to when this runs: numpy
    import numpy as np

    rows, columns = matrix["rows"], matrix["columns"]
    values = np.full((len(rows), len(columns)), np.nan)
    for i, r in enumerate(rows):
        for j, c in enumerate(columns):
            cell = matrix["cells"].get((r, c))
            if cell is not None and cell["asr"] is not None:
                values[i, j] = cell["asr"]
    plt = pyplot()
    label_width = 0.06 * max(len(r) for r in rows)  # inches for the longest row label, at font size 7
    fig, ax = plt.subplots(figsize=(2.4 + label_width + 1.5 * len(columns), 1.6 + 0.6 * len(rows)), dpi=110)
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for i, r in enumerate(rows):
        for j, c in enumerate(columns):
            cell = matrix["cells"].get((r, c))
            if cell is None or cell["asr"] is None:
                ax.text(j, i, "—", ha="center", va="center", fontsize=8, color="gray")
                continue
            clean = "" if cell["clean_baseline"] is None else f"\nclean {short(cell['clean_baseline'])}"
            runs = f"\n({cell['runs']} runs)" if cell["runs"] > 1 else ""
            ax.text(j, i, f"{short(cell['asr'])}{clean}{runs}", ha="center", va="center", fontsize=8,
                    color="white" if cell["asr"] < 60 else "black")
    ax.set_xticks(range(len(columns)), [f"{v}\n{d}" for v, d in columns], fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set(xlabel="victim / deploy transform", ylabel="crafted on")
    case, target, attack, eps, steps = key
    ax.set_title(f"Transfer: {case} · {target} · {attack} · eps {eps} · {steps} steps (success %)", fontsize=8)
    fig.colorbar(image, ax=ax, label="attack success (%)", fraction=0.046, pad=0.04)
    return png_of(fig)


def figure_name(key: tuple) -> str:
    return "transfer_" + re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(str(k) for k in key)).strip("-")


def figures(rows, table: list[dict]) -> list[Figure]:
    found = matrices(table)
    return [Figure(figure_name(key), "Transfer matrix: {} · {} · {} · eps {} · {} steps".format(*key),
                   heat_map(key, matrix)) for key, matrix in sorted(found.items(), key=lambda kv: str(kv[0]))]


def pivots(table: list[dict]) -> list[Pivot]:
    """Each matrix as a table: one line per surrogate (or ensemble), one column per victim / deploy
    transform, each cell `success (clean baseline)` pooled as in the heat map."""
    out = []
    for key, matrix in sorted(matrices(table).items(), key=lambda kv: str(kv[0])):
        names = {column: f"{victim} / {deploy}" for column in matrix["columns"] for victim, deploy in [column]}
        lines = []
        for row in matrix["rows"]:
            line = {"crafted on": row}
            for column, name in names.items():
                cell = matrix["cells"].get((row, column))
                text = cell_text(cell["asr"], cell["clean_baseline"]) if cell else None
                line[name] = f"{text} ({cell['runs']} runs)" if text and cell["runs"] > 1 else text
            lines.append(line)
        title = "Transfer matrix: {} · {} · {} · eps {} · {} steps".format(*key)
        out.append(Pivot(title, ["crafted on", *names.values()], lines))
    return out


SECTION = Section(key="transfer", title="Transfer (success % on the victim, clean baseline in brackets)",
                  columns=COLUMNS, cells=cells, figures=figures, images=images,
                  group_by=("case", "target", "attack", "eps", "steps"),  # one block per matrix
                  pivots=pivots, headline="asr",
                  about="Transfer success (%): how often an image crafted on the surrogate makes the victim do the target "
                        "(clean: the victim on the unattacked image); higher means the attack transfers better.")

VIEWS = WorkloadViews(lambda: [SECTION])  # the `views:transfer` entry
