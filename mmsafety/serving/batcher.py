"""Concurrent requests batched into one forward: requests wait in a queue, and the worker takes
everything that arrived (up to `max_batch`) and runs requests with the same settings together."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Callable

from mmsafety.serving.local_logprobs import Generation


@dataclass
class Job:
    image: object
    prompt: str
    max_tokens: int
    top_logprobs: int | None
    future: asyncio.Future = field(default=None)

    @property
    def settings(self) -> tuple:
        return (self.max_tokens, self.top_logprobs)


class Batcher:
    """`await submit(job)` -> (Generation, batch size). One model call at a time, off the event loop, so the
    server keeps accepting requests (and batching them) while the model computes."""

    def __init__(self, run: Callable[[list, list, int, int | None], list[Generation]], max_batch: int = 16,
                 window_s: float = 0.005):
        self.run, self.max_batch, self.window_s = run, max_batch, window_s
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.batches: list[int] = []  # sizes of the batches run (for tests and logs)
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()

    async def submit(self, job: Job) -> tuple[Generation, int]:
        """The job's generation, and the size of the batch it ran in."""
        job.future = asyncio.get_running_loop().create_future()
        await self.queue.put(job)
        return await job.future

    async def _work(self) -> None:
        while True:
            jobs = [await self.queue.get()]
            await asyncio.sleep(self.window_s)  # let the requests sent together arrive together
            while len(jobs) < self.max_batch and not self.queue.empty():
                jobs.append(self.queue.get_nowait())
            groups: dict[tuple, list[Job]] = {}
            for job in jobs:
                groups.setdefault(job.settings, []).append(job)
            for (max_tokens, top_logprobs), group in groups.items():
                group = [j for j in group if not j.future.cancelled()]  # clients that hung up
                if not group:
                    continue
                self.batches.append(len(group))
                try:
                    results = await asyncio.to_thread(self.run, [j.image for j in group], [j.prompt for j in group],
                                                      max_tokens, top_logprobs)
                except Exception as e:  # the model failed: every request of the batch gets a 500
                    for j in group:
                        if not j.future.done():
                            j.future.set_exception(e)
                    continue
                for j, r in zip(group, results):
                    if not j.future.done():
                        j.future.set_result((r, len(group)))
