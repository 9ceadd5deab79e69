"""Concurrent requests batched into one forward, in two lanes so that long answers cannot hold
short ones back: choices wait in their lane's queue, and the lane's worker takes everything that
arrived (up to `max_batch`) and runs the choices with equal keys together, off the event loop.

A job is dropped as soon as nobody waits for it: a client that hangs up cancels its jobs (dropped
from the queue, or ended at the next generated token by `generation.Cancelled` when already
running), a job still queued past its deadline is answered with a 429, and `abort` (a shutdown
whose grace period is ending) ends every job with a 503.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Hashable

from mmsafety.serving.protocol import RequestError


@dataclass
class Job:
    payload: object  # what `run` takes, one per choice (generation.Row)
    key: Hashable  # jobs with equal keys can share one model call
    cost: int = 0  # new tokens the job may generate: picks its lane
    cancel: threading.Event = field(default_factory=threading.Event)  # the running model call checks it
    future: asyncio.Future = field(default=None)
    error: RequestError | None = None  # why it was cancelled, when its waiter should hear it
    started: bool = False


@dataclass
class Stats:
    """Counters for /health, tests and the load benchmark."""

    waiting: int = 0  # jobs queued, not yet running
    running: int = 0  # jobs in a model call now
    done: int = 0
    cancelled: int = 0  # jobs whose clients went away (queued or running)
    timed_out: int = 0  # jobs that waited past the queue deadline
    aborted: int = 0  # jobs ended by a shutdown


class _Lane:
    def __init__(self, name: str):
        self.name = name
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix=f"mmsafety-serve-{name}")
        self.task: asyncio.Task | None = None
        self.current: list[Job] = []  # the jobs taken from the queue this round, running or next


class Batcher:
    """`await submit(job)` -> (result, batch size). Jobs that may generate more than `long_tokens`
    new tokens run in the long lane, the rest in the short lane; each lane makes one model call at a
    time on its own thread, so a short request waits for other short ones only."""

    def __init__(self, run: Callable[[list], list], max_batch: int = 16, window_s: float = 0.005,
                 long_tokens: int = 128, queue_timeout_s: float = 60.0):
        self.run, self.max_batch, self.window_s = run, max_batch, window_s
        self.long_tokens, self.queue_timeout_s = long_tokens, queue_timeout_s
        self.lanes = {"short": _Lane("short"), "long": _Lane("long")}
        self.batches: list[int] = []  # sizes of the batches run (for tests and logs)
        self.stats = Stats()
        self.aborting = False

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for lane in self.lanes.values():
            lane.task = loop.create_task(self._work(lane))

    async def stop(self) -> None:
        """Ends every job (running ones at their next token), then waits for the model threads."""
        self.abort("the server is shutting down")
        for lane in self.lanes.values():
            if lane.task:
                lane.task.cancel()
            await asyncio.to_thread(lane.pool.shutdown, True)

    def abort(self, reason: str) -> None:
        """Ends every queued and running job with a 503 (the shutdown's grace period is ending)."""
        self.aborting = True
        for lane in self.lanes.values():
            jobs = list(lane.current)
            while not lane.queue.empty():
                jobs.append(lane.queue.get_nowait())
            for job in jobs:
                if not job.future.done():
                    self.stats.aborted += 1
                    self._drop(job, RequestError(f"{reason}; send the request again", None, "server_shutting_down",
                                                 status=503, kind="server_error"))

    def drop(self, jobs: list[Job]) -> None:
        """Drops the jobs still queued or running (a request whose other choice failed)."""
        for job in jobs:
            if job.future is not None and not job.future.done():
                self.stats.cancelled += 1
                self._drop(job, None)

    def _drop(self, job: Job, error: RequestError | None) -> None:
        job.cancel.set()
        job.error = error
        if not job.future.done():
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.cancel()
        if not job.started:
            self.stats.waiting -= 1
            job.started = True  # never run it now

    def lane_of(self, job: Job) -> _Lane:
        return self.lanes["long" if job.cost > self.long_tokens else "short"]

    async def submit(self, job: Job):
        """The job's result, and the size of the batch it ran in. A waiter that is cancelled (its
        client hung up) drops the job; a job not started after `queue_timeout_s` is a 429."""
        if self.aborting:
            raise RequestError("the server is shutting down; send the request again", None, "server_shutting_down",
                               status=503, kind="server_error")
        job.future = asyncio.get_running_loop().create_future()
        self.stats.waiting += 1
        await self.lane_of(job).queue.put(job)
        deadline = time.monotonic() + self.queue_timeout_s
        try:
            while True:
                left = deadline - time.monotonic()
                if job.started or left <= 0:
                    if not job.started:
                        self.stats.timed_out += 1
                        self._drop(job, RequestError(
                            f"the request waited {self.queue_timeout_s:g} s for the model without starting "
                            "(--queue-timeout-s); the server is busy, send it again later", None, "queue_timeout",
                            status=429, kind="rate_limit_error"))
                    return await job.future
                done, _ = await asyncio.wait({job.future}, timeout=left)
                if done:
                    return job.future.result()
        except asyncio.CancelledError:
            if not job.future.done():
                self.stats.cancelled += 1
                self._drop(job, None)
            raise

    async def _work(self, lane: _Lane) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await lane.queue.get()]
            await asyncio.sleep(self.window_s)  # let the requests sent together arrive together
            while len(jobs) < self.max_batch and not lane.queue.empty():
                jobs.append(lane.queue.get_nowait())
            lane.current = jobs
            groups: dict[Hashable, list[Job]] = {}
            for job in jobs:
                if not job.started:  # not dropped while it waited
                    groups.setdefault(job.key, []).append(job)
            for group in groups.values():
                group = [j for j in group if not j.started]
                if not group:
                    continue
                for j in group:
                    j.started = True
                self.stats.waiting -= len(group)
                self.stats.running += len(group)
                self.batches.append(len(group))
                try:
                    results = await loop.run_in_executor(lane.pool, self.run, [j.payload for j in group])
                except Exception as e:  # every request of the batch gets the error (a 500 unless a client mistake)
                    results = [e] * len(group)
                finally:
                    self.stats.running -= len(group)
                for j, r in zip(group, results):
                    if j.future.done():
                        continue
                    if isinstance(r, Exception):
                        j.future.set_exception(r)
                    else:
                        self.stats.done += 1
                        j.future.set_result((r, len(group)))
            lane.current = []
