"""The "B after A" contract of ordercomp.layers, for every ordered pair of registered methods:
each mark A leaves (bit widths, sparsity, int8 kernels, exit heads) survives B, or B reports
`Incompatible` with a reason. A new method is covered here as soon as it is registered."""
from __future__ import annotations

import copy
import itertools
import sys

import pytest
import torch
from torch.utils.data import TensorDataset

from ordercomp.layers import compression_marks, sparse_weights
from ordercomp.methods.base import Context, Incompatible
from ordercomp.methods.registry import METHODS, get_method
from ordercomp.train import Budget
from testkit import TRANSFORMER_ONLY

PAIRS = list(itertools.product([name for name in METHODS if name not in TRANSFORMER_ONLY], repeat=2))  # on the tiny CNN


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


class FineTuning:
    """Watches the methods' fine-tuning from now on: the sparse weights each run starts from, and how
    many weights that were zero at its start it made non-zero."""

    def __init__(self, monkeypatch):
        self.starts, self.revived = [], 0
        for module in {sys.modules[method.apply_fn.__module__] for method in METHODS.values()}:
            if hasattr(module, "train"):
                monkeypatch.setattr(module, "train", self.watching(module.train))

    def watching(self, train):
        def watched(model, *args, **kwargs):
            start = [weight.detach().clone() for weight in sparse_weights(model)]
            self.starts.append(start)
            trained = train(model, *args, **kwargs)
            self.revived += sum(int(((before == 0) & (after != 0)).sum()) for before, after in zip(start, sparse_weights(trained)))
            return trained
        return watched


def revived(before: list[torch.Tensor], after: list[torch.Tensor]) -> int:
    """Weights zero in `before` and not in `after`, position by position."""
    return sum(int(((b == 0) & (a != 0)).sum()) for b, a in zip(before, after, strict=True))


def zeros_lost(model, out, tuning: FineTuning, mark: float) -> list[str]:
    """Where `out` breaks "zeros stay zero" for the sparse layers of `model`, in words. Layers that keep
    their shapes keep every zero in place; layers that changed shape started their fine-tuning either as a
    selection of the earlier weights (channels cut: every value copied, zeros included) or re-sparsified
    to the mark (factored); fine-tuning never makes a zero non-zero."""
    before, after = sparse_weights(model), sparse_weights(out)
    lost = [f"fine-tuning made {tuning.revived} zeroed weights non-zero"] if tuning.revived else []
    if [w.shape for w in before] == [w.shape for w in after]:
        count = revived(before, after)
        return lost + ([f"{count} zeroed weights became non-zero"] if count else [])
    start = tuning.starts[0] if tuning.starts else after
    selections = len(start) == len(before) and all(torch.isin(w, b).all() for w, b in zip(start, before))
    resparsified = all(int((w == 0).sum()) >= round(mark * w.numel()) for w in start)
    return lost + ([] if selections or resparsified else ["reshaped sparse layers are neither a selection of the old weights "
                                                         f"nor {mark:.0%} zeros"])


def lost_marks(before: dict, after: dict) -> list[str]:
    """The marks of `before` that `after` no longer honours, in words."""
    lost = []
    for bits in ("weight_bits", "act_bits"):
        if before[bits] is not None and (after[bits] is None or after[bits] > before[bits]):
            lost.append(f"{bits} {before[bits]} became {after[bits]}")
    if before["sparse_layers"] and (not after["sparse_layers"] or after["sparsity"] < before["sparsity"]):
        lost.append(f"sparsity mark {before['sparsity']} became {after['sparsity']}")
    if before["int8"] and not after["int8"]:
        lost.append("int8 kernels became float")
    if before["exits"] > after["exits"]:
        lost.append(f"{before['exits']} exit heads became {after['exits']}")
    return lost


@pytest.mark.parametrize("first, second", PAIRS, ids=[f"{a}-then-{b}" for a, b in PAIRS])
def test_marks_survive_a_later_method_or_it_reports_incompatible(first, second, after_first, small_context, monkeypatch):
    model = after_first(first)
    before = compression_marks(model)
    tuning = FineTuning(monkeypatch)  # the second method's fine-tuning only
    method = get_method(second)
    try:
        out = method.apply(model, method.default_config(), small_context)
    except Incompatible as reason:
        assert str(reason), f"{second} after {first} is incompatible without saying why"
        assert first == "int8" or (first, second) == ("quantize", "int8"), f"{second} after {first}: {reason}"
        assert "early_exit" not in (first, second), f"early exit and int8 combine in either order: {reason}"
        return
    after = compression_marks(out)
    assert lost_marks(before, after) == [], f"{second} after {first} lost marks"
    if before["sparse_layers"]:
        assert zeros_lost(model, out, tuning, before["sparsity"]) == [], f"{second} after {first} lost zeros"
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


@pytest.mark.parametrize("rounding", ["weight", "activation", "probabilities"])
def test_fake_quantisation_trains_straight_through_and_infers_the_same_values(rounding):
    """Quantisation-aware training rounds straight through: the values it trains on are the ones inference (and so an
    exported file) computes, to the bit, the gradient reaches the input unchanged, and the input itself is left as it was."""
    from ordercomp.layers import fake_quant_activation, fake_quant_probabilities, fake_quant_weight
    torch.manual_seed(0)
    tensor = torch.randn(4, 3, 9, 9).softmax(-1) if rounding == "probabilities" else torch.randn(16, 8)
    fake = {"weight": lambda x: fake_quant_weight(x, 4), "probabilities": lambda x: fake_quant_probabilities(x, 4),
            "activation": lambda x: fake_quant_activation(x, torch.tensor(-1.0), torch.tensor(1.5), 4)}[rounding]
    before = tensor.clone()
    trained_on = tensor.clone().requires_grad_(True)
    rounded = fake(trained_on)
    rounded.backward(torch.arange(rounded.numel(), dtype=torch.float32).view_as(rounded))
    with torch.no_grad():
        inferred = fake(tensor)
    assert torch.equal(rounded.detach(), inferred)
    per_grid = inferred if rounding == "weight" else inferred.view(1, -1)  # a weight's grid is per output channel
    assert max(row.unique().numel() for row in per_grid) <= 16 and not torch.equal(inferred, tensor)  # 4 bits, rounded
    assert torch.equal(trained_on.grad, torch.arange(tensor.numel(), dtype=torch.float32).view_as(tensor))
    assert torch.equal(tensor, before) and torch.equal(trained_on.detach(), before)
