"""How numbers read, in one place (the rule in docs/leaderboard.md, "Numbers").

People read rates as percent with one decimal, the 95 % interval after the value where there is one:
`81.2`, `81.2 [62.5, 93.8]`, or `81.2 %` where no heading says "%". Records keep the unrounded value
in the unit their schema says (rates as fractions 0-1; GOAT-Bench's accuracy and F1 in percent, as the
paper's Table 2). Every console summary, Markdown table and page cell goes through these functions.
"""

from __future__ import annotations

DECIMALS = 1


def _real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def interval(ci) -> str | None:
    """`[62.5, 93.8]` of an interval already in percent; None when `ci` is not two numbers."""
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_real(v) for v in ci):
        return f"[{ci[0]:.{DECIMALS}f}, {ci[1]:.{DECIMALS}f}]"
    return None


def pct(value, ci=None, unit: str = "") -> str | None:
    """A value already in percent as people read it: `81.2`, with `unit=" %"` `81.2 %`, with an
    interval `81.2 [62.5, 93.8]`; None for a missing value (an empty cell)."""
    if not _real(value):
        return None
    text = f"{value:.{DECIMALS}f}{unit}"
    bounds = interval(ci)
    return f"{text} {bounds}" if bounds else text


def pct_of(fraction, ci=None, unit: str = "") -> str | None:
    """A fraction (0-1, as records keep rates) as people read it: 0.8125 -> `81.2`; `ci` in fractions too."""
    if not _real(fraction):
        return None
    scaled = [100 * v for v in ci] if interval(ci) else None
    return pct(100 * fraction, scaled, unit)
