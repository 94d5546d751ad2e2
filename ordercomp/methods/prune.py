"""Structured channel pruning with Torch-Pruning: whole channels leave, the model gets smaller.

B after A: the channels of whatever A produced are ranked and removed, quantised layers stay
quantised, exit heads are pruned together with the body they hang from; then fine-tuning.

A Vision Transformer (torchvision's) loses width as Torch-Pruning prunes it: the MLPs' hidden units, and
the embedding every block shares (patch embedding, class token, position embeddings, norms, the attention's
projections and the classifier's input) in multiples of the heads: the heads keep their number with a
narrower head dimension (nn.MultiheadAttention's inner width is its embedding, so a head cannot leave alone;
channels are ranked over the whole embedding, so a head need not keep its own ones, which fine-tuning
follows). The model's `hidden_dim`, which its forward reshapes the patches to, follows the pruned embedding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from ..errors import one_line
from ..layers import all_outputs, output_layers
from ..models.structure import vision_transformers
from ..train import train
from .base import Context, Method, check_choice, check_range, require_classifier, require_trainable
from .token_merge import tokens_unmerged

IMPORTANCE = {
    "l1": lambda: tp.importance.MagnitudeImportance(p=1),
    "l2": lambda: tp.importance.MagnitudeImportance(p=2),
    "bn_scale": lambda: tp.importance.BNScaleImportance(),
    "random": lambda: tp.importance.RandomImportance(),
}


@dataclass(frozen=True)
class PruneConfig:
    ratio: float = 0.5
    importance: str = field(default="l2", metadata={"choices": tuple(IMPORTANCE)})

    def __post_init__(self):
        check_range("prune ratio", self.ratio, 0.0, 1.0, low_open=True, high_open=True)
        check_choice("prune importance", self.importance, tuple(IMPORTANCE))


class PruningError(RuntimeError):
    """Torch-Pruning failed on this network: the step fails with a reason that says so."""


def shrink_width(model: nn.Module, ratio: float, importance: str, context: Context) -> nn.Module:
    """Remove `ratio` of the channels of every prunable layer but the classifiers, in place."""
    example = context.data.example_input(2).to(context.device)
    model.to(context.device).eval()
    torch.manual_seed(context.seed)
    try:
        with tokens_unmerged(model):
            pruner = tp.pruner.BasePruner(
                model, example, importance=IMPORTANCE[importance](), pruning_ratio=ratio,
                ignored_layers=output_layers(model), forward_fn=lambda m, x: sum(all_outputs(m, x)),
                in_channel_groups={}, out_channel_groups={}, num_heads={}, round_to=_heads(model),
                # a ViT's class token and position embeddings are parameters no layer owns, pruned along the embedding
                unwrapped_parameters=[(p, p.dim() - 1) for vit in vision_transformers(model)
                                      for p in (vit.class_token, vit.encoder.pos_embedding)],
            )
            pruner.step()
    except Exception as error:  # raised deep inside Torch-Pruning's graph walk, where the bare error names no culprit
        raise PruningError(f"Torch-Pruning could not prune this network's channels ({one_line(error)}): "
                           "sparsify or lowrank make it smaller without it") from error
    for vit in vision_transformers(model):
        vit.hidden_dim = vit.conv_proj.out_channels  # its forward reshapes the patch embedding to this width
    return model


def _heads(model: nn.Module) -> int | None:
    """Widths are pruned in multiples of the attention's heads (None without attention), so the heads keep their number."""
    heads = [m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    return math.lcm(*heads) if heads else None


def apply(model: nn.Module, config: PruneConfig, context: Context) -> nn.Module:
    require_trainable(model, "prune")
    require_classifier(model, "prune")
    shrink_width(model, config.ratio, config.importance, context)
    return train(model, context.data, context.budget, seed=context.seed, device=context.device,
                 progress=context.progress, label="fine-tune")


METHOD = Method("prune", "Structured pruning", PruneConfig, apply, "ratio",
                "Torch-Pruning removes a fraction of channels in every layer, then fine-tunes.")
