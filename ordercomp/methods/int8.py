"""Real int8 post-training quantisation through torchao's pt2e flow with the x86 Inductor quantiser.

Each part of a staged model (stem, every stage, every exit head, the head) is exported with
torch.export, observed on calibration batches and converted, so the model keeps its stage
boundaries (early exits still work). Weights and activations become int8; Inductor with freezing
(`deploy.runtimes.inductor_compiled`, the pt2 runtime) runs them on int8 kernels.
A Vision Transformer's parts are its linear layers (and patch embedding), each converted alone, so that
exits on its class token and merged tokens keep working: its attention first computes with its in- and
out-projections as layers of their own (`LayerAttention`); the attention products QK^T and AV stay float.
After int8 the weights are no longer trainable: methods that fine-tune report `incompatible`.
"""
from __future__ import annotations

import logging
import operator
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import (FULL_BITS, all_outputs, attend_by_heads, bits_of, compute_layers, exit_heads, fake_quant_weight,
                      is_int8_converted, is_staged, lowest_sparsity, mark_int8, plain_layers_, quantisable_attention, replace_module)
from ..models.structure import vision_transformers
from .base import Context, Incompatible, Method, check_range, require_staged

MAX_BATCH = 4096


def _drops_torchaos_enum_notice(record: logging.LogRecord) -> bool:
    """False for the notice torch logs as torchao registers its KernelPreference enum on import ("… is an Enum subclass and
    is now natively supported by torch.compile …"): a note to torchao's authors, printed among the user's progress lines."""
    return not str(record.msg).startswith("%s is an Enum subclass and is now natively supported")


logging.getLogger("torch.utils._pytree").addFilter(_drops_torchaos_enum_notice)


@dataclass(frozen=True)
class Int8Config:
    calibration_batches: int = 8

    def __post_init__(self):
        check_range("calibration batches", self.calibration_batches, 1, 1000)


def _layer_by_layer(model: nn.Module) -> bool:
    """True for a network converted one layer with weights at a time rather than stage by stage: a ViT (with its exits
    or merged tokens), or a network without stages or BatchNorm (a user's own transformer: nothing to fold or fuse)."""
    if is_staged(model):
        return False
    return bool(vision_transformers(model)) or not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _parts(model: nn.Module) -> list[str]:
    """The modules converted one by one: a staged model's stem, stages, exits and head; else its layers with weights."""
    if _layer_by_layer(model):
        return [name for name, _ in compute_layers(model)]
    names = ["stem"] + [f"stages.{i}" for i in range(len(model.stages))]
    names += [f"exits.{i}" for i in range(len(exit_heads(model)))]
    return names + ["head"]


class LayerAttention(nn.Module):
    """Self-attention as torchvision's EncoderBlock calls it (batch first, one packed in-projection), computed with its
    in- and out-projections as Linear layers it calls: nn.MultiheadAttention reads them as raw weights, which the int8
    quantiser does not see as layers. Takes token merging's additive mask (B * heads, T, T)."""

    batch_first = True  # what nn.TransformerEncoderLayer checks of its attention before choosing its path
    _qkv_same_embed_dim = True

    def __init__(self, attention: nn.MultiheadAttention):
        super().__init__()
        self.num_heads = attention.num_heads
        bits = getattr(attention, "weight_bits", FULL_BITS)  # quantisation at 8 bits before: its grid
        weight = attention.in_proj_weight if bits >= FULL_BITS else fake_quant_weight(attention.in_proj_weight, bits)
        self.in_proj = nn.Linear(weight.shape[1], weight.shape[0], bias=attention.in_proj_bias is not None)  # heads may be fewer
        self.in_proj.weight.data.copy_(weight.detach())
        if attention.in_proj_bias is not None:
            self.in_proj.bias.data.copy_(attention.in_proj_bias.detach())
        self.out_proj = attention.out_proj
        self.to(attention.in_proj_weight.device)

    @property
    def in_proj_bias(self) -> torch.Tensor | None:
        return self.in_proj.bias

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_padding_mask=None,
                need_weights: bool = False, attn_mask: torch.Tensor | None = None, query_rows: int | None = None,
                **_) -> tuple[torch.Tensor, None]:
        # query, key and value are the same tokens; the mask is scaled_dot_product_attention's fourth argument
        return self.out_proj(attend_by_heads(self.in_proj(query), self.num_heads, attn_mask, F.scaled_dot_product_attention,
                                             query_rows=query_rows)), None


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
    _scale_and_shift_lone_batchnorms(prepared)
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


