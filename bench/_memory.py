"""Peak bytes of the tensors a piece of code creates, on any device (the CPU has no allocator
statistics): every op's outputs are tracked by their storage until the storage is freed.
Weights and inputs that exist before the block are not counted."""

from __future__ import annotations

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class PeakTensorMemory(TorchDispatchMode):
    """with PeakTensorMemory(model) as m: ...; m.peak is the most bytes alive at once, not counting
    the model's own parameters and buffers (an op may return a view of them)."""

    def __init__(self, model: torch.nn.Module | None = None):
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.peak = 0
        tensors = [*model.parameters(), *model.buffers()] if model is not None else []
        self.owned = {t.untyped_storage().data_ptr() for t in tensors}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # Drop what has been freed since the last op, then add this op's new storages.
        self.live = {key: entry for key, entry in self.live.items() if not entry[0].expired()}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self.live and key not in self.owned:
                    self.live[key] = (StorageWeakRef(storage), storage.nbytes())
        self.peak = max(self.peak, sum(size for _, size in self.live.values()))
        return out
