"""After a sweep, its jobs' records decide its exit status, whatever launcher ran them.

Under the basic launcher a failing job is seen in this process; under submitit (SLURM) the jobs run
elsewhere and the launcher only returns what they returned, so the submitting process reads each job's
`record.json` in the sweep folder once every job has ended (Hydra's `on_multirun_end`)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

# The statuses the last sweep's records held ({} before any sweep ends in this process).
LAST_SWEEP: dict[str, int] = {}


def record_statuses(sweep_dir: Path) -> Counter:
    """status -> how many job folders of `sweep_dir` have a record with it (`unreadable` if not JSON)."""
    counts: Counter = Counter()
    for record in sorted(Path(sweep_dir).glob("*/record.json")):
        try:
            counts[str(json.loads(record.read_text()).get("status", "unknown"))] += 1
        except (OSError, ValueError, AttributeError):
            counts["unreadable"] += 1
    return counts


def unfinished(expected_jobs: int) -> str | None:
    """One line naming the jobs of the last sweep that did not complete, or None if all did."""
    if not LAST_SWEEP:
        return None
    counts = Counter(LAST_SWEEP)
    counts["no record"] = max(0, expected_jobs - sum(counts.values()))
    not_done = {status: n for status, n in counts.items() if status != "completed" and n}
    if not not_done:
        return None
    parts = ", ".join(f"{status} {n}" for status, n in sorted(not_done.items()))
    return (f"{sum(not_done.values())} of {expected_jobs} job(s) of the sweep did not complete ({parts}); "
            f"each job's record.json and log say why, and the same command resumes them")


class SweepStatusCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        LAST_SWEEP.clear()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        LAST_SWEEP.clear()
        LAST_SWEEP.update(record_statuses(Path(config.hydra.sweep.dir)))
