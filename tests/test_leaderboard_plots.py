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


def _curve_rows(tmp_path, values_by_eps: dict) -> list[Row]:
    rows = []
    for eps, values in values_by_eps.items():
        name = f"curve-{round(eps * 255)}.csv"
        (tmp_path / name).write_text("step,mean\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)))
        rows.append(attack_row(eps, 0.5, artifacts=[{"folder": tmp_path, "record": {"artifacts": {"loss_curve": {"csv": name}}}}]))
    return rows


def test_log_axis_ticks_read_as_plain_numbers(tmp_path):
    """The loss curve's log y-axis (three decades) and the budget plot's log x-axis: every tick label the
    drawn figure holds is a number (float() reads it back), no `$`, no mathtext; the numbers are the
    tick positions."""
    rows = _curve_rows(tmp_path, {8 / 255: [10 ** (-3 * i / 29) for i in range(30)]})
    fig = attack_board.loss_figure(rows)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    shown = [(t.get_text(), t.get_position()[1]) for t in ax.get_yticklabels() if t.get_text()]
    assert len(shown) >= 3
    for text, position in shown:
        assert "$" not in text and "mathdefault" not in text and float(text) == pytest.approx(position, rel=1e-6)
    budgets = [attack_row(e / 255, a) for e, a in ((1, 0.1), (4, 0.4), (16, 0.7), (64, 0.9))]
    fig = attack_board.asr_figure(budgets, [attack_board.cells(r) for r in budgets])
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    shown = [(t.get_text(), t.get_position()[0]) for t in ax.get_xticklabels() if t.get_text()]
    assert {float(text) for text, _ in shown} >= {1.0, 4.0, 16.0, 64.0}
    assert all("$" not in text and float(text) == pytest.approx(x) for text, x in shown)


def test_one_budget_is_a_sentence_not_a_dot():
    """Runs at one budget each: no budget plot (a lone dot is no curve); a sentence with each run's
    success at its budget instead. Two budgets in one group draw the plot."""
    one = [attack_row(8 / 255, 0.8125)]
    figures = attack_board.figures(one, [attack_board.cells(r) for r in one])
    assert [(f.name, bool(f.png)) for f in figures] == [("asr_vs_eps", False)]
    assert "81.2 % at eps 8/255" in figures[0].text and "no curve" in figures[0].text
    two_models = one + [attack_row(16 / 255, 0.5, steps=200)]  # different steps: two groups of one point
    assert attack_board.asr_figure(two_models, [attack_board.cells(r) for r in two_models]) is None
    sweep = one + [attack_row(16 / 255, 0.9)]
    figures = attack_board.figures(sweep, [attack_board.cells(r) for r in sweep])
    assert [(f.name, bool(f.png), f.text) for f in figures] == [("asr_vs_eps", True, "")]


def test_a_one_step_loss_curve_is_not_drawn(tmp_path):
    rows = _curve_rows(tmp_path, {8 / 255: [0.5]})
    assert attack_board.loss_figure(rows) is None


def test_every_legend_fits_inside_its_image(tmp_path):
    """A dozen rows with long labels in each plot: the saved PNG's border is blank on all four sides (a
    legend or label cut at the image's edge would draw into it)."""
    import io

    from PIL import Image

    from mmsafety.leaderboard.plots import png_of

    rows = _curve_rows(tmp_path, {e / 255: [1 / (i + e) for i in range(10)] for e in range(1, 13)})
    for i, row in enumerate(rows):
        row.model = f"a-rather-long-model-name-number-{i}-" + "x" * 20
    budgets = [attack_row(e / 255, e / 20, steps=s) for e in (4, 8, 16) for s in (10, 20, 40, 80)]
    for i, row in enumerate(budgets):
        row.model = f"model-with-a-long-name-{i % 4}"
    goat = [Row("goat_bench", f"model-{i}-" + "y" * 30, {"scoring": "logprob"}, data="real",
                metrics={"per_task": {t: {"accuracy": 50.0 + i, "macro_f1": 40.0 + i, "n": 20} for t in goat_board.TASKS}})
            for i in range(12)]
    goat_table = [{**goat_board.cells(r), "data": r.data} for r in goat]
    for name, fig in (("loss", attack_board.loss_figure(rows)),
                      ("budget", attack_board.asr_figure(budgets, [attack_board.cells(r) for r in budgets])),
                      ("f1", goat_board.f1_figure(goat_table))):
        assert len(fig.axes[0].get_legend().get_texts()) == {"loss": 12, "budget": 4, "f1": 12}[name]  # budget: 4 step counts
        image = Image.open(io.BytesIO(png_of(fig))).convert("L")
        w, h = image.size
        for box in ((0, 0, w, 2), (0, h - 2, w, h), (0, 0, 2, h), (w - 2, 0, w, h)):
            assert image.crop(box).getextrema() == (255, 255), (name, image.size, box)

