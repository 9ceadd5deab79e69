"""Progress of a long loop: a tqdm bar where someone watches (a terminal, a notebook), plain log
lines where no one does (a SLURM or nohup log file, a pipe).

Off a terminal, tqdm rewrites its bar with carriage returns that a log file keeps: every refresh
is a copy, and closing the bar repeats its last state. There a line is logged every `every_s`
seconds (30, or $MMSAFETY_LOG_EVERY_S) and once at the end instead, through the `mmsafety.job` logger
(so it also reaches eval.log / attack.log).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from time import monotonic  # by name, so a test can set this module's clock without touching time.monotonic

LOGGER = "mmsafety.job"


def interactive() -> bool:
    """stderr is a terminal, or this runs in a Jupyter kernel (where tqdm.auto draws a widget)."""
    if sys.stderr.isatty():
        return True
    try:
        # optional: IPython may be missing, handled here
        from IPython import get_ipython

        shell = get_ipython()
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:  # IPython absent or not a kernel
        return False


class LoggedProgress:
    """The part of tqdm's interface the loops use (update, set_postfix, close), as log lines."""

    def __init__(self, total: int, desc: str, unit: str, every_s: float = 30.0, initial: int = 0):
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.n, self.initial, self.postfix = initial, initial, ""  # initial: done before this resume
        self.start = self.last = monotonic()
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        if monotonic() - self.last >= self.every_s:
            self._line("")

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._line(" done" if self.n >= self.total else " (stopped)")

    def _line(self, suffix: str) -> None:
        self.last = monotonic()
        seconds = self.last - self.start
        done = self.n - self.initial  # the rate is this invocation's
        rate = f", {done / seconds:.2f} {self.unit}s/s" if seconds > 0 and done else ""
        extra = f", {self.postfix}" if self.postfix else ""
        logging.getLogger(LOGGER).info(f"{self.desc}: {self.n}/{self.total} {self.unit}s{suffix} "
                                       f"in {seconds:.1f}s{rate}{extra}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def log_every_s() -> float:
    """Seconds between progress lines in a log file: $MMSAFETY_LOG_EVERY_S, else 30."""
    try:
        return max(0.0, float(os.environ.get("MMSAFETY_LOG_EVERY_S", "30")))
    except ValueError:
        logging.getLogger(LOGGER).warning("MMSAFETY_LOG_EVERY_S is not a number of seconds; using 30")
        return 30.0


def progress(total: int, desc: str, unit: str, initial: int = 0):
    """A tqdm bar when interactive (in a notebook a widget, or text where ipywidgets is not installed,
    rather than tqdm.auto's "IProgress not found" warning), else LoggedProgress. `initial`: what a resumed
    run had done before (the counter starts there, out of the whole `total`)."""
    if not interactive():
        return LoggedProgress(total, desc, unit, log_every_s(), initial)
    if importlib.util.find_spec("ipywidgets") is not None:
        # optional dependency: tqdm.auto draws with ipywidgets (the notebooks extra), chosen here at run time
        from tqdm.auto import tqdm
    else:
        # the text bar where ipywidgets is absent (tqdm.auto would warn "IProgress not found")
        from tqdm.std import tqdm
    return tqdm(total=total, initial=initial, unit=unit, desc=desc, dynamic_ncols=True, mininterval=1.0)
