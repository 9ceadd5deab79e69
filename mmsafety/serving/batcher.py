"""Concurrent requests batched into one forward: choices wait in a queue, and the worker takes
everything that arrived (up to `max_batch`) and runs the choices with equal keys together."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Callable, Hashable


@dataclass
class Job:
    payload: object  # what `run` takes, one per choice (generation.Row)
    key: Hashable  # jobs with equal keys can share one model call
    future: asyncio.Future = field(default=None)


class Batcher:
    """`await submit(job)` -> (result, batch size). One model call at a time, off the event loop, so the
    server keeps accepting requests (and batching them) while the model computes."""

    def __init__(self, run: Callable[[list], list], max_batch: int = 16, window_s: float = 0.005):
        self.run, self.max_batch, self.window_s = run, max_batch, window_s
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.batches: list[int] = []  # sizes of the batches run (for tests and logs)
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()

    async def submit(self, job: Job):
        """The job's result, and the size of the batch it ran in."""
        job.future = asyncio.get_running_loop().create_future()
        await self.queue.put(job)
        return await job.future

    async def _work(self) -> None:
        while True:
            jobs = [await self.queue.get()]
            await asyncio.sleep(self.window_s)  # let the requests sent together arrive together
            while len(jobs) < self.max_batch and not self.queue.empty():
                jobs.append(self.queue.get_nowait())
            groups: dict[Hashable, list[Job]] = {}
            for job in jobs:
                groups.setdefault(job.key, []).append(job)
            for group in groups.values():
                group = [j for j in group if not j.future.cancelled()]  # clients that hung up
                if not group:
                    continue
                self.batches.append(len(group))
                try:
                    results = await asyncio.to_thread(self.run, [j.payload for j in group])
                except Exception as e:  # every request of the batch gets the error (a 500 unless a client mistake)
                    for j in group:
                        if not j.future.done():
                            j.future.set_exception(e)
                    continue
                for j, r in zip(group, results):
                    if not j.future.done():
                        j.future.set_result((r, len(group)))
