"""A job's log lines: on the terminal and in the run folder's `eval.log` / `attack.log`.

Hydra configures the loggers from conf/hydra/job_logging/mmsafety.yaml before a console script's
job starts; the job writes through `job_log` (the `log` callable every workload's `run` takes) and
`result_log`. From Python (notebooks) nothing is configured and lines are printed instead.
"""

from __future__ import annotations

import functools
import logging
import sys

from tqdm import tqdm

JOB_LOGGER = "mmsafety.job"
RESULT_LOGGER = "mmsafety.job_result"  # the result table: the log file only (stdout shows it already)


class ProgressSafeHandler(logging.StreamHandler):
    """stderr, written through tqdm so that a line does not tear a progress bar that is drawing."""

    def __init__(self):
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def print_line(line: str) -> None:
    """The `log` of jobs run from Python: stderr, above any progress bar."""
    tqdm.write(line, file=sys.stderr)


def job_log(line: str) -> None:
    """The `log` of a console script's job: the terminal and the job's log file."""
    logging.getLogger(JOB_LOGGER).info(line)


def result_log(text: str) -> None:
    logging.getLogger(RESULT_LOGGER).info(text)


@functools.cache
def say_once(line: str, log) -> None:
    """Log `line` once per process, e.g. a missing optional component in a sweep of many jobs."""
    log(line)
