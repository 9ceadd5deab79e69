"""The leaderboard's plots say what they show: a budget line joins only runs that differ in the budget
alone and its legend names what sets the lines apart; loss-curve legends have one entry per row; the
F1 legend covers no bar; an unconstrained attack is not drawn or labelled as a budget of 255/255."""

from __future__ import annotations

import re

import pytest

from goat_bench import leaderboard as goat_board
from mmsafety.leaderboard.collect import Row, reference_rows
from visual_attacks import leaderboard as attack_board


def attack_row(eps: float, asr: float, steps: int = 500, objective: str = "tool_misuse", images: int = 4,
               norm: str = "linf", artifacts: list | None = None) -> Row:
    spec = {"case": "tool_call", "target": "send_email", "target_text": "<function.send_email ...>",
            "attack": "tool_call", "objective": objective, "norm": norm, "eps": eps, "step_size": eps / 8,
            "steps": steps, "images": images, "headline": "syntax", "notes": [f"run at eps {eps}"]}
    metrics = {"images": images, "asr": {"syntax": asr}, "clean_baseline": {"syntax": 0.0}, "stealth": {}}
    return Row("visual_attack", "organism", spec, metrics=metrics, artifacts=artifacts or [])


def test_a_budget_line_joins_only_runs_that_differ_in_the_budget():
    rows = [attack_row(8 / 255, 0.2), attack_row(16 / 255, 0.5), attack_row(32 / 255, 0.8),  # one comparable sweep
            attack_row(16 / 255, 0.3, steps=200), attack_row(32 / 255, 0.6, steps=200),      # fewer steps
            attack_row(8 / 255, 0.1, objective="target_string"),                              # another objective
            attack_row(16 / 255, 0.4, images=20)]                                             # more images
    table = [attack_board.cells(r) for r in rows]
    series = attack_board.budget_series(rows, table)
    assert sorted(series.values()) == sorted([[(8.0, 20.0), (16.0, 50.0), (32.0, 80.0)], [(16.0, 30.0), (32.0, 60.0)],
                                              [(8.0, 10.0)], [(16.0, 40.0)]])
    labels = {tuple(points): label for label, points in series.items()}
    assert labels[((16.0, 30.0), (32.0, 60.0))] == "images=4, objective=tool_misuse, steps=200"
    assert labels[((16.0, 40.0),)] == "images=20, objective=tool_misuse, steps=500"
    fig = attack_board.asr_figure(rows, table)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert sorted(legend) == sorted(series) and not any(re.search(r"\beps=|notes=|step_size=", label) for label in legend)
    drawn = sorted(tuple(zip(line.get_xdata(), line.get_ydata())) for line in fig.axes[0].get_lines())
    assert drawn == sorted(tuple(points) for points in series.values())


def test_an_unconstrained_attack_is_not_a_budget_of_255():
    unconstrained = attack_row(1.0, 0.9, norm="none")
    cells = attack_board.cells(unconstrained)
    assert cells["eps"] == "unconstrained" and cells["eps_value"] is None
    rows = [attack_row(8 / 255, 0.2), unconstrained]
    assert attack_board.budget_series(rows, [attack_board.cells(r) for r in rows]) == {"organism": [(8.0, 20.0)]}
    assert attack_board.eps_label(8 / 255, "linf") == "8/255" and attack_board.eps_label(0.3, "l2") == "0.3"


def test_loss_curve_legend_has_one_entry_per_row(tmp_path):
    """Two rows, each merged from two records (shards): two legend entries that name the budget, each
    row's curves in one colour."""
    rows = []
    for eps in (8 / 255, 16 / 255):
        arts = []
        for shard in (0, 1):
            name = f"curve-{round(eps * 255)}-{shard}.csv"
            (tmp_path / name).write_text("step,mean\n" + "".join(f"{i},{1 / (i + 1 + shard)}\n" for i in range(20)))
            arts.append({"folder": tmp_path, "record": {"artifacts": {"loss_curve": {"csv": name}}}})
        rows.append(attack_row(eps, 0.5, artifacts=arts))
    ax = attack_board.loss_figure(rows).axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["eps=8/255", "eps=16/255"]
    lines = ax.get_lines()
    assert len(lines) == 4 and lines[0].get_color() == lines[1].get_color() != lines[2].get_color() == lines[3].get_color()


def test_f1_legend_covers_no_bar():
    from goat_bench.workload import GoatBench  # noqa: F401  (registers the workload whose reported rows we need)

    measured = Row("goat_bench", "organism", {"scoring": "logprob", "synthetic": True}, data="synthetic",
                   metrics={"per_task": {t: {"accuracy": 100.0, "macro_f1": 100.0, "n": 20} for t in goat_board.TASKS}})
    rows = [measured] + reference_rows([measured])
    table = [{**goat_board.cells(r), "data": r.data} for r in rows]
    fig = goat_board.f1_figure(table)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    bars = [patch.get_window_extent(renderer) for patch in ax.patches]
    assert len(bars) == 5 * len(rows)
    assert not [b for b in bars if b.overlaps(legend)]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "organism (logprob, synthetic)" and labels[1] == "GPT-4V (reported)"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    from mmsafety.leaderboard.plots import pyplot

    pyplot().close("all")
