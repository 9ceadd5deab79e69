"""Plot helpers for the workloads' leaderboard figures (matplotlib, Agg) as PNG bytes."""

from __future__ import annotations

import io


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    # Labels come from data (captions, model names): `$...$` must print as text, not parse as math,
    # which garbles a label or raises on invalid TeX.
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt


def png_of(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    pyplot().close(fig)
    return buf.getvalue()
