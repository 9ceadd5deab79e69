"""A job's record from start to end: opened before the model loads, left completed, partial or
failed, never missing. The status follows the samples (docs/reliability-status.md):

- `completed`: every sample was answered (or skipped for a reason in the data, e.g. a corrupt image);
- `partial`: interrupted, stopped by a budget, or some samples errored (no answer for a reason
  outside the data: a served failure, out of memory). Metrics are over the answered samples; the
  same command retries the errored ones;
- `failed`: the job raised, or every sample it tried errored (nothing answered).

Each invocation of a run (the first and every resume) is one entry of the record's `invocations`,
and a served model's `served.accounting` adds up over all of them.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Callable

from omegaconf import DictConfig, OmegaConf

from mmsafety.errors import UserError
from mmsafety.models.base import ModelAdapter
from mmsafety.record_kinds import schema_of
from mmsafety.record_models import answered as is_answer
from mmsafety.records import RunRecord
from mmsafety.served.accounting import accumulate
from mmsafety.served.errors import BudgetExhausted


class RunNotCompleted(UserError):
    """The job ran to its end but samples errored: one line naming how many and the most common
    error. `exit_status` is the console script's: 1 when nothing was answered, 3 when some were."""

    def __init__(self, message: str, exit_status: int):
        super().__init__(message)
        self.exit_status = exit_status


def plain_config(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def open_record(cfg: DictConfig, kind: str, out_dir=None) -> RunRecord:
    if out_dir is None:
        # heavy, deferred to when this runs: hydra
        from hydra.core.hydra_config import HydraConfig

        out_dir = HydraConfig.get().runtime.output_dir
    return RunRecord.open(out_dir, kind, plain_config(cfg), seeds={"seed": cfg.seed}, schema=schema_of(kind))


def status_from_samples(samples: list[dict]) -> tuple[str, str | None]:
    """("completed", None) when no sample errored; else ("failed" when none was answered, or
    "partial") and one line: how many errored, the most common reason, and what to do."""
    errors = [s for s in samples if s.get("status") == "error"]
    if not errors:
        return "completed", None
    answered = sum(1 for s in samples if is_answer(s))
    reason, times = Counter(str(s.get("reason") or "no reason recorded") for s in errors).most_common(1)[0]
    common = f"most common error ({times} of {len(errors)}): {reason}"
    if not answered:
        return "failed", (f"every sample errored ({len(errors)}), nothing was answered; {common}. Fix the model or "
                          f"server, then run the same command to retry them")
    return "partial", (f"{len(errors)} of {answered + len(errors)} samples errored; metrics are over the {answered} "
                       f"answered; {common}. Run the same command to retry them")


def _earlier_invocations(previous: dict) -> list[dict]:
    """The history earlier invocations left (a record is data: entries that are not objects are
    dropped). A record written before histories existed counts as one invocation."""
    history = previous.get("invocations")
    if isinstance(history, list):
        return [h for h in history if isinstance(h, dict)]
    if not previous:
        return []
    served = previous.get("served") if isinstance(previous.get("served"), dict) else {}
    timing = previous.get("timing") if isinstance(previous.get("timing"), dict) else {}
    entry = {"started": timing.get("started"), "seconds": timing.get("seconds"), "status": previous.get("status")}
    if isinstance(served.get("accounting"), dict):
        entry["accounting"] = served["accounting"]
    return [entry]


def note_invocation(record: RunRecord, model=None, status: str | None = None) -> None:
    """Put this invocation into the record: its entry in `invocations` (status, retried errors, a
    served model's own accounting) and the run's `served` section, whose accounting adds up the
    earlier invocations' totals and this one's. Called at every checkpoint and at the end."""
    entry = {"started": record.started, "seconds": round(time.time() - record.started, 3),
             "status": status or "running", "retried_errors": record.retried_errors}
    if hasattr(model, "served_record"):
        served = model.served_record()
        entry["accounting"] = served["accounting"]
        before = record.previous.get("served") if isinstance(record.previous.get("served"), dict) else {}
        served["accounting"] = accumulate(before.get("accounting"), served["accounting"])
        record.update(served=served)
    record.update(invocations=_earlier_invocations(record.previous) + [entry])


def run_job(cfg: DictConfig, kind: str, work: Callable[[ModelAdapter, RunRecord], dict], out_dir=None,
            load: Callable[[DictConfig], ModelAdapter] | None = None) -> tuple[dict, RunRecord]:
    """Open the job's record (in Hydra's output folder unless `out_dir` is given), load the model
    (`load`, default mmsafety.cli.loading.load_model), run `work`, and leave the record completed,
    partial or failed as its samples say (module docstring), never missing. Raises RunNotCompleted
    when every sample errored; a run with some errored samples returns its metrics (over the
    answered samples) with the record partial and the reason in its `stopped`."""
    if load is None:
        # heavy, deferred to when this runs: mmsafety.cli.loading loads hydra
        from mmsafety.cli.loading import load_model as load
    record = open_record(cfg, kind, out_dir)
    model = None

    def finish(status: str) -> None:
        note_invocation(record, model, status)
        record.write(status)

    try:
        model = load(cfg)
        if hasattr(model, "probe"):  # a served model: one real request, so a dead endpoint stops here
            model.probe()
        metrics = work(model, record)
        record.update(metrics=metrics)
        status, line = status_from_samples(record.samples)
        if status == "failed":
            record.update(error=line)
        elif line:
            record.update(stopped=line)
        finish(status)
    except (KeyboardInterrupt, BudgetExhausted) as e:
        if isinstance(e, BudgetExhausted):  # a budget (max_requests, max_cost) ends the run cleanly
            record.update(stopped=str(e))
        finish("partial")
        raise
    except Exception as e:
        record.update(error=f"{type(e).__name__}: {e}")
        finish("failed")
        raise
    finally:
        record.close()
        if hasattr(model, "close"):
            model.close()
    if status == "failed":
        raise RunNotCompleted(line, exit_status=1)
    return metrics, record
