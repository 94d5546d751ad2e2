"""The one small interface every compression method implements.

A method is a frozen config dataclass that validates its own fields, plus an apply function
`apply(model, config, context) -> model`. `Method.apply` hands the function a deep copy, so the
caller's model is never mutated. A method that cannot apply to a model raises `Incompatible`;
no method applies to a loaded program (.pt2, TorchScript), whose layers are fixed in a graph.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..data.datasets import DataBundle
from ..fields import number, typed_fields
from ..layers import is_int8_converted, is_staged, output_layers
from ..models.programs import ProgramModel, measure_only_reason
from ..models.structure import structure_of
from ..train import Budget, Progress

CONFIG_VERSION = 1


class Incompatible(Exception):
    """This method cannot apply to this model; the message says why and what to do instead."""


@dataclass
class Context:
    """What a method may use besides the model: data, the fine-tuning budget, a seed, a device."""

    data: DataBundle
    budget: Budget
    seed: int = 0
    device: torch.device = torch.device("cpu")
    progress: Progress | None = None

    def report(self, label: str, fraction: float) -> None:
        if self.progress:
            self.progress(label, fraction)


@dataclass(frozen=True)
class Method:
    """A registry entry: the method's name, its config type and its apply function."""

    name: str
    title: str
    config_type: type
    apply_fn: Callable[[nn.Module, Any, Context], nn.Module]
    strength: str
    summary: str

    def default_config(self):
        return self.config_type()

    def make_config(self, **fields):
        unknown = set(fields) - {f.name for f in dataclasses.fields(self.config_type)}
        if unknown:
            raise ValueError(f"{self.name} has no setting {', '.join(sorted(unknown))}: use {', '.join(config_fields(self.config_type))}")
        return self.config_type(**typed_fields(self.config_type, fields, prefix=f"{self.name}."))

    def apply(self, model: nn.Module, config, context: Context) -> nn.Module:
        if not isinstance(config, self.config_type):
            raise TypeError(f"{self.name} needs a {self.config_type.__name__}, got {type(config).__name__}")
        if isinstance(model, ProgramModel):
            raise Incompatible(f"{self.name} rewrites layers: {measure_only_reason(model.kind, model.path)}")
        return self.apply_fn(copy.deepcopy(model), config, context)


def config_fields(config_type: type) -> list[str]:
    return [f.name for f in dataclasses.fields(config_type)]


def config_to_dict(method: str, config) -> dict:
    """JSON-ready form of a config with a type tag and a version."""
    return {"method": method, "version": CONFIG_VERSION, **dataclasses.asdict(config)}


def check_range(name: str, value: float, low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> None:
    """Raise a ValueError naming the setting when `value` is not a finite number inside its allowed range."""
    number(name, value, float)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} must be in {left}{low}, {high}{right}, got {value}")


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def require_trainable(model: nn.Module, method: str) -> None:
    """Methods that fine-tune or rewrite layers need float parameters they can change."""
    if is_int8_converted(model):
        raise Incompatible(f"{method} cannot change a model already converted to int8 kernels: apply {method} before int8")
    if not any(p.requires_grad for p in model.parameters()):
        raise Incompatible(f"{method} needs trainable parameters, and this model has none")


def require_staged(model: nn.Module, method: str) -> None:
    """Early exits, int8 part by part and distillation's depth need the stem -> stages -> head split."""
    if not is_staged(model):
        structure = structure_of(model)
        why = structure.why_no_stages if structure and structure.why_no_stages else "the model is not split into stem, stages and head"
        how = ("naming them with --stages needs it traced too: keep Python branches on a tensor's values or sizes out of "
               "the forward" if structure and not structure.traced else
               "name them with --stages (the modules whose outputs end the stages: a CNN's stages, a transformer's blocks)")
        raise Incompatible(f"{method} needs stage boundaries: {why}; {how}")


def require_classifier(model: nn.Module, method: str) -> None:
    """Methods that change layers keep the classifier whole, so they must know which layer it is."""
    if not output_layers(model):
        structure = structure_of(model)
        why = structure.why_no_classifier if structure and structure.why_no_classifier else "no layer is marked as the classifier"
        raise Incompatible(f"{method} keeps the classifier's outputs and does not know which layer gives the logits: {why}; "
                           "name it with --classifier")
