"""The "B after A" contract of ordercomp.layers, for every ordered pair of registered methods:
each mark A leaves (bit widths, sparsity, int8 kernels, exit heads) survives B, or B reports
`Incompatible` with a reason. A new method is covered here as soon as it is registered."""
from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch.utils.data import TensorDataset

from ordercomp.layers import compression_marks, sparse_weights
from ordercomp.methods.base import Context, Incompatible
from ordercomp.methods.registry import METHODS, get_method
from ordercomp.train import Budget

PAIRS = list(itertools.product(METHODS, repeat=2))


def _few(split: TensorDataset, count: int) -> TensorDataset:
    return TensorDataset(*(tensor[:count] for tensor in split.tensors))


@pytest.fixture(scope="module")
def small_context(digits):
    """One epoch over 128 training images: enough for every method to leave its marks."""
    few = copy.copy(digits)
    few.train, few.val, few.test = _few(digits.train, 128), _few(digits.val, 64), _few(digits.test, 64)
    return Context(few, Budget(epochs=1), seed=0)


@pytest.fixture(scope="module")
def after_first(tiny_model, small_context):
    """Each method applied once to the tiny model, made on first use."""
    made = {}

    def first(name: str):
        if name not in made:
            method = get_method(name)
            made[name] = method.apply(tiny_model, method.default_config(), small_context)
        return made[name]

    return first


def zero_fraction(model) -> float:
    weights = sparse_weights(model)
    return float(sum((w == 0).sum() for w in weights) / sum(w.numel() for w in weights))


def lost_marks(before: dict, after: dict, zeros_before: float | None, zeros_after: float | None) -> list[str]:
    """The marks of `before` that `after` no longer honours, in words."""
    lost = []
    for bits in ("weight_bits", "act_bits"):
        if before[bits] is not None and (after[bits] is None or after[bits] > before[bits]):
            lost.append(f"{bits} {before[bits]} became {after[bits]}")
    if before["sparse_layers"] and (not after["sparse_layers"] or after["sparsity"] < before["sparsity"]):
        lost.append(f"sparsity mark {before['sparsity']} became {after['sparsity']}")
    if zeros_before is not None and zeros_after is not None and zeros_after < 0.8 * zeros_before:
        lost.append(f"the zeros of sparse layers fell from {zeros_before:.0%} to {zeros_after:.0%}")
    if before["int8"] and not after["int8"]:
        lost.append("int8 kernels became float")
    if before["exits"] > after["exits"]:
        lost.append(f"{before['exits']} exit heads became {after['exits']}")
    return lost


@pytest.mark.parametrize("first, second", PAIRS, ids=[f"{a}-then-{b}" for a, b in PAIRS])
def test_marks_survive_a_later_method_or_it_reports_incompatible(first, second, after_first, small_context):
    model = after_first(first)
    before = compression_marks(model)
    method = get_method(second)
    try:
        out = method.apply(model, method.default_config(), small_context)
    except Incompatible as reason:
        assert str(reason), f"{second} after {first} is incompatible without saying why"
        assert first == "int8" or (first, second) == ("quantize", "int8"), f"{second} after {first}: {reason}"
        assert "early_exit" not in (first, second), f"early exit and int8 combine in either order: {reason}"
        return
    after = compression_marks(out)
    zeros = (zero_fraction(model), zero_fraction(out)) if before["sparse_layers"] and after["sparse_layers"] else (None, None)
    assert lost_marks(before, after, *zeros) == [], f"{second} after {first} lost marks"
    with torch.no_grad():
        assert out.eval()(small_context.data.test.tensors[0][:4]).shape == (4, small_context.data.num_classes)


def test_each_method_leaves_the_marks_it_promises(after_first):
    marks = {name: compression_marks(after_first(name)) for name in ("quantize", "sparsify", "int8", "early_exit")}
    assert marks["quantize"]["weight_bits"] == METHODS["quantize"].default_config().weight_bits
    assert marks["sparsify"]["sparsity"] == METHODS["sparsify"].default_config().sparsity
    assert marks["int8"]["int8"] and marks["int8"]["weight_bits"] == 8
    assert marks["early_exit"]["exits"] == 2


def test_int8_mark_survives_a_deep_copy(after_first):
    """Method.apply deep-copies its input; the int8 parts must still say what they are."""
    assert compression_marks(copy.deepcopy(after_first("int8"))) == compression_marks(after_first("int8"))
