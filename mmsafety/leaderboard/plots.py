"""Plot helpers for the workloads' leaderboard figures (matplotlib, Agg) as PNG bytes.

Figures read right: a log axis's ticks are plain numbers (`0.1`, `10`), not the raw mathtext that
`$...$` turns into once math parsing is off for data labels; and the saved image holds every legend
and label (the figure grows rather than clip them).
"""

from __future__ import annotations

import io

# A curve needs at least this many points; fewer read as a stray dot (plots say so in a sentence).
CURVE_POINTS = 2


def pyplot():
    # heavy, deferred to when this runs: matplotlib
    import matplotlib

    matplotlib.use("Agg")
    # Labels come from data (captions, model names): `$...$` must print as text, not parse as math,
    # which garbles a label or raises on invalid TeX.
    matplotlib.rcParams["text.parse_math"] = False
    # heavy, deferred to when this runs: matplotlib
    import matplotlib.pyplot as plt

    return plt


def tick_text(value: float, _pos=None) -> str:
    """A log-axis tick as a plain number: 0.001, 0.5, 10, 2e+04 (no mathtext)."""
    return f"{value:g}"


def plain_log_ticks(ax) -> None:
    """Plain-number tick labels on the log axes of `ax` (matplotlib's log formatter writes
    `$\\mathdefault{10^{-1}}$`, which prints as that text when math parsing is off); minor ticks
    unlabelled unless an axis spans less than a decade (then they carry the only numbers)."""
    # heavy, deferred to when this runs: matplotlib
    from matplotlib.ticker import FuncFormatter, NullFormatter

    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale != "log":
            continue
        axis.set_major_formatter(FuncFormatter(tick_text))
        low, high = sorted(abs(v) for v in (axis.get_view_interval()))
        narrow = low > 0 and high / low < 10
        axis.set_minor_formatter(FuncFormatter(tick_text) if narrow else NullFormatter())


def fit(fig) -> None:
    """Lay the figure out so every legend and label is inside it: tight_layout, then, while a
    legend still reaches past an edge, a taller figure (legends sit below the axes)."""
    for ax in fig.axes:
        plain_log_ticks(ax)
    for _ in range(6):
        fig.tight_layout()
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        box = fig.bbox
        over_x = over_y = 0.0
        for ax in fig.axes:
            legend = ax.get_legend()
            extents = [legend.get_window_extent(renderer) if legend is not None else None,
                       ax.title.get_window_extent(renderer) if ax.title.get_text() else None,
                       ax.xaxis.get_tightbbox(renderer), ax.yaxis.get_tightbbox(renderer)]  # ticks in view, label
            for extent in extents:
                if extent is None or not extent.width:
                    continue
                over_y = max(over_y, box.y0 - extent.y0, extent.y1 - box.y1)
                over_x = max(over_x, box.x0 - extent.x0, extent.x1 - box.x1)
        if over_x <= 0.5 and over_y <= 0.5:
            return
        width, height = fig.get_size_inches()
        fig.set_size_inches(width + 2 * max(0.0, over_x + 8) / fig.dpi * (over_x > 0.5),
                            height + max(0.0, over_y + 8) / fig.dpi * (over_y > 0.5))


def png_of(fig) -> bytes:
    """The figure as PNG bytes (laid out by `fit`); the figure is closed."""
    buf = io.BytesIO()
    fit(fig)
    fig.savefig(buf, format="png")
    pyplot().close(fig)
    return buf.getvalue()
