"""Structured pruning with Torch-Pruning: whole channels (and a transformer's attention heads) leave, the model gets smaller.

B after A: the channels of whatever A produced are ranked and removed, quantised layers stay
quantised, exit heads are pruned together with the body they hang from; then fine-tuning.

A Vision Transformer (torchvision's) loses the same fraction of its attention heads (unless `heads` is off) and
of its MLPs' hidden units; the embedding every block adds to (patch embedding, attention, each MLP's last layer) keeps its width:
pruning 30 % of it left the digits32_vit sample at chance before fine-tuning (11.7 %, and 56 % after an epoch).
A head leaves with its rows of the packed in-projection and its columns of out_proj (`remove_heads_`, ranked by
the same norm as the channels), and its attention becomes a `StepwiseAttention`: nn.MultiheadAttention's inner
width is its embedding, so it cannot run with fewer heads. Distillation's student narrows the embedding too
(`shrink_width(embedding=True)`): an attention with all its heads narrows in multiples of them (a narrower head
dimension, Torch-Pruning's own attention pruner), one with heads removed narrows only the embedding it reads and
writes (`_EmbeddingOnly`); the model's `hidden_dim`, which its forward reshapes the patches to, follows.
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
import traceback
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn
from torchvision.models.vision_transformer import EncoderBlock

from ..bounded import Overrun, bounded
from ..errors import one_line
from ..layers import (QuantMultiheadAttention, StepwiseAttention, all_outputs, attention_as, has_every_head, keep_heads_,
                      output_layers, quantisable_attention, replace_module)
from ..models.structure import channel_shufflers, vision_transformers
from ..models.weights import tied_names
from ..train import train
from .base import Context, Incompatible, Method, check_choice, check_range, require_classifier, require_trainable
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
    heads: bool = True  # a transformer loses the same fraction of its attention heads (False: only its MLPs' hidden units)

    def __post_init__(self):
        check_range("prune ratio", self.ratio, 0.0, 1.0, low_open=True, high_open=True)
        check_choice("prune importance", self.importance, tuple(IMPORTANCE))
        if not isinstance(self.heads, bool):
            raise ValueError(f"prune heads must be true or false, got {self.heads!r}")


class PruningError(RuntimeError):
    """Torch-Pruning failed on this network: the step fails with a reason that says so."""


class PruningOverrun(PruningError):
    """Torch-Pruning's walk of this network's graph ran away (memory or time) and was stopped."""


# Torch-Pruning's dependency graph (DependencyGraph().build_dependency, 2 images at 224 px, random weights) builds in 2.6 s
# for torchvision's ViT-L/16, 1.4 s for DenseNet-121, 0.5 s for ResNet-50; a small MaxViT's was still walking after 120 s,
# and every step that prunes it (each seed, each pair) would wait this long again
WALK_SECONDS = 120.0
_runaway_layouts: dict[int, str] = {}  # a layout's hash: why Torch-Pruning's walk of it was stopped, in this process


def _walk(call, model: nn.Module):
    """`call()` (Torch-Pruning's work on `model`) bounded in memory and time: its graph walk never ends on some layouts
    (torchvision's swin_t took every gigabyte of the machine), which fails the step instead of the process. A layout
    whose walk ran away once fails at once on later steps (other seeds, other pairs) with the same reason."""
    layout = hash(tuple((name, type(module).__qualname__) for name, module in model.named_modules()))
    if layout in _runaway_layouts:
        raise PruningOverrun(f"{_runaway_layouts[layout]} (on an earlier step; not walked again)")
    try:
        return bounded(call, "Torch-Pruning's walk of this network's dependency graph", seconds=WALK_SECONDS)
    except Overrun as overrun:
        _runaway_layouts[layout] = (f"{overrun}: Torch-Pruning cannot follow this network's layout; sparsify or lowrank "
                                    "make it smaller without it")
        raise PruningOverrun(_runaway_layouts[layout]) from None


def shrink_width(model: nn.Module, ratio: float, importance: str, context: Context, *, embedding: bool = True,
                 heads: float = 0.0) -> nn.Module:
    """Remove `ratio` of the channels of every prunable layer but the classifiers, and `heads` of each attention's
    heads; without `embedding`, a ViT keeps the width of its embedding (its heads and its MLPs' hidden units go).
    Returns the narrower model: the one given, or a copy of it when its forward held widths (see `_prune_channels`)."""
    example = context.data.example_input(2).to(context.device)
    model.to(context.device).eval()
    torch.manual_seed(context.seed)
    if heads:
        remove_heads_(model, heads, importance)
    if ratio:
        model = _prune_channels(model, example, ratio, importance, embedding)
    _check_runs(model, example)
    return model


def _prune_channels(model: nn.Module, example: torch.Tensor, ratio: float, importance: str, embedding: bool) -> nn.Module:
    """Torch-Pruning's structured pruning of `ratio` of the channels, the classifiers (and without `embedding` a
    ViT's embedding) kept. A forward may hold a width Torch-Pruning cannot see (a user's attention reshaping its
    projections to heads x head width, a block concatenating a parameter of its own): when the pruned model no longer
    runs, the pruning starts again from a copy of the model taken before, leaving out every layer whose channels the
    forward cannot lose (each group found by pruning it alone on a copy), so that the rest (a transformer's MLPs) narrows.
    The groups of a weight tied between layers narrow together afterwards (`_narrow_ties_`)."""
    before = copy.deepcopy(model)  # before Torch-Pruning runs it (see `_widths_the_forward_holds`)
    kept = _names(model, output_layers(model) + ([] if embedding else _embedding_writers(model)))
    if not embedding:
        kept += _token_stream_layers(model, example, ratio, importance, kept)
    kept += _boundary_layers(model, example, ratio, importance, kept, _shuffles(model, example))
    ties = _boundaries_of_ties(model)
    tied_layers = _boundary_layers(model, example, ratio, importance, kept, ties, narrowed=lambda: _narrow_ties_(
        copy.deepcopy(before), example, ratio, importance, kept))
    if _pruned_and_runs(model, example, ratio, importance, kept + tied_layers) is None:
        _narrow_ties_(model, example, ratio, importance, kept)
        return model
    held, first_error, groups = _widths_the_forward_holds(before, example, ratio, importance, kept)
    if all(group[0] in held for group in groups):
        raise Incompatible(f"prune found no layer whose channels this network's forward can lose ({first_error}): "
                           "its forward reshapes every width to a size it keeps; sparsify or lowrank make it smaller without it")
    error = _pruned_and_runs(before, example, ratio, importance, kept + held + tied_layers)
    if error is not None:
        raise PruningError(f"Torch-Pruning could not prune this network's channels ({error}): "
                           "sparsify or lowrank make it smaller without it")
    _narrow_ties_(before, example, ratio, importance, kept + held)
    return before


def _pruned_and_runs(model: nn.Module, example: torch.Tensor, ratio: float, importance: str, kept: list[str]) -> str | None:
    """Prune `model` in place; None when its forward still runs, else the error, in one line, of the pruning or the forward."""
    try:
        with tokens_unmerged(model):
            _walk(_pruner(model, example, ratio, importance, kept).step, model)
    except (PruningOverrun, Incompatible):
        raise
    except Exception as error:  # raised deep inside Torch-Pruning (an index its graph walk got wrong through a reshape)
        return one_line(error)
    return _runs(model, example)


def _follow_embedding(model: nn.Module) -> None:
    """A torchvision ViT's forward reshapes the patch embedding to its `hidden_dim`: the width pruning left it (the
    patch embedding may be two convolutions after lowrank)."""
    for vit in vision_transformers(model):
        vit.hidden_dim = vit.class_token.shape[-1]


def _pruner(model: nn.Module, example: torch.Tensor, ratio: float, importance: str, kept: list[str]):
    """Torch-Pruning's pruner of `ratio` of the channels of `model`, the layers named in `kept` at their width, a module
    that permutes channels (a channel shuffle) a layer of its own (`_Boundary`); Incompatible when Torch-Pruning cannot
    build the network's dependency graph, which no seed or ratio changes."""
    try:
        with tokens_unmerged(model):
            shuffles = {type(module): _Boundary() for module in channel_shufflers(model, example)}
            return _walk(lambda: tp.pruner.BasePruner(
                model, example, importance=IMPORTANCE[importance](), pruning_ratio=ratio,
                ignored_layers=[model.get_submodule(name) for name in kept],
                forward_fn=lambda m, x: sum(all_outputs(m, x)),
                in_channel_groups={}, out_channel_groups={}, num_heads={}, round_to=_heads(model),
                customized_pruners={kind: _EmbeddingOnly() for kind in (StepwiseAttention, QuantMultiheadAttention)} | shuffles,
                # a ViT's class token and position embeddings are parameters no layer owns, pruned along the embedding
                unwrapped_parameters=[(p, p.dim() - 1) for vit in vision_transformers(model)
                                      for p in (vit.class_token, vit.encoder.pos_embedding)],
            ), model)
    except PruningOverrun:
        raise
    except Exception as error:  # raised deep inside Torch-Pruning's graph walk, where the bare error names no culprit
        raise Incompatible(f"Torch-Pruning cannot build this network's dependency graph{_culprit(error)}: "
                           "sparsify or lowrank make it smaller without it") from error


def _culprit(error: Exception) -> str:
    """Where Torch-Pruning's graph building failed, in words a user can find in the network: its mapping of channels
    through a reshape (torchvision's ShuffleNetV2 divides by zero there, Torch-Pruning issue 14), else the error."""
    inside = [frame.name for frame in traceback.extract_tb(error.__traceback__) if "torch_pruning" in frame.filename]
    if inside and "reshape" in inside[-1]:
        return " at a reshape that regroups its channels (a channel shuffle, as in ShuffleNet)"
    return f" ({one_line(error)})"


def _prunable_groups(model: nn.Module, example: torch.Tensor, ratio: float, importance: str, kept: list[str],
                     carrying: set[int] | None = None) -> list[list[str]]:
    """The groups Torch-Pruning would prune, each as the names of the layers that lose output channels in it; with
    `carrying`, only the groups that prune one of those parameters (by id) too."""
    pruner = _pruner(model, example, ratio, importance, kept)
    graph = pruner.DG
    groups = _walk(lambda: list(graph.get_all_groups(ignored_layers=pruner.ignored_layers,
                                                     root_module_types=pruner.root_module_types)), model)
    return [_names(model, [dep.target.module for dep, _ in group if graph.is_out_channel_pruning_fn(dep.handler)])
            for group in groups if carrying is None or any(id(dep.target.module) in carrying for dep, _ in group)]


def _token_stream_layers(model: nn.Module, example: torch.Tensor, ratio: float, importance: str, kept: list[str]) -> list[str]:
    """The layers that write a transformer's embedding, found through what it adds to: the groups that would prune a
    parameter of tokens no layer owns (a class token, position embeddings: (1, T, C)). timm's ViT reshapes to widths
    it keeps in attributes, so its forward still runs with a narrower embedding; pruning it would lose what every
    block adds to, as on torchvision's ViT (see the module's docstring)."""
    tokens = {id(p) for module in model.modules() if not type(module).__module__.startswith("torch.nn")
              for p in module.parameters(recurse=False) if p.dim() == 3}
    if not tokens:
        return []
    return [name for group in _prunable_groups(model, example, ratio, importance, kept, tokens) for name in group]


def _boundary_layers(model: nn.Module, example: torch.Tensor, ratio: float, importance: str, kept: list[str],
                     boundaries: dict[int, str], narrowed=lambda: False) -> list[str]:
    """The layers of every group whose channels feed or leave a boundary (modules by id: why), which Torch-Pruning leaves
    at their width; Incompatible, saying which boundary, when no other group is left to prune and `narrowed()` (whether
    the boundaries' groups narrow another way) is false."""
    if not boundaries:
        return []
    groups = _prunable_groups(model, example, ratio, importance, kept)
    held = _prunable_groups(model, example, ratio, importance, kept, set(boundaries))
    if len(held) == len(groups) and not narrowed():
        raise Incompatible(f"every channel Torch-Pruning could remove feeds or leaves {next(iter(boundaries.values()))}; "
                           "sparsify, quantize or lowrank make the network smaller")
    return [name for group in held for name in group]


def _shuffles(model: nn.Module, example: torch.Tensor) -> dict[int, str]:
    """Modules that permute channels (by id), and why they keep their width: Torch-Pruning maps channel indices through a
    channel shuffle's reshapes both ways, a walk that grows with the chained shuffles (kuangliu's ShuffleNetV2 ran to the
    120 s bound)."""
    return {id(module): f"{name}, which shuffles channels (a channel shuffle keeps every width it regroups)"
            for name, module in _named(model, channel_shufflers(model, example))}


def _boundaries_of_ties(model: nn.Module) -> dict[int, str]:
    """Layers holding a weight tied to another layer (by id), and why Torch-Pruning leaves their channels to
    `_narrow_ties_`: it cuts each layer's copy by the channels of its own groups, so each would hold a weight of its own."""
    return {id(model.get_submodule(name.rpartition(".")[0])): f"{' and '.join(names)}, one weight tied between layers, whose "
            "channels cannot narrow alike in every layer that holds it" for names in tied_names(model) for name in names}


def _narrow_ties_(model: nn.Module, example: torch.Tensor, ratio: float, importance: str, kept: list[str]) -> bool:
    """Narrow the groups of channels that feed or leave a weight tied between layers, removing the same channels in
    every layer that holds it (so that its copies stay equal), then tie them again; a class of such groups that cannot
    narrow alike (one is kept, or they differ in channels) keeps its width. Whether any narrowed."""
    ties = tied_names(model)
    if not ties:
        return False
    pruner = _pruner(model, example, ratio, importance, kept)
    graph = pruner.DG
    groups = _walk(lambda: list(graph.get_all_groups(ignored_layers=pruner.ignored_layers,
                                                     root_module_types=pruner.root_module_types)), model)
    narrowed = any([_narrow_alike(pruner, members, ratio) for members in _tie_classes(graph, groups, model, ties)])
    for names in ties:
        _tie_again(model, names)
    return narrowed


def _tie_classes(graph, groups: list, model: nn.Module, ties: list[list[str]]) -> list[list]:
    """The groups that must lose the same channels: those that prune one side (inputs, outputs) of a tied weight in the
    layers holding it, joined class by class; a class where some holder's side is in no group (kept) is left out."""
    tie_of = {id(model.get_submodule(name.rpartition(".")[0])): index for index, names in enumerate(ties) for name in names}
    sides: dict[tuple, dict[int, int]] = {}  # (tie, side): holder's id -> the group pruning that side of it
    for index, group in enumerate(groups):
        for dep, _ in group:
            if id(dep.target.module) in tie_of:
                side = graph.is_out_channel_pruning_fn(dep.handler)
                sides.setdefault((tie_of[id(dep.target.module)], side), {})[id(dep.target.module)] = index
    joined = list(range(len(groups)))
    find = lambda i: i if joined[i] == i else find(joined[i])
    blocked = set()
    for (tie, _), holders in sides.items():
        members = list(holders.values())
        for other in members[1:]:
            joined[find(other)] = find(members[0])
        if len(holders) < len(ties[tie]):
            blocked |= set(members)
    classes: dict[int, list[int]] = {}
    for index in {i for holders in sides.values() for i in holders.values()}:
        classes.setdefault(find(index), []).append(index)
    return [[groups[i] for i in members] for members in classes.values()
            if not any(find(b) == find(members[0]) for b in blocked)]


def _narrow_alike(pruner, members: list, ratio: float) -> bool:
    """Remove the same `ratio` of channels, ranked by their importance summed over the groups, from every group of
    `members`; nothing where their channels differ in number or are not ranked one by one."""
    scores = [pruner.estimate_importance(group) for group in members]
    if any(score is None for score in scores) or len({len(score) for score in scores} | {len(g[0].idxs) for g in members}) != 1:
        return False
    remove = sorted(sum(score.cpu() for score in scores).argsort()[:int(len(scores[0]) * ratio)].tolist())
    if not remove:
        return False
    for group in members:  # each group's walk was bounded once already, when the pruner found it
        pruner.DG.get_pruning_group(group[0].dep.target.module, group[0].dep.handler, remove).prune()
    return True


@torch.no_grad()
def _tie_again(model: nn.Module, names: list[str]) -> None:
    """One parameter under `names` again, where the layers' copies of it are equal."""
    first = model.get_parameter(names[0])
    for name in names[1:]:
        held = model.get_parameter(name)
        if held is not first and held.shape == first.shape and torch.equal(held, first):
            holder, _, attribute = name.rpartition(".")
            setattr(model.get_submodule(holder), attribute, first)


def _widths_the_forward_holds(model: nn.Module, example: torch.Tensor, ratio: float, importance: str,
                              kept: list[str]) -> tuple[list[str], str | None, list[list[str]]]:
    """The layers of every group whose pruning alone (on a copy, the share of channels `ratio` asks) leaves a forward
    that no longer runs, the first such forward's error, and every group tried."""
    held, first_error = [], None
    # copied before Torch-Pruning runs the model with gradients in evaluation mode: a forward may keep a tensor it computed,
    # which deepcopy refuses (timm's LeViT and EfficientFormer cache their attention biases in evaluation)
    pristine = copy.deepcopy(model)
    groups = _prunable_groups(model, example, ratio, importance, kept)
    for group in groups:
        trial = copy.deepcopy(pristine)
        graph = _pruner(trial, example, ratio, importance, kept).DG
        root = trial.get_submodule(group[0])
        handler = graph.get_pruner_of_module(root)
        count = max(1, int(handler.get_out_channels(root) * ratio))
        try:
            _walk(lambda: graph.get_pruning_group(root, handler.prune_out_channels, list(range(count))).prune(), trial)
            error = _runs(trial, example)
        except PruningOverrun:
            raise
        except Exception as pruning:  # Torch-Pruning's own error on this group
            error = one_line(pruning)
        if error is not None:
            held += group
            first_error = first_error or error
    return held, first_error, groups


def _named(model: nn.Module, modules: list[nn.Module]) -> list[tuple[str, nn.Module]]:
    """`modules` with their qualified names in `model` (the same in a copy of it)."""
    names = {id(module): name for name, module in model.named_modules()}
    return [(names[id(module)], module) for module in modules if id(module) in names]


def _names(model: nn.Module, modules: list[nn.Module]) -> list[str]:
    return [name for name, _ in _named(model, modules)]


@torch.no_grad()
def remove_heads_(model: nn.Module, fraction: float, importance: str) -> None:
    """Remove `fraction` of every attention's heads (rounded, one kept at least), the lowest-ranked by the norm of
    their query, key and value rows and out_proj columns (l1 or l2; bn_scale, which has no BatchNorm to read
    here, ranks them by l2; random at random). A plain attention becomes a StepwiseAttention to run with fewer."""
    for name, attention in quantisable_attention(model):
        kept = max(1, round(attention.num_heads * (1.0 - fraction)))
        if kept == attention.num_heads:
            continue
        if not isinstance(attention, StepwiseAttention):
            attention = attention_as(StepwiseAttention, attention)
        ranked = _head_scores(attention, importance).argsort(descending=True)
        keep_heads_(attention, sorted(ranked[:kept].tolist()))
        replace_module(model, name, attention)


def _head_scores(attention: StepwiseAttention, importance: str) -> torch.Tensor:
    """One score per head: the norm of its weights in the in-projection (queries, keys, values) and out_proj."""
    heads, width = attention.num_heads, attention.head_dim
    if importance == "random":
        return torch.rand(heads)
    power = 1 if importance == "l1" else 2
    rows = attention.in_proj_weight.detach().abs().pow(power).view(3, heads, width, -1).sum(dim=(0, 2, 3))
    columns = attention.out_proj.weight.detach().abs().pow(power).view(-1, heads, width).sum(dim=(0, 2))
    return (rows + columns).cpu()


class _Boundary(tp.pruner.function.BasePruningFunc):
    """Torch-Pruning's pruner for a module that permutes channels: a layer of its own, whose channels Torch-Pruning neither
    maps through its reshapes nor removes (the groups on either side keep their width: `_boundary_layers`)."""

    def prune_out_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> None:
        return None

    get_in_channels = get_out_channels


class _EmbeddingOnly(tp.pruner.function.BasePruningFunc):
    """Torch-Pruning's pruner for a step-by-step attention. While its inner width is its embedding (every head kept)
    Torch-Pruning's own attention pruner narrows both (a narrower head dimension); once heads are removed, only the
    embedding it reads (in-projection columns) and writes (out_proj rows) narrows: its heads stay as they are."""

    native = tp.pruner.function.MultiheadAttentionPruner()

    def prune_out_channels(self, layer: StepwiseAttention, idxs: list) -> nn.Module:
        if has_every_head(layer):
            return self.native.prune_out_channels(layer, idxs)
        keep = sorted(set(range(layer.embed_dim)) - set(idxs))
        layer.in_proj_weight = self._prune_parameter_and_grad(layer.in_proj_weight, keep, 1)
        out = layer.out_proj
        out.weight = self._prune_parameter_and_grad(out.weight, keep, 0)
        if out.bias is not None:
            out.bias = self._prune_parameter_and_grad(out.bias, keep, 0)
        out.out_features = layer.embed_dim = layer.kdim = layer.vdim = len(keep)
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: StepwiseAttention) -> int:
        return layer.embed_dim

    get_in_channels = get_out_channels


def _embedding_writers(model: nn.Module) -> list[nn.Module]:
    """The layers of a ViT that write its embedding: patch embedding, attention, and each MLP's last linear layer; in
    a user's network built on PyTorch's transformer layers, each layer's attention and last linear layer (keeping one
    layer of a group keeps the group: the patch embedding and the rest of the residual stream keep their width too)."""
    writers = []
    for vit in vision_transformers(model):
        writers += [vit.conv_proj] + [m for m in vit.modules() if isinstance(m, nn.MultiheadAttention)]
        writers += [[layer for layer in block.mlp.modules() if isinstance(layer, nn.Linear)][-1]
                    for block in vit.modules() if isinstance(block, EncoderBlock)]
    for layer in model.modules():
        if isinstance(layer, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
            writers += [layer.self_attn, layer.linear2] + ([layer.multihead_attn] if hasattr(layer, "multihead_attn") else [])
    return writers


def _heads(model: nn.Module) -> int | None:
    """Widths are pruned in multiples of the heads of every attention that has all its heads (None without one), so
    their heads keep their number with a narrower head dimension."""
    heads = [m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention) and has_every_head(m)]
    return math.lcm(*heads) if heads else None


@torch.no_grad()
def _runs(model: nn.Module, example: torch.Tensor) -> str | None:
    """None when the model's own forward runs on `example` (a ViT's `hidden_dim` following its pruned embedding), else
    its error in one line (a traced forward's own report of where it failed, which torch.fx prints, is silenced: the
    error says it)."""
    _follow_embedding(model)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            all_outputs(model, example)
    except Exception as error:  # the user's forward raises whatever its code meets
        return one_line(error)
    return None


def _check_runs(model: nn.Module, example: torch.Tensor) -> None:
    """The pruned network must still run its own forward, which may hold widths Torch-Pruning cannot see."""
    error = _runs(model, example)
    if error is not None:
        raise PruningError(f"Torch-Pruning removed channels that the forward still expects ({error}): a forward that "
                           "reshapes to a width it keeps in an attribute cannot be pruned (torchvision's VisionTransformer "
                           "can: its hidden_dim follows)")


def apply(model: nn.Module, config: PruneConfig, context: Context) -> nn.Module:
    require_trainable(model, "prune")
    require_classifier(model, "prune")
    model = shrink_width(model, config.ratio, config.importance, context, embedding=False,
                         heads=config.ratio if config.heads else 0.0)
    return train(model, context.data, context.budget, seed=context.seed, device=context.device,
                 progress=context.progress, label="fine-tune")


METHOD = Method("prune", "Structured pruning", PruneConfig, apply, "ratio",
                "Torch-Pruning removes a fraction of channels in every layer (and of a transformer's heads), then fine-tunes.")
