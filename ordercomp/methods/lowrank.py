"""Low-rank factorisation: each conv (k x k) and linear layer becomes two thinner layers via SVD.

A conv W (Cout, Cin, k, k) is replaced by a k x k conv to r channels followed by a 1 x 1 conv to
Cout, r = rank_ratio * min(Cout, Cin*k*k); a layer is left alone when factoring would not save
MACs. The factors inherit the layer's bits and sparsity, then the model is fine-tuned.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..train import train
from ..layers import bits_of, called_layers, copy_marks, is_quantised, magnitude_prune_, output_layers, replace_module, sparsity_of, to_quant
from .base import Context, Incompatible, Method, check_range, require_classifier, require_trainable


@dataclass(frozen=True)
class LowRankConfig:
    rank_ratio: float = 0.3

    def __post_init__(self):
        check_range("rank ratio", self.rank_ratio, 0.0, 1.0, low_open=True, high_open=True)


def factor_rank(layer: nn.Module, rank_ratio: float) -> int | None:
    """The rank to factor a layer to, or None when factoring would not reduce its MACs."""
    matrix = layer.weight.flatten(1)
    out_dim, in_dim = matrix.shape
    rank = max(1, math.ceil(rank_ratio * min(out_dim, in_dim)))
    return rank if rank * (in_dim + out_dim) < out_dim * in_dim else None


@torch.no_grad()
def factorise(layer: nn.Module, rank: int, tied: nn.Sequential | None = None) -> nn.Sequential:
    """Two layers whose product is the best rank-`rank` approximation of `layer`'s weight; `tied`, the factors of
    another layer that holds the same weight (tied), whose two weights these share: the tie stays a tie."""
    u, s, vh = torch.linalg.svd(layer.weight.flatten(1).float(), full_matrices=False)
    root = s[:rank].sqrt()
    first_w, second_w = root[:, None] * vh[:rank], u[:, :rank] * root[None, :]
    if isinstance(layer, nn.Conv2d):
        first = nn.Conv2d(layer.in_channels, rank, layer.kernel_size, layer.stride, layer.padding, layer.dilation, bias=False)
        second = nn.Conv2d(rank, layer.out_channels, 1, bias=layer.bias is not None)
        first.weight.copy_(first_w.view(rank, *layer.weight.shape[1:]))
        second.weight.copy_(second_w.view(layer.out_channels, rank, 1, 1))
    else:
        first, second = nn.Linear(layer.in_features, rank, bias=False), nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
        first.weight.copy_(first_w)
        second.weight.copy_(second_w)
    if layer.bias is not None:
        second.bias.copy_(layer.bias)
    factored = nn.Sequential(*(_inherit(layer, part) for part in (first, second))).to(layer.weight.device)
    for part, other in zip(factored, tied or ()):
        part.weight = other.weight
    return factored


def _inherit(original: nn.Module, part: nn.Module) -> nn.Module:
    if is_quantised(original):
        part = to_quant(part, *bits_of(original))
    if sparsity_of(original) is not None:
        magnitude_prune_(part, sparsity_of(original))
    copy_marks(original, part)
    return part


def apply(model: nn.Module, config: LowRankConfig, context: Context) -> nn.Module:
    require_trainable(model, "lowrank")
    require_classifier(model, "lowrank")
    keep = {id(layer) for layer in output_layers(model)}
    factors: dict[int, nn.Sequential] = {}  # a weight's id: its factors, which a layer holding it too (tied) shares
    for name, layer in called_layers(model, context.data.example_input(2)):
        if id(layer) in keep or getattr(layer, "groups", 1) != 1:
            continue
        rank = factor_rank(layer, config.rank_ratio)
        if rank is not None:
            factored = factorise(layer, rank, factors.get(id(layer.weight)))
            factors.setdefault(id(layer.weight), factored)
            replace_module(model, name, factored)
    if not factors:
        raise Incompatible(f"no layer gets cheaper at rank ratio {config.rank_ratio}: lower the rank ratio")
    return train(model, context.data, context.budget, seed=context.seed, device=context.device,
                 progress=context.progress, label="fine-tune")


METHOD = Method("lowrank", "Low-rank factorization", LowRankConfig, apply, "rank_ratio",
                "SVD splits each conv/linear layer into two thinner ones, then fine-tunes.")
