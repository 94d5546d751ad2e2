"""Every figure ordercomp reports for a model on a split, from one entry point: `measure`.

MACs come from torch's FLOP counter (FlopCounterMode, per module); BitOps = sum over layers of
MACs x weight bits x activation bits; a model with early exits costs the expectation over the
data of the cost up to the exit each sample leaves at. Storage honours bit widths and sparsity.

Attention (`nn.MultiheadAttention`, as torchvision's ViT uses it) is one unit: its projections (the
in-projection it reads as a raw parameter, and out_proj) cost MACs x weight bits x activation bits,
its products QK^T and AV (activations times activations) MACs x activation bits squared. They are
counted on the slow path of the module, which computes them as separate operations the counter
sees, at the number of tokens that actually reach each block (fewer when tokens merge), and at the heads it
has (fewer once pruning removed some: a step-by-step attention, whose fused products the counter is told about).
"""
from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .data.datasets import DataBundle
from .live_memory import CPU_ATTENTION_FLOPS, LiveStorage
from .layers import FULL_BITS, all_outputs, bits_of, int8_weights, is_int8_part, multiplies_activations_at_bits, sparsity_of
from .methods.early_exit import CLASS_PATH, class_token_path, select_exits
from .train import predict

aten = torch.ops.aten
# The attention products of one attention call, in the operations the counter sees for them: the fused
# kernels, and the batched matrix products of the math path.
ATTENTION_PRODUCTS = {aten.bmm, aten.baddbmm, aten._scaled_dot_product_flash_attention_for_cpu,
                      aten._scaled_dot_product_flash_attention, aten._scaled_dot_product_efficient_attention,
                      aten._scaled_dot_product_cudnn_attention}

@dataclass
class Metrics:
    accuracy: float
    params: int
    size_bytes: float
    macs: float
    bitops: float
    latency_ms_b1: float | None
    latency_ms_batch: float | None
    peak_memory_bytes: float | None
    exit_fractions: list[float] | None = None
    correct: str | None = None  # which images were classified correctly, packed by `pack_hits`

    def to_dict(self) -> dict:
        return asdict(self)


LATENCY_BATCH = 32  # the batch size of `latency_ms_batch` (and of the peak memory) unless a caller asks for another


def measure(model: nn.Module, data: DataBundle, split: str = "test", *, device: torch.device | str = "cpu",
            latency: bool = True, repeats: int = 20, batch_size: int = LATENCY_BATCH, threads: int = 1) -> Metrics:
    """Accuracy, parameters, storage, MACs, BitOps, latency and peak memory of `model` on `split`."""
    device = torch.device(device)
    accuracy, fractions, hits = accuracy_and_exits(model, data, split, device)
    macs, bitops = expected_cost(model, data.example_input(1).to(device), fractions)
    timing = (latency_ms(model, data, device, 1, repeats, threads), latency_ms(model, data, device, batch_size, repeats, threads)) if latency else (None, None)
    return Metrics(accuracy, count_params(model), storage_bytes(model), macs, bitops, *timing,
                   peak_memory(model, data, device, batch_size) if latency else None, fractions, pack_hits(hits))


def accuracy_and_exits(model: nn.Module, data: DataBundle, split: str, device: torch.device):
    """Top-1 accuracy in percent, for early-exit models the fraction leaving at each exit, and
    which images were classified correctly (the paired per-image evidence for order decisions)."""
    outputs, labels = predict(model, data, split, device)
    chosen, fractions = outputs[0], None
    if len(outputs) > 1:
        chosen, exit_index = select_exits(outputs, model.threshold)
        fractions = (torch.bincount(exit_index, minlength=len(outputs)).float() / len(labels)).tolist()
    hits = chosen.argmax(1) == labels
    return 100.0 * hits.float().mean().item(), fractions, hits


def pack_hits(hits: torch.Tensor) -> str:
    """Per-image correctness as '<count>:<hex>', one bit per image in split order (~90 characters
    for 360 images), small enough to keep in every cached step result."""
    bits = hits.to(torch.uint8).tolist()
    value = int("".join(map(str, bits)) or "0", 2)
    return f"{len(bits)}:{value:x}"


