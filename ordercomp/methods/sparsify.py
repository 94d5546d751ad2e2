"""Unstructured magnitude pruning: the smallest weights become zero and stay zero.

The layers keep their shape (MACs do not change on dense kernels); storage is counted for
sparse storage (a bitmap plus the non-zero values). Later fine-tuning keeps the zeros.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..train import train
from ..layers import compute_layers, magnitude_prune_, output_layers
from .base import Context, Method, check_range, require_classifier, require_trainable


@dataclass(frozen=True)
class SparsifyConfig:
    sparsity: float = 0.7

    def __post_init__(self):
        check_range("sparsity", self.sparsity, 0.0, 1.0, low_open=True, high_open=True)


def apply(model: nn.Module, config: SparsifyConfig, context: Context) -> nn.Module:
    require_trainable(model, "sparsify")
    require_classifier(model, "sparsify")
    keep_dense = {id(layer) for layer in output_layers(model)}
    for _, layer in compute_layers(model):
        if id(layer) not in keep_dense:
            magnitude_prune_(layer, config.sparsity)
    return train(model, context.data, context.budget, seed=context.seed, device=context.device,
                 progress=context.progress, label="fine-tune")


METHOD = Method("sparsify", "Unstructured pruning", SparsifyConfig, apply, "sparsity",
                "Zeroes the smallest weights of every layer; storage counts only non-zeros.")
