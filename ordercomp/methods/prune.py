"""Structured channel pruning with Torch-Pruning: whole channels leave, the model gets smaller.

B after A: the channels of whatever A produced are ranked and removed, quantised layers stay
quantised, exit heads are pruned together with the body they hang from; then fine-tuning.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from ..errors import one_line
from ..layers import all_outputs, output_layers
from ..train import train
from .base import Context, Method, check_choice, check_range, require_classifier, require_trainable

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
        pruner = tp.pruner.BasePruner(
            model, example, importance=IMPORTANCE[importance](), pruning_ratio=ratio,
            ignored_layers=output_layers(model), forward_fn=lambda m, x: sum(all_outputs(m, x)),
            in_channel_groups={}, out_channel_groups={}, num_heads={},
        )
        pruner.step()
    except Exception as error:  # raised deep inside Torch-Pruning's graph walk, where the bare error names no culprit
        raise PruningError(f"Torch-Pruning could not prune this network's channels ({one_line(error)}): "
                           "sparsify or lowrank make it smaller without it") from error
    _check_runs(model, example)
    return model


@torch.no_grad()
def _check_runs(model: nn.Module, example: torch.Tensor) -> None:
    """The pruned network must still run its own forward, which may hold widths Torch-Pruning cannot see."""
    try:
        all_outputs(model, example)
    except Exception as error:  # the user's forward raises whatever its code meets
        raise PruningError(f"Torch-Pruning removed channels that the forward still expects ({one_line(error)}): a forward that "
                           "reshapes to a width it keeps in an attribute (as torchvision's VisionTransformer does) cannot be "
                           "pruned") from error


def apply(model: nn.Module, config: PruneConfig, context: Context) -> nn.Module:
    require_trainable(model, "prune")
    require_classifier(model, "prune")
    shrink_width(model, config.ratio, config.importance, context)
    return train(model, context.data, context.budget, seed=context.seed, device=context.device,
                 progress=context.progress, label="fine-tune")


METHOD = Method("prune", "Structured pruning", PruneConfig, apply, "ratio",
                "Torch-Pruning removes a fraction of channels in every layer, then fine-tunes.")
