"""Weights as the methods take them: plain tensors, in float32.

Weights a user's network computes from others (weight_norm, spectral_norm, any torch parametrization) are folded
into plain weights as inference does (`torch.nn.utils.parametrize.remove_parametrizations`, `remove_weight_norm`).

The methods read and replace a layer's `weight`: Torch-Pruning narrows `weight` while the parametrization keeps its
`original0` and `original1` at full width, lowrank factors a weight the forward recomputes, quantization's layers copy
a parametrized layer's `weight` without its parametrization. A folded layer computes what it computed before, in
evaluation; fine-tuning then trains the plain weight. torch's older hooks (`torch.nn.utils.weight_norm`,
`torch.nn.utils.spectral_norm`) also leave after a forward with gradients a weight that `copy.deepcopy` refuses.

A network handed over inside the wrapper that compiled or distributed it (`torch.compile`'s OptimizedModule,
DataParallel, DistributedDataParallel) is taken as the module it wraps: the wrapper has no forward of its own to trace,
and its state dict adds a prefix (`_orig_mod.`, `module.`) to every name.

A network handed over in half precision or bfloat16 (as mixed-precision training or a `.half()` for deployment leaves
it) is made float32: the data, fine-tuning and every measurement are float32, and int8 and 4-bit quantization start
from float weights.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize, remove_spectral_norm, remove_weight_norm
from torch.nn.utils.spectral_norm import SpectralNorm, SpectralNormLoadStateDictPreHook
from torch.nn.utils.weight_norm import WeightNorm

HOOKS = {WeightNorm: ("weight_norm", remove_weight_norm), SpectralNorm: ("spectral_norm", remove_spectral_norm)}


def fold_reparametrizations_(model: nn.Module) -> list[str]:
    """Fold every reparametrized weight of `model` into a plain one, in place (in evaluation: spectral_norm does no
    power iteration); what was folded, as 'kind of layer.weight', in the order of the layers. Not under no_grad:
    `remove_parametrizations` keeps a weight computed from several tensors a Parameter only where it needs a gradient."""
    was_training = model.training
    model.eval()
    folded = []
    for name, module in model.named_modules():
        folded += [f"{kind} of {_qualified(name, tensor)}" for kind, tensor in _fold_module_(module)]
    model.train(was_training)
    return folded


def _fold_module_(module: nn.Module) -> list[tuple[str, str]]:
    """(kind, tensor name) of what was folded in `module` itself."""
    folded = []
    for hook in [hook for hook in module._forward_pre_hooks.values() if type(hook) in HOOKS]:
        kind, remove = HOOKS[type(hook)]
        remove(module, hook.name)
        _drop_spectral_norm_load_hook(module, hook.name)
        folded.append((kind, hook.name))
    if parametrize.is_parametrized(module):
        for tensor, chain in list(module.parametrizations.items()):
            kind = "+".join(_kind(p) for p in chain)
            parametrize.remove_parametrizations(module, tensor, leave_parametrized=True)
            folded.append((kind, tensor))
    return folded


def _drop_spectral_norm_load_hook(module: nn.Module, name: str) -> None:
    """Drop the load_state_dict pre-hook of a removed spectral_norm, which `remove_spectral_norm` leaves behind (it looks
    for the hook itself, and torch keeps it wrapped in a _WrappedHook): the folded layer then refused its plain weights,
    asking for weight_orig and weight_u."""
    for key, hook in list(module._load_state_dict_pre_hooks.items()):
        spectral = getattr(hook, "hook", hook)
        if isinstance(spectral, SpectralNormLoadStateDictPreHook) and spectral.fn.name == name:
            del module._load_state_dict_pre_hooks[key]


def _kind(parametrization: nn.Module) -> str:
    """weight_norm, spectral_norm or the parametrization's class (torch's are _WeightNorm and _SpectralNorm)."""
    return {"_WeightNorm": "weight_norm", "_SpectralNorm": "spectral_norm"}.get(type(parametrization).__name__,
                                                                                type(parametrization).__name__)


def _qualified(module_name: str, tensor: str) -> str:
    return f"{module_name}.{tensor}" if module_name else tensor


def copyable_(model: nn.Module) -> nn.Module:
    """`model` with the weights its older weight_norm and spectral_norm hooks keep recomputed without gradients, so
    `copy.deepcopy` takes it (after a training forward they are not graph leaves); its forward recomputes them anyway."""
    with torch.no_grad():
        for module in model.modules():
            for hook in [hook for hook in module._forward_pre_hooks.values() if type(hook) in HOOKS]:
                weight = hook.compute_weight(module) if isinstance(hook, WeightNorm) else hook.compute_weight(module, False)
                setattr(module, hook.name, weight)
    return model


def plain_notes(source: dict) -> list[str]:
    """The base line's notes: the wrappers taken off, what was folded (shortened past four), and the floating types
    made float32."""
    folded, converted, wrappers = source.get("folded") or [], source.get("converted"), source.get("unwrapped") or []
    shown = ", ".join(folded[:4]) + (f" and {len(folded) - 4} more" if len(folded) > 4 else "")
    return ([f"taken out of {' and '.join(wrappers)}"] if wrappers else []) + (
        [f"folded {shown} into plain weights, as for inference"] if folded else []) + (
        [f"its {converted} weights made float32, as the methods train and measure"] if converted else [])


def unwrapped(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """The module inside torch.compile's, DataParallel's and DistributedDataParallel's wrappers, and the wrappers'
    names, outermost first."""
    from torch._dynamo.eval_frame import OptimizedModule

    wrappers = []
    while isinstance(model, (OptimizedModule, nn.DataParallel, nn.parallel.DistributedDataParallel)):
        wrappers.append("torch.compile" if isinstance(model, OptimizedModule) else type(model).__name__)
        model = model._orig_mod if isinstance(model, OptimizedModule) else model.module
    return model, wrappers


def float32_(model: nn.Module) -> str | None:
    """`model` in float32, in place; the floating types it held before, when any was another (e.g. 'float16')."""
    others = sorted({str(t.dtype).removeprefix("torch.") for t in [*model.parameters(), *model.buffers()]
                     if t.is_floating_point() and t.dtype != torch.float32})
    if others:
        model.float()
    return ", ".join(others) or None
