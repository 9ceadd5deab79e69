"""The batcher's lanes, deadline, cancellation and abort, with a fake model call that records what it
ran (fast: no model). The same behaviour against the real server: tests/test_serve_limits.py."""

from __future__ import annotations

import asyncio
import time

import pytest

from mmsafety.serving.batcher import Batcher, Job
from mmsafety.serving.protocol import RequestError


class FakeModel:
    """`run(payloads)`: sleeps `seconds[payload]` in steps of 10 ms, stopping early when every job's
    cancel event is set (as generation.Cancelled ends rows); records what ran and when."""

    def __init__(self, seconds: dict):
        self.seconds, self.ran, self.events = seconds, [], {}

    def __call__(self, payloads):
        start = time.monotonic()
        self.ran.append((tuple(payloads), start))
        while time.monotonic() - start < max(self.seconds[p] for p in payloads):
            if all(self.events[p].is_set() for p in payloads):
                break
            time.sleep(0.01)
        return [(p, time.monotonic() - start) for p in payloads]


def job(model: FakeModel, name: str, cost: int) -> Job:
    j = Job(name, key=name, cost=cost)
    model.events[name] = j.cancel
    return j


def run(coro):
    return asyncio.run(coro)


def test_a_long_job_does_not_hold_a_short_one_back_and_one_lane_would():
    async def scenario(long_tokens):
        model = FakeModel({"long": 1.0, "short": 0.01})
        b = Batcher(model, long_tokens=long_tokens)
        b.start()
        long = asyncio.ensure_future(b.submit(job(model, "long", 400)))
        await asyncio.sleep(0.1)
        start = time.monotonic()
        await b.submit(job(model, "short", 8))
        short_s = time.monotonic() - start
        await long
        await b.stop()
        return short_s

    assert run(scenario(128)) < 0.3  # its own lane
    assert run(scenario(10_000)) > 0.8  # one lane: it waits for the long one


def test_a_hung_up_waiter_drops_its_job_queued_or_running():
    async def scenario():
        model = FakeModel({"a": 2.0, "b": 2.0})
        b = Batcher(model)
        b.start()
        ja, jb = job(model, "a", 8), job(model, "b", 8)
        ta, tb = asyncio.ensure_future(b.submit(ja)), asyncio.ensure_future(b.submit(jb))
        await asyncio.sleep(0.2)  # a runs (its own key: a batch of its own), b waits
        assert (b.stats.running, b.stats.waiting) == (1, 1)
        start = time.monotonic()
        ta.cancel()
        tb.cancel()
        while b.stats.running:
            await asyncio.sleep(0.01)
        stopped_s = time.monotonic() - start
        await asyncio.sleep(0.1)
        await b.stop()
        return model, b.stats, stopped_s

    model, stats, stopped_s = run(scenario())
    assert [p for p, _ in model.ran] == [("a",)]  # b never ran
    assert stopped_s < 0.5 and stats.cancelled == 2 and stats.waiting == 0 and stats.done == 0


def test_a_job_not_started_by_its_deadline_is_a_429_and_never_runs():
    async def scenario():
        model = FakeModel({"a": 1.0, "b": 0.01})
        b = Batcher(model, queue_timeout_s=0.3)
        b.start()
        ta = asyncio.ensure_future(b.submit(job(model, "a", 8)))
        await asyncio.sleep(0.05)
        with pytest.raises(RequestError) as e:
            await b.submit(job(model, "b", 8))
        result = await ta  # started before its deadline: not timed out, though it ran past it
        await b.stop()
        return e.value, result, model, b.stats

    error, result, model, stats = run(scenario())
    assert error.status == 429 and error.code == "queue_timeout" and "0.3 s" in error.message
    assert result[0][0] == "a" and [p for p, _ in model.ran] == [("a",)] and stats.timed_out == 1


def test_abort_ends_running_and_queued_jobs_with_a_503_at_once():
    async def scenario():
        model = FakeModel({"a": 5.0, "b": 5.0})
        b = Batcher(model)
        b.start()
        tasks = [asyncio.ensure_future(b.submit(job(model, k, 8))) for k in "ab"]
        await asyncio.sleep(0.1)
        start = time.monotonic()
        b.abort("the server is shutting down")
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await b.stop()
        return results, time.monotonic() - start, b.stats

    results, took, stats = run(scenario())
    assert all(isinstance(r, RequestError) and r.status == 503 and r.code == "server_shutting_down" for r in results)
    assert took < 1.0 and stats.aborted == 2
