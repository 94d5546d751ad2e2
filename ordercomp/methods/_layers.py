"""Layer-level machinery the methods share: fake-quantised conv/linear layers, sparsity marks,
and the walk over a model's compute layers.

Compression state lives on the layers themselves (`weight_bits`, `act_bits`, `sparsity`), so a
later method sees and keeps what an earlier one did: pruning slices a quantised layer and it stays
quantised; low-rank factors inherit the bits and sparsity of the layer they replace.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FULL_BITS = 32
SUPPORTED_BITS = (2, 4, 8)


def fake_quant_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel quantisation with a straight-through gradient."""
    qmax = 2 ** (bits - 1) - 1
    flat = weight.detach().flatten(1).abs().amax(dim=1).clamp_min(1e-8)
    scale = (flat / qmax).view(-1, *([1] * (weight.dim() - 1)))
    quantised = torch.clamp(torch.round(weight / scale), -qmax, qmax) * scale
    return weight + (quantised - weight).detach()


def fake_quant_activation(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor, bits: int) -> torch.Tensor:
    """Asymmetric per-tensor quantisation over [low, high] with a straight-through gradient."""
    levels = 2 ** bits - 1
    scale = ((high - low) / levels).clamp_min(1e-8)
    zero = torch.round(-low / scale)
    quantised = (torch.clamp(torch.round(x / scale) + zero, 0, levels) - zero) * scale
    return x + (quantised - x).detach()


class _QuantMixin:
    """Fake quantisation of the input activation and of the weight, with an EMA range observer."""

    def _init_quant(self, weight_bits: int, act_bits: int) -> None:
        self.weight_bits, self.act_bits = weight_bits, act_bits
        self.register_buffer("act_low", torch.zeros(()))
        self.register_buffer("act_high", torch.zeros(()))
        self.register_buffer("observed", torch.zeros((), dtype=torch.bool))

    def _quant_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_bits >= FULL_BITS:
            return x
        if self.training:
            self._observe(x.detach())
        return fake_quant_activation(x, self.act_low, self.act_high, self.act_bits)

    def _observe(self, x: torch.Tensor) -> None:
        low, high = x.min().clamp_max(0.0), x.max().clamp_min(0.0)
        if not bool(self.observed):
            self.act_low.copy_(low), self.act_high.copy_(high), self.observed.fill_(True)
        else:
            self.act_low.lerp_(low, 0.1), self.act_high.lerp_(high, 0.1)

    def _quant_weight(self) -> torch.Tensor:
        return self.weight if self.weight_bits >= FULL_BITS else fake_quant_weight(self.weight, self.weight_bits)


class QuantConv2d(_QuantMixin, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self._quant_input(x), self._quant_weight(), self.bias)


class QuantLinear(_QuantMixin, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._quant_input(x), self._quant_weight(), self.bias)


def compute_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The conv and linear layers of a model, with their qualified names."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def bits_of(layer: nn.Module) -> tuple[int, int]:
    """(weight bits, activation bits) of a layer; full precision unless quantised."""
    return getattr(layer, "weight_bits", FULL_BITS), getattr(layer, "act_bits", FULL_BITS)


def to_quant(layer: nn.Module, weight_bits: int, act_bits: int) -> nn.Module:
    """A quantised copy of a conv/linear layer; bits never go up if it is quantised already."""
    old_w, old_a = bits_of(layer)
    weight_bits, act_bits = min(weight_bits, old_w), min(act_bits, old_a)
    if isinstance(layer, (QuantConv2d, QuantLinear)):
        layer.weight_bits, layer.act_bits = weight_bits, act_bits
        return layer
    quant = layer_like(layer, QuantConv2d, QuantLinear)
    quant._init_quant(weight_bits, act_bits)
    quant.to(layer.weight.device)
    quant.load_state_dict(layer.state_dict(), strict=False)
    copy_marks(layer, quant)
    return quant


def layer_like(layer: nn.Module, conv_type: type = nn.Conv2d, linear_type: type = nn.Linear) -> nn.Module:
    """A new, uninitialised layer of the given class with `layer`'s shape and hyperparameters."""
    if isinstance(layer, nn.Conv2d):
        return conv_type(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                         layer.dilation, layer.groups, layer.bias is not None, layer.padding_mode)
    return linear_type(layer.in_features, layer.out_features, layer.bias is not None)


def copy_marks(source: nn.Module, target: nn.Module) -> None:
    """Carry the sparsity mark over to a layer that replaces `source`."""
    if hasattr(source, "sparsity"):
        target.sparsity = source.sparsity


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def magnitude_prune_(layer: nn.Module, sparsity: float) -> None:
    """Zero the smallest-magnitude fraction `sparsity` of a layer's weights and mark it sparse."""
    weight = layer.weight.data
    count = int(round(sparsity * weight.numel()))
    if count > 0:
        threshold = weight.abs().flatten().kthvalue(count).values
        weight.mul_((weight.abs() > threshold).to(weight.dtype))
    layer.sparsity = max(sparsity, getattr(layer, "sparsity", 0.0))


def sparse_masks(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, mask of non-zeros) for every layer marked sparse, so fine-tuning keeps the zeros."""
    return [(m.weight, (m.weight.data != 0).to(m.weight.dtype)) for _, m in compute_layers(model) if hasattr(m, "sparsity")]
