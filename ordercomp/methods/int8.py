"""Real int8 post-training quantisation through torchao's pt2e flow with the x86 Inductor quantiser.

Each part of a staged model (stem, every stage, every exit head, the head) is exported with
torch.export, observed on calibration batches and converted, so the model keeps its stage
boundaries (early exits still work). Weights and activations become int8; `compile_int8` runs the
model through Inductor with freezing so the int8 kernels actually execute.
After int8 the weights are no longer trainable: methods that fine-tune report `incompatible`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from ..layers import all_outputs, bits_of, compute_layers, exit_heads, is_int8_converted, lowest_sparsity, mark_int8, plain_layers_, replace_module
from .base import Context, Incompatible, Method, check_range, require_staged

MAX_BATCH = 4096


@dataclass(frozen=True)
class Int8Config:
    calibration_batches: int = 8

    def __post_init__(self):
        check_range("calibration batches", self.calibration_batches, 1, 1000)


def _parts(model: nn.Module) -> list[str]:
    names = ["stem"] + [f"stages.{i}" for i in range(len(model.stages))]
    names += [f"exits.{i}" for i in range(len(exit_heads(model)))]
    return names + ["head"]


@torch.no_grad()
def _part_inputs(model: nn.Module, names: list[str], context: Context, batches: int) -> dict[str, list[torch.Tensor]]:
    """Record the input every part sees on a few training batches."""
    inputs = {name: [] for name in names}
    hooks = [model.get_submodule(n).register_forward_pre_hook(lambda m, args, n=n: inputs[n].append(args[0].detach()))
             for n in names]
    loader = context.data.loader("train", context.budget.batch_size, shuffle=True, seed=context.seed)
    for index, (x, _) in enumerate(loader):
        if index == batches:
            break
        all_outputs(model, x.to(context.device))
    for hook in hooks:
        hook.remove()
    return inputs


def _convert(part: nn.Module, samples: list[torch.Tensor], sparsity: float | None) -> nn.Module:
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    exported = torch.export.export(part.eval(), (samples[0],), dynamic_shapes=({0: batch},)).module()
    _separate_repeated_calls(exported)
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    for sample in samples:
        prepared(sample)
    converted = convert_pt2e(prepared)
    _drop_unused_tensors(converted)
    allow_exported_model_train_eval(converted)
    mark_int8(converted, sparsity)
    return converted


def _separate_repeated_calls(graph_module: torch.fx.GraphModule) -> None:
    """A module called twice (a residual block's one ReLU) is one source partition with two outputs
    to the quantiser, which then refuses the block ("Input partition has more than one output node").
    torch.export already tells the calls apart in the key ('0.relu@1'); give each its own name."""
    for node in graph_module.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if not stack:
            continue
        key, (name, kind) = next(reversed(stack.items()))
        if "@" in key:
            node.meta["nn_module_stack"] = {**stack, key: (f"{name}@{key.rpartition('@')[2]}", kind)}


def _drop_unused_tensors(graph_module: torch.fx.GraphModule) -> None:
    """convert_pt2e leaves the float weights behind next to their int8 copies; drop them."""
    used = {node.target for node in graph_module.graph.nodes if node.op == "get_attr"}
    named = list(graph_module.named_parameters()) + list(graph_module.named_buffers())
    for name, _ in named:
        if name not in used:
            owner, _, attribute = name.rpartition(".")
            delattr(graph_module.get_submodule(owner) if owner else graph_module, attribute)


def apply(model: nn.Module, config: Int8Config, context: Context) -> nn.Module:
    require_staged(model, "int8")
    if is_int8_converted(model):
        raise Incompatible("the model is already converted to int8 kernels")
    low = [bits_of(layer) for _, layer in compute_layers(model) if min(bits_of(layer)) < 8]
    if low:
        raise Incompatible(f"the model is already quantised below 8 bits ({min(min(b) for b in low)}); "
                           "int8 would raise it: apply int8 before quantize, or quantize at 8 bits")
    if context.device.type != "cpu":
        model.to("cpu")
        context = Context(context.data, context.budget, context.seed, torch.device("cpu"), context.progress)
    names = _parts(model)
    sparsity = {name: lowest_sparsity(model.get_submodule(name)) for name in names}
    plain_layers_(model)  # pt2e re-quantises the weights to the same int8 grid and observes the activations itself
    model.eval()
    inputs = _part_inputs(model, names, context, config.calibration_batches)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for index, name in enumerate(names):
            context.report("int8: convert", index / len(names))
            if inputs[name]:
                replace_module(model, name, _convert(model.get_submodule(name), inputs[name], sparsity[name]))
    return model


def compile_int8(model: nn.Module) -> nn.Module:
    """The model compiled by Inductor with freezing, which lowers pt2e's quantise/dequantise
    patterns to real int8 kernels. Shapes are static: this torch release's int8 conv lowering
    rejects the strides of a dynamic batch dimension (each new batch size compiles once)."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    return torch.compile(model.eval(), dynamic=False)


METHOD = Method("int8", "Int8 post-training quantization", Int8Config, apply, "calibration_batches",
                "torchao pt2e + X86InductorQuantizer: real int8 weights and activations, no training.")
