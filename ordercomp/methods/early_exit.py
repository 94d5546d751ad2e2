"""Early exit: classifier heads after intermediate stages; a confident sample leaves early.

The model's cost becomes an expectation over the data (the fraction of samples leaving at each
exit, see metrics). The body is frozen while the exit heads (linear probes, trained at their own
learning rate) train, so the final exit keeps its accuracy; later methods fine-tune body and exits together and prune or quantise them alike.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..train import train
from ..layers import bits_of, mark_logits_layer, quantised_layers, to_quant
from .base import Context, Incompatible, Method, check_range, require_staged


class EarlyExitNet(nn.Module):
    """A staged network with an exit head after every stage but the last."""

    def __init__(self, stem: nn.Module, stages: nn.ModuleList, head: nn.Module, exits: list[nn.Module], threshold: float):
        super().__init__()
        self.stem, self.stages, self.head = stem, stages, head
        self.exits = nn.ModuleList(exits)
        self.threshold = threshold

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every exit, the final head last (training and statistics)."""
        outputs, x = [], self.stem(x)
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index < len(self.exits):
                outputs.append(self.exits[index](x))
        return outputs + [self.head(x)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Each sample stops at the first exit whose confidence reaches the threshold."""
        if self.training:
            return self.forward_all(x)[-1]
        out, active, x = None, torch.arange(x.shape[0], device=x.device), self.stem(x)
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index == len(self.exits):
                break
            logits = self.exits[index](x)
            out = logits.new_empty(active.shape[0], logits.shape[1]) if out is None else out
            done = confident(logits, self.threshold)
            out[active[done]] = logits[done]
            active, x = active[~done], x[~done]
            if active.numel() == 0:
                return out
        final = self.head(x)
        out = final.new_empty(active.shape[0], final.shape[1]) if out is None else out
        out[active] = final
        return out


class StaticExitSelect(nn.Module):
    """The same predictions without data-dependent control flow, for torch.export and ONNX."""

    def __init__(self, model: EarlyExitNet):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return select_exits(self.model.forward_all(x), self.model.threshold)[0]


class ConditionalExits(nn.Module):
    """Early exit a runtime acts on: after each exit head a condition (torch.cond, an ONNX If) skips the
    rest of the network once every image of the batch has a confident exit, so at batch 1 each image
    stops at its first confident exit. Predictions equal StaticExitSelect's."""

    def __init__(self, model: EarlyExitNet):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._from_stage(0, self.model.stem(x), None, None)

    def _from_stage(self, index: int, x: torch.Tensor, chosen: torch.Tensor | None, decided: torch.Tensor | None) -> torch.Tensor:
        model = self.model
        x = model.stages[index](x)
        if index == len(model.exits):
            final = model.head(x)
            return final if chosen is None else torch.where(decided.unsqueeze(1), chosen, final)
        logits = model.exits[index](x)
        sure = confident(logits, model.threshold)
        if chosen is None:
            chosen, decided = logits, sure
        else:
            chosen, decided = torch.where(decided.unsqueeze(1), chosen, logits), decided | sure
        return torch.cond(decided.all(), lambda x, chosen, decided: chosen.clone(),
                          lambda x, chosen, decided: self._from_stage(index + 1, x, chosen, decided), (x, chosen, decided))


def confident(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    return F.softmax(logits, dim=1).amax(dim=1) >= threshold


def select_exits(outputs: list[torch.Tensor], threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen logits, exit index) per sample: the first confident exit, else the final head."""
    chosen, exit_index = outputs[-1], torch.full((outputs[-1].shape[0],), len(outputs) - 1, device=outputs[-1].device)
    for index in reversed(range(len(outputs) - 1)):
        take = confident(outputs[index], threshold)
        chosen = torch.where(take.unsqueeze(1), outputs[index], chosen)
        exit_index = torch.where(take, torch.full_like(exit_index, index), exit_index)
    return chosen, exit_index


@dataclass(frozen=True)
class EarlyExitConfig:
    threshold: float = 0.9
    head_lr: float = 0.05

    def __post_init__(self):
        check_range("exit threshold", self.threshold, 0.0, 1.0, low_open=True)
        check_range("exit head learning rate", self.head_lr, 0.0, 1.0, low_open=True)


def exit_head(channels: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), mark_logits_layer(nn.Linear(4 * channels, num_classes)))


@torch.no_grad()
def stage_channels(model: nn.Module, example: torch.Tensor) -> list[int]:
    """The channels of every stage's output; Incompatible when a stage ends in something else than a
    feature map (N, C, H, W), which an exit head cannot pool."""
    x, channels = model.stem(example), []
    for index, stage in enumerate(model.stages):
        x = stage(x)
        if x.dim() != 4:
            raise Incompatible(f"early exit heads pool feature maps (N, C, H, W), and stage {index + 1} ends in a tensor of shape "
                               f"{tuple(x.shape)}: end the stages (--stages) at convolutional feature maps")
        channels.append(x.shape[1])
    return channels


def apply(model: nn.Module, config: EarlyExitConfig, context: Context) -> nn.Module:
    require_staged(model, "early_exit")
    if len(model.stages) < 2:
        raise Incompatible("early_exit adds exits after every stage but the last, and this model has one stage: "
                           "name at least two with --stages")
    model.to(context.device).eval()
    if not isinstance(model, EarlyExitNet):
        model = _add_exits(model, context)
    model.threshold = config.threshold
    exit_params = list(model.exits.parameters())
    exit_ids = {id(p) for p in exit_params}
    frozen = [p for p in model.parameters() if id(p) not in exit_ids and p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    budget = dataclasses.replace(context.budget, lr=config.head_lr)
    train(model, context.data, budget, seed=context.seed, device=context.device, params=exit_params,
          progress=context.progress, label="train exits")
    for p in frozen:
        p.requires_grad_(True)
    return model


def _add_exits(model: nn.Module, context: Context) -> EarlyExitNet:
    """New exit heads, quantised like the body when the body is quantised already."""
    channels = stage_channels(model, context.data.example_input(2).to(context.device))
    heads = [exit_head(c, context.data.num_classes) for c in channels[:-1]]
    bits = [bits_of(layer) for _, layer in quantised_layers(model)]
    if bits:
        weight_bits, act_bits = min(b[0] for b in bits), min(b[1] for b in bits)
        for head in heads:
            head[2] = to_quant(head[2], weight_bits, act_bits)
    return EarlyExitNet(model.stem, model.stages, model.head, heads, 1.0).to(context.device)


METHOD = Method("early_exit", "Early exit", EarlyExitConfig, apply, "threshold",
                "Adds trained exit heads after intermediate stages; confident samples stop early.")