def unpack_hits(packed: str) -> list[int]:
    """The 0/1 per-image correctness list written by `pack_hits`."""
    count, _, digits = packed.partition(":")
    return [int(bit) for bit in format(int(digits, 16), f"0{int(count)}b")] if int(count) else []


def count_params(model: nn.Module) -> int:
    return sum(t.numel() for t in _weights(model))


def _weights(model: nn.Module) -> list[torch.Tensor]:
    """Parameters, plus every tensor an int8 graph keeps as a buffer of its own (int8 weights, scales); not the buffers
    of the layers a traced network's stem, stages and head call (batch norm's running statistics)."""
    seen = {id(p): p for p in model.parameters()}
    for module in model.modules():
        if isinstance(module, torch.fx.GraphModule):
            seen.update((id(b), b) for b in module.buffers(recurse=False))
    return list(seen.values())


def storage_bytes(model: nn.Module) -> float:
    """Bytes to store the weights: quantised layers at their bit width, sparse layers as a bitmap
    plus non-zero values when that is smaller, everything else at its dtype's width. A weight tied to two layers
    is stored once."""
    total, counted = 0.0, set()
    for module in model.modules():
        for weight in _projection_weights(module):
            if id(weight) in counted:
                continue
            bits = bits_of(module)[0]
            dense = weight.numel() * bits
            if sparsity_of(module) is not None:
                dense = min(dense, weight.numel() + int((weight != 0).sum()) * bits)
            total += dense / 8
            counted.add(id(weight))
    for module in model.modules():
        if is_int8_part(module) and sparsity_of(module) is not None:
            for weight in int8_weights(module):
                total += min(weight.numel() * 8, weight.numel() + int((weight != 0).sum()) * 8) / 8
                counted.add(id(weight))
    for tensor in _weights(model):
        if id(tensor) not in counted:
            total += tensor.numel() * tensor.element_size()
    return total


def _projection_weights(module: nn.Module) -> list[torch.Tensor]:
    """The weights stored at a module's bit width: a conv or linear layer's, and the in-projection an
    attention module reads as raw parameters (its out_proj is a Linear layer of its own)."""
    if isinstance(module, (nn.Conv2d, nn.Linear)) and isinstance(module.weight, torch.Tensor):
        return [module.weight]
    if isinstance(module, nn.MultiheadAttention):
        separate = (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight)
        return [module.in_proj_weight] if module.in_proj_weight is not None else list(separate)
    return []


def _unit_costs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, float, float]]:
    """(module name, MACs, BitOps) for every bit-annotated part, conv/linear layer and attention, and the parts of a
    ViT's class-token paths at its exits (`_class_path_units`); a unit's products of activations (attention's, token
    matching's) cost MACs x activation bits squared, or full bits squared inside a part converted to int8, whose
    quantiser (X86InductorQuantizer's default recipe) leaves matmul and attention float."""
    model.eval()
    counts = _flop_counts(model, example)
    units = _units(model, counts, "_EveryExit.model.")
    rest = sum(counts.get("Global", {}).values()) / 2 - sum(macs for _, macs, _ in units)
    if rest > 0:
        units.append(("", rest, rest * FULL_BITS * FULL_BITS))
    return units + _class_path_units(model, example)


def _units(model: nn.Module, counts: dict[str, dict], counted_as: str, named: str = "") -> list[tuple[str, float, float]]:
    """(`named` + module name, MACs, BitOps) of every bit-annotated part, conv/linear layer and attention of `model`,
    from FLOP counts that name it `counted_as` + its name."""
    units = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(u + ".") for u, _, _ in units):
            continue
        if multiplies_activations_at_bits(module) or isinstance(module, (nn.Conv2d, nn.Linear, nn.MultiheadAttention)):
            ops = counts.get(counted_as + name, {})
            products = sum(flops for op, flops in ops.items() if op in ATTENTION_PRODUCTS) / 2
            macs = sum(ops.values()) / 2
            w, a = bits_of(module)
            product_bits = FULL_BITS if is_int8_part(module) else a  # the int8 quantiser leaves QK^T and AV float
            units.append((name, macs, (macs - products) * w * a + products * product_bits * product_bits))
    return [(named + name, macs, bitops) for name, macs, bitops in units]


