"""The Hydra side of every tracker: after each job, read its run folder and hand it to the tracker; a sweep's
jobs are grouped by the sweep folder (which every job knows, under any launcher, so no state passes between
processes). Tracking never fails a job: its record is on disk, and a tracker that fails is one warning line.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from mmsafety.trackers.job import JobRun


def require_extra(module: str, extra: str) -> None:
    """A missing optional tracker library is one line and exit status 2, before any job runs (Hydra builds
    its callbacks first; SystemExit passes through its instantiate, which wraps Exceptions in tracebacks)."""
    try:
        importlib.import_module(module)
    except ImportError:
        print(f"error: +callbacks={extra} needs the {module} package: pip install \"mmsafety[{extra}]\"", file=sys.stderr)
        sys.exit(2)


class TrackerCallback(Callback):
    """Subclasses implement `log_job(run, sweep_dir)`; `start_sweep` / `end_sweep` are optional."""

    name = "tracker"

    def log_job(self, run: JobRun, sweep_dir: Path | None) -> None:
        raise NotImplementedError

    def start_sweep(self, sweep_dir: Path) -> None:
        pass

    def end_sweep(self, sweep_dir: Path) -> None:
        pass

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        hydra = HydraConfig.get()
        folder = Path(hydra.runtime.output_dir)
        run = JobRun.read(folder)
        if run is None:
            self.warn(f"no readable record.json in {folder}: nothing to log")
            return
        sweep_dir = Path(hydra.sweep.dir) if hydra.mode == RunMode.MULTIRUN else None
        self.guarded(lambda: self.log_job(run, sweep_dir), f"job {folder}")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.guarded(lambda: self.start_sweep(Path(config.hydra.sweep.dir)), "sweep start")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.guarded(lambda: self.end_sweep(Path(config.hydra.sweep.dir)), "sweep end")

    def guarded(self, action, what: str) -> None:
        try:
            action()
        except Exception as e:  # the record is safe on disk; the tracker is a copy of it
            self.warn(f"{what} not logged ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")

    def warn(self, message: str) -> None:
        print(f"warning: {self.name}: {message}", file=sys.stderr, flush=True)
