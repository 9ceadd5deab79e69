"""Run batched work through out-of-memory errors: halve the batch and retry, down to one item.

A GPU that runs out of memory on one batch (a long caption, a large image, a neighbour on the
same card) should cost that batch a retry, not the run. `HalvingBatcher.run` calls a batched
function on at most `batch_size` items; on an out-of-memory error it frees the allocator's cache,
halves the batch size (kept for later batches) and retries; an item that does not fit alone is
returned with its reason instead of a result.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA/MPS out of memory, a CPU allocation the system refused, or Python's MemoryError."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def free_cached_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def describe(error: BaseException) -> str:
    """The error's first line, cut short: the allocator's messages run to a paragraph."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return first if len(first) <= 160 else first[:157] + "..."


@dataclass
class HalvingBatcher:
    """Batches of at most `batch_size`; `batch_size` is the size that worked last (it only shrinks)."""

    batch_size: int
    halvings: int = 0

    def run(self, fn: Callable[[Sequence[T]], Sequence[R]], items: Sequence[T]) -> list[tuple[R | None, str | None]]:
        """(result, None) per item, or (None, reason) for an item that ran out of memory alone.
        Errors other than out of memory propagate."""
        out: list[tuple[R | None, str | None]] = []
        start = 0
        while start < len(items):
            chunk = items[start:start + self.batch_size]
            failure = None
            try:
                results = fn(chunk)
            except Exception as e:  # noqa: BLE001 - only out of memory is handled; the rest re-raises
                if not is_out_of_memory(e):
                    raise
                failure = describe(e)
            if failure is not None:
                free_cached_memory()  # outside the handler: the traceback held the batch's tensors
                if len(chunk) == 1:
                    out.append((None, f"out of memory with this sample alone ({failure})"))
                    start += 1
                else:
                    self.batch_size, self.halvings = max(1, len(chunk) // 2), self.halvings + 1
                continue
            out += [(r, None) for r in results]
            start += len(chunk)
        return out