def _scale_and_shift_lone_batchnorms(prepared: torch.fx.GraphModule) -> None:
    """The BatchNorms that prepare_pt2e left unfolded, as no convolution precedes them (DenseNet's pre-activation layout),
    as what they compute in evaluation: x * scale + shift, per channel. They stay float either way; but convert_pt2e, while
    any BatchNorm is left, tries every QAT conv-bn pattern it knows, each one made by torch.export (318 exports: two
    minutes for a 13k-parameter DenseNet against 5 s for a plain CNN)."""
    graph = prepared.graph
    for node in [node for node in graph.nodes if node.target == torch.ops.aten.batch_norm.default and not node.args[5]]:
        scale, shift = _evaluation_affine(prepared, node)
        with graph.inserting_before(node):
            scaled = graph.call_function(torch.ops.aten.mul.Tensor, (node.args[0], _constant(prepared, f"{node.name}_scale", scale)))
            shifted = graph.call_function(torch.ops.aten.add.Tensor, (scaled, _constant(prepared, f"{node.name}_shift", shift)))
        scaled.meta, shifted.meta = dict(node.meta), dict(node.meta)
        node.replace_all_uses_with(shifted)
        graph.erase_node(node)
    graph.eliminate_dead_code()
    prepared.recompile()


def _evaluation_affine(module: torch.fx.GraphModule, node: torch.fx.Node) -> tuple[torch.Tensor, torch.Tensor]:
    """The scale and shift per channel of an aten.batch_norm node with running statistics, shaped to broadcast over its
    input: (C, 1, 1) for (N, C, H, W)."""
    weight, bias, mean, var = (operator.attrgetter(arg.target)(module) if isinstance(arg, torch.fx.Node) else arg
                               for arg in node.args[1:5])
    scale = (var + node.args[7]).rsqrt() * (1 if weight is None else weight)
    shift = (0 if bias is None else bias) - mean * scale
    channels = (-1,) + (1,) * (node.meta["val"].dim() - 2)
    return scale.reshape(channels), shift.reshape(channels)


def _constant(module: torch.fx.GraphModule, name: str, value: torch.Tensor) -> torch.fx.Node:
    """A get_attr node reading `value`, held by `module` as a buffer named `name`."""
    module.register_buffer(name, value.detach().clone())
    return module.graph.get_attr(name)


def _drop_unused_tensors(graph_module: torch.fx.GraphModule) -> None:
    """convert_pt2e leaves the float weights behind next to their int8 copies; drop them."""
    used = {node.target for node in graph_module.graph.nodes if node.op == "get_attr"}
    named = list(graph_module.named_parameters()) + list(graph_module.named_buffers())
    for name, _ in named:
        if name not in used:
            owner, _, attribute = name.rpartition(".")
            delattr(graph_module.get_submodule(owner) if owner else graph_module, attribute)


def apply(model: nn.Module, config: Int8Config, context: Context) -> nn.Module:
    layer_by_layer = _layer_by_layer(model)
    if not layer_by_layer:
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
    plain_layers_(model)  # pt2e re-quantises the weights to the same int8 grid and observes the activations itself
    if layer_by_layer:
        for name, attention in quantisable_attention(model):
            replace_module(model, name, LayerAttention(attention))  # its projections become layers the quantiser sees
    names = _parts(model)
    sparsity = {name: lowest_sparsity(model.get_submodule(name)) for name in names}
    model.eval()
    inputs = _part_inputs(model, names, context, config.calibration_batches)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for index, name in enumerate(names):
            context.report("int8: convert", index / len(names))
            if inputs[name]:
                replace_module(model, name, _convert(model.get_submodule(name), inputs[name], sparsity[name]))
    return model


METHOD = Method("int8", "Int8 post-training quantization", Int8Config, apply, "calibration_batches",
                "torchao pt2e + X86InductorQuantizer: real int8 weights and activations, no training.")
