"""Structured channel pruning with Torch-Pruning: whole channels leave, the model gets smaller.

B after A: the channels of whatever A produced are ranked and removed, quantised layers stay
quantised, exit heads are pruned together with the body they hang from; then fine-tuning.

A Vision Transformer (torchvision's) loses the hidden units of its MLPs; the embedding every block adds to
(patch embedding, attention, each MLP's last layer) keeps its width: pruning 30 % of it left the digits32_vit
sample at chance before fine-tuning (11.7 %, and 56 % after an epoch), its MLPs alone at 95.0 %.
Distillation's student narrows the embedding too (`shrink_width(embedding=True)`), in multiples of the heads:
the heads keep their number with a narrower head dimension (nn.MultiheadAttention's inner width is its
embedding, so a head cannot leave alone), and the model's `hidden_dim`, which its forward reshapes the
patches to, follows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn
from torchvision.models.vision_transformer import EncoderBlock

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


def shrink_width(model: nn.Module, ratio: float, importance: str, context: Context, *, embedding: bool = True) -> nn.Module:
    """Remove `ratio` of the channels of every prunable layer but the classifiers, in place; without `embedding`,
    a ViT keeps the width of its embedding (only its MLPs' hidden units go)."""
    example = context.data.example_input(2).to(context.device)
    model.to(context.device).eval()
    torch.manual_seed(context.seed)
    try:
        with tokens_unmerged(model):
            pruner = tp.pruner.BasePruner(
                model, example, importance=IMPORTANCE[importance](), pruning_ratio=ratio,
                ignored_layers=output_layers(model) + ([] if embedding else _embedding_writers(model)),
                forward_fn=lambda m, x: sum(all_outputs(m, x)),
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
        vit.hidden_dim = vit.class_token.shape[-1]  # its forward reshapes the patch embedding to this width (pruned with
        # the embedding; the patch embedding may be two convolutions after lowrank)
    _check_runs(model, example)
    return model


def _embedding_writers(model: nn.Module) -> list[nn.Module]:
    """The layers of a ViT that write its embedding: patch embedding, attention, and each MLP's last linear layer."""
    writers = []
    for vit in vision_transformers(model):
        writers += [vit.conv_proj] + [m for m in vit.modules() if isinstance(m, nn.MultiheadAttention)]
        writers += [[layer for layer in block.mlp.modules() if isinstance(layer, nn.Linear)][-1]
                    for block in vit.modules() if isinstance(block, EncoderBlock)]
    return writers


def _heads(model: nn.Module) -> int | None:
    """Widths are pruned in multiples of the attention's heads (None without attention), so the heads keep their number."""
    heads = [m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    return math.lcm(*heads) if heads else None


@torch.no_grad()
def _check_runs(model: nn.Module, example: torch.Tensor) -> None:
    """The pruned network must still run its own forward, which may hold widths Torch-Pruning cannot see."""
    try:
        all_outputs(model, example)
    except Exception as error:  # the user's forward raises whatever its code meets
        raise PruningError(f"Torch-Pruning removed channels that the forward still expects ({one_line(error)}): a forward that "
                           "reshapes to a width it keeps in an attribute cannot be pruned (torchvision's VisionTransformer "
                           "can: its hidden_dim follows)") from error


def apply(model: nn.Module, config: PruneConfig, context: Context) -> nn.Module:
    require_trainable(model, "prune")
    require_classifier(model, "prune")
    shrink_width(model, config.ratio, config.importance, context, embedding=False)
    return train(model, context.data, context.budget, seed=context.seed, device=context.device,
                 progress=context.progress, label="fine-tune")


METHOD = Method("prune", "Structured pruning", PruneConfig, apply, "ratio",
                "Torch-Pruning removes a fraction of channels in every layer, then fine-tunes.")
