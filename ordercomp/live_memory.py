"""The most bytes a forward pass holds at once: tensor storages counted from the op that makes them until the last
tensor on each is released; and, on shapes alone, the work it does.

`LiveStorage` watches the ops a forward runs (a TorchDispatchMode). A storage counts once however many tensors share it
(views, aliases), and stops counting when the last of them is released (an alias that outlives the tensor it was
taken from keeps the storage). It counts real tensors (`metrics.peak_memory` on the CPU) and fake ones alike: `run_on_shapes` runs a module
on torch's fake tensors (shapes and dtypes only, nothing allocated), so the bytes a graph would hold for an input shape,
and its work (`OpWork`: the FLOPs torch has a formula for, plus every element each op reads and writes), are known
before it runs; `programs.ProgramModel` refuses a program whose graph would take more than the machine has, or more work
than the heaviest image classifiers.
"""
from __future__ import annotations

import os
import re
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry, shape_wrapper

FALLBACK_MEMORY = 16 << 30  # where neither the system nor a cgroup says how much memory there is
MEMORY_SHARE = 0.5  # a program's run, or a data set read into memory, may hold at most this share of machine_memory()
# ops that no FLOP formula covers and whose work grows faster than their elements: a matrix function of an n x n matrix
# is ~n³, a distance matrix of n and m points of d numbers is n·m·d
MATRIX_FUNCTION = re.compile(r"^_?linalg_(?!vector_norm|matrix_norm|norm|cross|vecdot|diagonal)|^cholesky|^triangular_solve$"
                             r"|^geqrf$|^ormqr$|^orgqr$|^lu_unpack$")


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


def sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of scaled dot-product attention, QK^T then AV: queries (B, H, L, E), keys (B, H, S, E), values (B, H, S, Ev)."""
    batch, heads, queries, width = query_shape
    keys, value_width = key_shape[-2], value_shape[-1]
    return 2 * batch * heads * queries * keys * (width + value_width)


# attention on the CPU, whose fused kernel has no formula in torch (a FlopCounterMode's custom_mapping), and torch's formulas
CPU_ATTENTION_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: sdpa_flops}
FLOP_FORMULAS = {**flop_registry, **{op: shape_wrapper(formula) for op, formula in CPU_ATTENTION_FLOPS.items()}}


class OpWork(TorchDispatchMode):
    """The work of the watched ops (`work`): the FLOPs of those torch's FLOP counter has a formula for (matrix products,
    convolutions, attention), plus the elements every op reads and writes, so that an op without a formula is counted
    by its size (a sum over a broadcast view of 10⁹ elements reads 10⁹, though it allocates nothing)."""

    def __init__(self):
        super().__init__()
        self.work = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tensors = [leaf for leaf in tree_leaves((args, kwargs)) if isinstance(leaf, torch.Tensor)]
        outputs = [leaf for leaf in tree_leaves(out) if isinstance(leaf, torch.Tensor)]
        self.work += sum(tensor.numel() for tensor in tensors + outputs) + self._flops(func, args, kwargs, out, tensors, outputs)
        return out

    @staticmethod
    def _flops(func, args, kwargs, out, tensors: list, outputs: list) -> int:
        name = func._overloadpacket.__name__
        if func._overloadpacket in FLOP_FORMULAS:
            return int(FLOP_FORMULAS[func._overloadpacket](*args, **kwargs, out_val=out))
        if "cdist" in name and tensors and outputs:
            return outputs[0].numel() * tensors[0].shape[-1]
        if MATRIX_FUNCTION.search(name) and tensors and tensors[0].dim() >= 2:
            return tensors[0].numel() * max(tensors[0].shape[-2:])
        return 0


@dataclass(frozen=True)
class ShapeRun:
    """What a forward pass would take for one input shape, found on fake tensors."""
    held: int  # the most bytes held at once beyond the weights
    work: int  # OpWork's count


def run_on_shapes(module: nn.Module, example: torch.Tensor) -> ShapeRun:
    """What `module(x)` would hold at once beyond its weights, and its work, for an `x` of `example`'s shape and dtype, found
    by running it on fake tensors: nothing is allocated or computed, whatever sizes its ops ask for. Raises what the run
    raises (a fake tensor's own exceptions where an op cannot be run on shapes alone). The modes watching the caller's
    ops (a FLOP counter, a `LiveStorage`) do not see this run."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with _disable_current_modes(), FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.empty(example.shape, dtype=example.dtype)
        tracker, counter = LiveStorage(), OpWork()
        with tracker, counter, torch.no_grad():
            module(x)
    return ShapeRun(tracker.peak, counter.work)


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
