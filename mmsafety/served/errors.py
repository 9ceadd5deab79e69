"""What a served model can report besides answers."""

from __future__ import annotations

from mmsafety.errors import UserError


class SampleErrors(Exception):
    """Some samples of a batch got no answer after every retry. `results` holds each sample's
    result (None where it failed) and `reasons` each failure's reason (None where it succeeded),
    so a workload records the failures as errors and keeps the rest: a failure is never an answer."""

    def __init__(self, results: list, reasons: list[str | None]):
        self.results, self.reasons = results, reasons
        failed = [r for r in reasons if r]
        super().__init__(f"{len(failed)} of {len(reasons)} requests failed after retries; first: {failed[0]}")


class BudgetExhausted(UserError):
    """A budget (model.max_requests / model.max_cost) is spent: the run stops cleanly as partial.
    Every answer received so far is in the response cache, so raising the budget and running the
    same command again pays only for what is left."""
