"""The most bytes a forward pass holds at once: tensor storages counted from the op that makes them until the last
tensor on each is released.

`LiveStorage` watches the ops a forward runs (a TorchDispatchMode). A storage counts once however many tensors share it
(views, aliases), and stops counting when the last of them is released (an alias that outlives the tensor it was
taken from keeps the storage). It counts real tensors (`metrics.peak_memory` on the CPU) and fake ones alike: `held_on_shapes` runs a module
on torch's fake tensors (shapes and dtypes only, nothing allocated), so the bytes a graph would hold for an input shape
are known before it runs; `programs.ProgramModel` refuses a program whose graph would take more than the machine has.
"""
from __future__ import annotations

import os
import weakref
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_leaves

FALLBACK_MEMORY = 16 << 30  # where neither the system nor a cgroup says how much memory there is


class LiveStorage(TorchDispatchMode):
    """The bytes of the storages the watched ops created and that a tensor still holds (`live`), and the most at once
    (`peak`)."""

    def __init__(self):
        super().__init__()
        self.live, self.peak = 0, 0
        self.holders: dict[int, list[int]] = {}  # storage: [tensors holding it, its bytes]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self._track(tensor)
        return out

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata  # the storage itself, shared by its views; a fake tensor's data pointer is 0 for all
        if key not in self.holders:
            self.holders[key] = [0, storage.nbytes()]
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
        self.holders[key][0] += 1
        weakref.finalize(tensor, self._release, key)

    def _release(self, key: int) -> None:
        holder = self.holders[key]
        holder[0] -= 1
        if holder[0] == 0:
            self.live -= holder[1]
            del self.holders[key]


def held_on_shapes(module: nn.Module, example: torch.Tensor) -> int:
    """The most bytes `module(x)` would hold at once beyond its weights, for an `x` of `example`'s shape and dtype, found by
    running it on fake tensors: nothing is allocated, whatever sizes its ops ask for. Raises what the run raises (a fake
    tensor's own exceptions where an op cannot be run on shapes alone). The modes watching the caller's ops (a FLOP
    counter, a `LiveStorage`) do not see this run."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with _disable_current_modes(), FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.empty(example.shape, dtype=example.dtype)
        tracker = LiveStorage()
        with tracker, torch.no_grad():
            module(x)
    return tracker.peak


def machine_memory() -> int:
    """The bytes of memory this process may use: the machine's, or its cgroup's limit where that is lower."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system that says
        total = FALLBACK_MEMORY
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limit = int(Path(limit_file).read_text().strip())
        except (OSError, ValueError):  # no such file, or "max"
            continue
        total = min(total, limit)
    return total