def _class_path_units(model: nn.Module, example: torch.Tensor) -> list[tuple[str, float, float]]:
    """The parts of a ViT's blocks with an exit that its class token's path runs (early_exit.class_token_path),
    counted on their own as `class_path.<block>.<part>`: a sample leaving at that exit runs them instead of the block."""
    if not hasattr(model, "class_token_inputs"):
        return []
    units = []
    with torch.no_grad():
        inputs = model.class_token_inputs(example)
    for name, block, state in inputs:
        units += _units(block, _counted(_ClassTokenPath(block), *state), "_ClassTokenPath.block.", f"{CLASS_PATH}.{name}.")
    return units


class _ClassTokenPath(nn.Module):
    """A block's class-token path under one root module, so the FLOP counter names the block's parts."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, tokens: torch.Tensor, size: torch.Tensor | None) -> torch.Tensor:
        return class_token_path(self.block, tokens, size)


def _flop_counts(model: nn.Module, example: torch.Tensor) -> dict[str, dict]:
    """FLOPs per module and operation for one forward pass through every exit."""
    return _counted(_EveryExit(model), example)


def _counted(root: nn.Module, *inputs) -> dict[str, dict]:
    """FLOPs per module (named from `root`) and operation of `root(*inputs)`, attention on its slow path (the fused
    fast path of nn.MultiheadAttention is one operation the counter has no formula for)."""
    counter = FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS)
    with torch.no_grad(), _attention_fast_path(False), counter:
        root(*inputs)
    return counter.get_flop_counts()


@contextlib.contextmanager
def _attention_fast_path(enabled: bool):
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


class _EveryExit(nn.Module):
    """Runs every exit under one root module, so the FLOP counter names parts from the model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return all_outputs(self.model, x)


def expected_cost(model: nn.Module, example: torch.Tensor, fractions: list[float] | None) -> tuple[float, float]:
    """(MACs, BitOps) per sample; with early exits the expectation over the exit fractions."""
    units = _unit_costs(model, example)
    if not fractions:
        return sum(u[1] for u in units), sum(u[2] for u in units)
    per_exit = [_cost_to_exit(model, units, index) for index in range(len(fractions))]
    return (sum(f * c[0] for f, c in zip(fractions, per_exit)), sum(f * c[1] for f, c in zip(fractions, per_exit)))


def _cost_to_exit(model: nn.Module, units, exit_index: int) -> tuple[float, float]:
    """Cost of a sample that leaves at `exit_index` (the last index is the final head): the parts the model says it runs."""
    chosen = [u for u in units if model.reaches(u[0], exit_index)]
    return sum(u[1] for u in chosen), sum(u[2] for u in chosen)


@torch.no_grad()
def latency_ms(model: nn.Module, data: DataBundle, device: torch.device, batch: int, repeats: int, threads: int) -> float:
    """Median wall time of one forward pass on `batch` test images, after warm-up."""
    images = data.test.tensors[0]
    x = images[torch.arange(batch) % len(images)].to(device)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    model.to(device).eval()
    try:
        for _ in range(3):
            model(x)
        times = []
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            model(x)
            _sync(device)
            times.append((time.perf_counter() - start) * 1000)
    finally:
        torch.set_num_threads(previous)
    return statistics.median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def peak_memory(model: nn.Module, data: DataBundle, device: torch.device, batch: int) -> float:
    """Peak bytes during one forward pass: weights plus the most activation memory alive at once
    (CUDA's allocator on a GPU; on the CPU, tensor storages tracked from allocation to release: `LiveStorage`)."""
    x = data.test.tensors[0][:batch].to(device)
    model.to(device).eval()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        model(x)
        return float(torch.cuda.max_memory_allocated(device) - base) + storage_bytes(model)
    tracker = LiveStorage()
    with tracker:
        model(x)
    return float(tracker.peak) + storage_bytes(model)
