"""Quantisation-aware training: weights and activations fake-quantised to 8, 4 or 2 bits.

Every conv and linear layer (exit heads included) becomes a fake-quantised layer; its bits are
what BitOps and storage count. A transformer's self-attention becomes a quantised attention that
fake-quantises the projections it reads as raw weights (in_proj, out_proj) and the operands of its
products (queries, keys, values, and the probabilities, on a log grid below 8 bits). Bits never go up:
quantising again keeps the lower of the two.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..layers import (SUPPORTED_BITS, all_outputs, called_layers, lower_activation_bits_, quantisable_attention, quantised_units,
                      replace_module, to_quant)
from ..train import train
from .base import Context, Method, check_choice, require_trainable


@dataclass(frozen=True)
class QuantizeConfig:
    weight_bits: int = field(default=4, metadata={"choices": SUPPORTED_BITS})
    act_bits: int = field(default=4, metadata={"choices": SUPPORTED_BITS})

    def __post_init__(self):
        check_choice("weight bits", self.weight_bits, SUPPORTED_BITS)
        check_choice("activation bits", self.act_bits, SUPPORTED_BITS)


@torch.no_grad()
def calibrate(model: nn.Module, context: Context, batches: int = 4) -> None:
    """Set activation ranges from a few training batches without touching BatchNorm statistics."""
    layers = quantised_units(model)
    model.to(context.device).eval()
    for layer in layers:
        layer.train()
    for index, (x, _) in enumerate(context.data.loader("train", context.budget.batch_size, shuffle=True, seed=context.seed)):
        if index == batches:
            break
        all_outputs(model, x.to(context.device))
    model.eval()


def apply(model: nn.Module, config: QuantizeConfig, context: Context) -> nn.Module:
    require_trainable(model, "quantize")
    for name, layer in called_layers(model, context.data.example_input(2)) + quantisable_attention(model):
        replace_module(model, name, to_quant(layer, config.weight_bits, config.act_bits))
    lower_activation_bits_(model, config.act_bits)
    calibrate(model, context)
    return train(model, context.data, context.budget, seed=context.seed, device=context.device,
                 progress=context.progress, label="quantization-aware training")


METHOD = Method("quantize", "Quantization-aware training", QuantizeConfig, apply, "weight_bits",
                "Fake-quantises weights and activations to 8/4/2 bits and fine-tunes.")
