"""What a run sent and what it cost: requests, retries, cache hits, tokens from `usage`, and cost
from a price table. Budgets (max_requests, max_cost) are checked before each request is sent.
`accumulate` adds one invocation's accounting to the totals of a run's earlier invocations."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from mmsafety.served.errors import BudgetExhausted


@dataclass
class Accounting:
    price_per_million_tokens: dict[str, float] = field(default_factory=dict)
    max_requests: int | None = None
    max_cost: float | None = None
    requests: int = 0            # HTTP requests sent, retries included
    retries: int = 0             # of those, repeats after a failure
    answered: int = 0            # requests that came back with an answer (paid)
    cache_hits: int = 0          # answers taken from the cache (free)
    failed: int = 0              # samples with no answer after every retry
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retry_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def cost(self) -> float | None:
        if not self.price_per_million_tokens:
            return None
        p = self.price_per_million_tokens
        return (self.prompt_tokens * p.get("prompt", 0.0) + self.completion_tokens * p.get("completion", 0.0)) / 1e6

    def check_budget(self) -> None:
        """Raise BudgetExhausted when sending one more request would break a budget."""
        if self.max_requests is not None and self.requests >= self.max_requests:
            raise BudgetExhausted(f"model.max_requests={self.max_requests} reached: the run stops as partial; "
                                  f"raise the budget and run the same command to go on (answers so far are cached)")
        cost = self.cost
        if self.max_cost is not None and cost is not None and cost >= self.max_cost:
            raise BudgetExhausted(f"model.max_cost={self.max_cost} reached (spent {cost:.4f}): the run stops as "
                                  f"partial; raise the budget and run the same command to go on (answers so far are cached)")

    def add_usage(self, usage: dict | None) -> None:
        usage = usage or {}
        self.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        self.completion_tokens += int(usage.get("completion_tokens") or 0)

    def add_retry(self, reason: str) -> None:
        self.retries += 1
        self.retry_reasons[reason] = self.retry_reasons.get(reason, 0) + 1

    def as_dict(self) -> dict:
        out = asdict(self)
        out["cost"] = self.cost
        out["price_per_million_tokens"] = dict(self.price_per_million_tokens) or None
        return out


# Counters that add up over the invocations of one run (a resumed run is the same run).
_SUMMED = ("requests", "retries", "answered", "cache_hits", "failed", "prompt_tokens", "completion_tokens")


def accumulate(before: dict | None, now: dict) -> dict:
    """The accounting of a whole run: `before` (the totals its earlier invocations recorded, or None)
    plus `now` (this invocation's `as_dict()`). Counters, retry reasons and cost add up; the price
    table and budgets are this invocation's settings (budgets apply per invocation)."""
    if not isinstance(before, dict):
        return dict(now)
    total = dict(now)
    for name in _SUMMED:
        total[name] = _count(before.get(name)) + _count(now.get(name))
    reasons = dict(before["retry_reasons"]) if isinstance(before.get("retry_reasons"), dict) else {}
    for reason, n in (now.get("retry_reasons") or {}).items():
        reasons[reason] = _count(reasons.get(reason)) + _count(n)
    total["retry_reasons"] = reasons
    costs = [c for c in (before.get("cost"), now.get("cost")) if _is_number(c)]
    total["cost"] = sum(costs) if costs else None
    return total


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _count(value) -> int:
    """A counter from a record (data, perhaps edited by hand): anything but a number counts as 0."""
    return int(value) if _is_number(value) else 0
