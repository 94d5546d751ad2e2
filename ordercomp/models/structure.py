"""Find a network's structure by tracing its own forward: the classifier and the stages.

The methods need two facts about a network. Which layer produces the logits: pruning, sparsity and
low-rank factorisation keep it whole, so the number of classes never changes. Where its stages end:
early exits attach there, distillation's depth drops whole blocks of a stage, int8 converts stage by
stage. Both are read from the graph torch.fx traces of the user's `forward`:

- the classifier is the Linear or Conv2d layer whose output is the logits: from the graph's output,
  back through operations that only pass the logits on (flatten, view, reshape, squeeze, dropout, identity,
  scaling by one number such as a temperature, and the activation and pooling after a convolution whose
  channels are the classes, as in SqueezeNet);
- a cut point is a place in the graph where exactly one tensor is live: what follows depends on what
  came before only through that tensor, so a residual block (whose shortcut keeps a second tensor
  live) is never cut in half;
- a feature map is a 4-D tensor (N, C, H, W) that a 2-d convolution, batch norm or pooling gives or reads,
  directly or through operations that keep its shape (activations, residual additions, dropout); other
  4-D layouts reach those layers only through a permute or reshape (a Swin's (N, H, W, C), the (N, windows,
  tokens, C) inside a MaxViT's attention), so no stage ends on them and early exits pool height and width;
- a stage ends at the last cut point holding a feature map before the spatial resolution drops; the stem
  is the first block; the body ends at the last feature map at a cut point before the classifier, or
  before the pooling that leads to it, where the head begins.

The graph is split there into stem -> stages -> head GraphModules that call the user's own layers; a
stage is an nn.Sequential of its blocks, the pieces between consecutive cut points, each holding a
conv or linear layer (normalisation, activation and pooling join the layer before them). The split
is used only when it computes the same logits as the model on an example batch.

When tracing cannot tell, the user names them: `classifier="fc"`, `stages=("layer1", "layer2")` (the
modules whose outputs end the stages; the stem ends where the first of them starts). When neither
works, the model is used as it is, with the reason recorded in its `Structure`, and each method that
needs a missing part reports `incompatible` with that reason.

Why torch.fx and not torch.export: fx keeps every layer a call of the user's module object, so the
methods (which replace, shrink and quantise modules) work on the split as on any model, and dropout
and batch norm keep their train/eval behaviour; torch.export flattens the model into ATen operations
with the weights lifted out of the modules. Modules of torchvision.ops (conv-norm-activation,
squeeze-excitation, stochastic depth, MLP) and any module whose code reads `self.training` (in its forward
or a method it calls) are traced as single calls, as torchvision's feature extraction does, so the graph
holds no train- or eval-only branch.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import inspect
import json
import operator
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torchvision.ops import Permute

from ..errors import one_line
from ..layers import is_staged, mark_logits_layer, step_by_step_transformer_layers_
from .checkpoints import state_fingerprint
from .programs import ProgramModel
from .zoo import StagedNet

LAYER_TYPES = (nn.Conv2d, nn.Linear)
POOLING_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d)
POOLING_FUNCTIONS = {F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.avg_pool2d, F.max_pool2d}
# What passes the logits on unchanged in number: reshaping, dropout, and, after a convolution whose channels are the
# classes (SqueezeNet's classifier), an activation and pooling; a layer found through them must still give as many
# outputs as there are logits.
PASS_ON_MODULES = (nn.Flatten, nn.Dropout, nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.Hardswish, nn.GELU) + POOLING_MODULES
PASS_ON_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, F.dropout, F.relu, torch.relu, F.relu6, F.leaky_relu,
                     F.silu, F.hardswish, F.gelu} | POOLING_FUNCTIONS
PASS_ON_METHODS = {"flatten", "view", "reshape", "squeeze", "contiguous", "relu"}
# Scaling the logits by one number (a temperature, CLIP's logit scale): the number a constant or a one-element tensor
SCALING = {operator.mul, operator.truediv, torch.mul, torch.div, "mul", "div"}
# Layers that read a 4-D tensor as (N, C, H, W), and what rearranges a tensor's dimensions even where its shape stays
SPATIAL_MODULES = (nn.Conv2d, nn.ConvTranspose2d, nn.modules.batchnorm._BatchNorm) + POOLING_MODULES
SPATIAL_FUNCTIONS = {F.conv2d, F.conv_transpose2d, F.batch_norm} | POOLING_FUNCTIONS
REARRANGING_FUNCTIONS = {torch.permute, torch.transpose, torch.swapaxes, torch.swapdims, torch.movedim, torch.reshape}
REARRANGING_METHODS = {"permute", "transpose", "swapaxes", "swapdims", "movedim", "view", "reshape"}
CONTAINERS = (nn.Module, nn.Sequential, nn.ModuleList, nn.ModuleDict)
METHOD_CALL = re.compile(r"self\.(\w+)\(")
VALUE_CHECKS = {"eq", "_assert", "_assert_is_none"}  # what fx adds to check that an argument fixed at its default keeps it
TOLERANCE = 1e-5
STRUCTURE_ATTRIBUTE = "_ordercomp_structure"


class StructureError(ValueError):
    """A classifier or stage the user named does not fit the model; the message says what to name instead."""


class NotFound(Exception):
    """Tracing could not find a part of the structure; the message says why (recorded, not raised to the user)."""


@dataclass(frozen=True)
class Structure:
    """What was found or named, recorded with the base model and in every result (JSON-ready)."""

    weights: str  # fingerprint of the model's own weights, before the split
    classifier: str | None = None
    stem: str | None = None  # where the stem ends
    stages: tuple[str, ...] = ()  # where each stage ends
    blocks: tuple[int, ...] = ()  # blocks per stage
    named: tuple[str, ...] = ()  # what the user named: "classifier", "stages"
    why_no_classifier: str | None = None
    why_no_stages: str | None = None
    traced: bool = True  # whether torch.fx traced the forward: stages are found or named in the traced graph only

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def fingerprint(self) -> str:
        """The weights and how they were split: two splits of one model give different step results."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def vision_transformers(model: nn.Module) -> list[nn.Module]:
    """torchvision's Vision Transformers in a model: blocks of tokens rather than stages of feature maps, which
    pruning, distillation's depth and token merging read through their own attributes."""
    from torchvision.models.vision_transformer import VisionTransformer

    return [m for m in model.modules() if isinstance(m, VisionTransformer)]


def structure_of(model: nn.Module) -> Structure | None:
    """The structure recorded on a base model by `with_structure`, if any."""
    return getattr(model, STRUCTURE_ATTRIBUTE, None)


def base_fingerprint(model: nn.Module, source: dict) -> str:
    """What identifies a base in cache keys: its weights, for a user's network how it was split, and for a base
    whose code is not ordercomp's own (a program file, a user's class) that code too, so that another forward
    never reuses a step's result."""
    structure = structure_of(model)
    weights = structure.fingerprint() if structure else state_fingerprint(model)
    if not source.get("code"):
        return weights
    return hashlib.sha256(json.dumps([weights, source["code"]]).encode()).hexdigest()[:16]


def with_structure(model: nn.Module, example: torch.Tensor, num_classes: int, *, classifier: str | None = None,
                   stages: tuple[str, ...] | None = None) -> nn.Module:
    """The model the methods work on: a zoo model or a program as it is; any other network copied, its
    classifier marked, and split into stem -> stages -> head when its stages are found or named."""
    if is_staged(model) or isinstance(model, ProgramModel):
        if classifier or stages:
            what = "a program, which is only measured" if isinstance(model, ProgramModel) else "split into stages already"
            raise StructureError(f"--classifier and --stages name parts of your own network; this model is {what}")
        return model
    model = step_by_step_transformer_layers_(copy.deepcopy(model).eval())  # marks go on the copy: the caller's model stays as it was
    _check_names(model, classifier, stages, num_classes)
    named = tuple(name for name, given in (("classifier", classifier), ("stages", stages)) if given)
    found, details = _discover(model, example, classifier, stages)
    if details.get("classifier"):
        mark_logits_layer(model.get_submodule(details["classifier"]))  # the split calls the same layer object
    setattr(found, STRUCTURE_ATTRIBUTE, Structure(weights=state_fingerprint(model), named=named, **details))
    return found


def _discover(model: nn.Module, example: torch.Tensor, classifier: str | None, stages) -> tuple[nn.Module, dict]:
    """(the split model, or the model itself when the stages are missing; what was found and why not)."""
    try:
        traced = Traced(model, example)
    except NotFound as why:
        if stages:
            raise StructureError(f"--stages needs the forward traced, and {why}") from None
        return model, {"classifier": classifier, "why_no_stages": str(why), "traced": False,
                       **({} if classifier else {"why_no_classifier": str(why)})}
    details = {"classifier": classifier}
    if classifier is None:
        try:
            details["classifier"] = traced.classifier()
        except NotFound as why:
            details["why_no_classifier"] = str(why)
    try:
        stem_end, ends = traced.named_ends(stages) if stages else traced.stage_ends(details["classifier"])
        view = traced.split(stem_end, ends)
    except NotFound as why:
        return model, details | {"why_no_stages": str(why)}
    return view, details | traced.describe(view, stem_end, ends)


def _check_names(model: nn.Module, classifier: str | None, stages, num_classes: int) -> None:
    """One line for a classifier or stage name that the model does not have, or a classifier of the wrong size."""
    names = dict(model.named_modules())
    for name in ([classifier] if classifier else []) + list(stages or ()):
        if name not in names or not name:
            top = ", ".join(n for n in names if n and "." not in n)
            raise StructureError(f"the model has no module {name!r}: name one of its modules, e.g. {top}")
    if classifier:
        layer = names[classifier]
        if not isinstance(layer, LAYER_TYPES):
            raise StructureError(f"--classifier {classifier} is a {type(layer).__name__}: name the Linear or Conv2d layer that gives the logits")
        outputs = layer_outputs(layer)
        if outputs != num_classes:
            raise StructureError(f"--classifier {classifier} gives {outputs} outputs and the data has {num_classes} classes: "
                                 "name the layer that gives the logits")


def layer_outputs(layer: nn.Module) -> int:
    """The outputs of a Linear layer, the output channels of a convolution."""
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _leaf_types() -> tuple[type, ...]:
    import torchvision

    return tuple(obj for _, obj in inspect.getmembers(torchvision.ops) if inspect.isclass(obj) and issubclass(obj, nn.Module))


def _reads_training(module: nn.Module) -> bool:
    return _forward_reads_training(type(module))


@functools.cache
def _forward_reads_training(cls: type) -> bool:
    """Whether the class's forward reads self.training, itself or in a method of the class it calls (timm's LeViT and
    EfficientFormer keep their attention biases cached in evaluation only, in `get_attention_biases`); a method the
    forward never calls does not count (timm's classifier heads read it in `reset`)."""
    return _reads_training_in(cls, "forward", set())


def _reads_training_in(cls: type, name: str, seen: set[str]) -> bool:
    method = getattr(cls, name, None)
    if name in seen or not inspect.isfunction(method) or method.__module__.split(".")[0] == "torch":
        return False
    seen.add(name)
    try:
        source = inspect.getsource(method)
    except (OSError, TypeError):  # no source (a built-in or generated class): traced through
        return False
    return "self.training" in source or any(_reads_training_in(cls, called, seen) for called in METHOD_CALL.findall(source))


def channel_shufflers(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """The modules of a network's own, without weights or children, that give back their input's channels in another
    order (a channel shuffle as a module: view, transpose, reshape), seen on one forward of `example`."""
    candidates = [module for module in model.modules() if not type(module).__module__.startswith("torch.")
                  and not list(module.children()) and not list(module.parameters()) and not list(module.buffers())]
    if not candidates:  # no forward to run: torchvision's networks and most users' hold no such module
        return []
    found = []
    hook = lambda module, args, out: found.append(module) if _permutes_channels(args, out) else None
    handles = [module.register_forward_hook(hook) for module in candidates]
    try:
        with torch.no_grad():
            model(example)
    except Exception:  # a forward that does not run on the example: its structure is not found either (`Traced`)
        return []
    finally:
        for handle in handles:
            handle.remove()
    return list({id(module): module for module in found}.values())


def _permutes_channels(args: tuple, out) -> bool:
    """Whether a module's one tensor output holds its one tensor input's channels (dim 1) in another order."""
    if len(args) != 1 or not isinstance(out, torch.Tensor) or not isinstance(args[0], torch.Tensor):
        return False
    x = args[0]
    if x.shape != out.shape or x.dim() < 2 or x.shape[1] < 2:
        return False
    totals = lambda t: t.detach().transpose(0, 1).flatten(1).double().sum(1)  # one sum per channel
    before, after = totals(x), totals(out)
    return not torch.allclose(before, after) and torch.allclose(before.sort().values, after.sort().values)


class _Tracer(fx.Tracer):
    """torch.fx's tracer with torchvision.ops modules, layers of torch.nn (subclasses too, e.g. quantised
    layers), modules that branch on self.training and the classes in `held` kept as single calls; `failed_in` is
    the class of the innermost submodule whose forward fx could not follow."""

    def __init__(self, held: frozenset[type] = frozenset()):
        super().__init__()
        self.leaves, self.held = _leaf_types(), held
        self.failed_in: type | None = None

    def is_leaf_module(self, module: nn.Module, qualname: str) -> bool:
        from_torch_nn = any(c.__module__.startswith("torch.nn") and c not in CONTAINERS for c in type(module).__mro__)
        return (isinstance(module, self.leaves) or type(module) in self.held or from_torch_nn
                or (qualname != "" and _reads_training(module)) or super().is_leaf_module(module, qualname))

    def call_module(self, module: nn.Module, forward: Callable, args, kwargs):
        try:
            return super().call_module(module, forward, args, kwargs)
        except Exception:
            self.failed_in = self.failed_in or type(module)
            raise


def _trace_holding(model: nn.Module, fixed: dict, held: frozenset[type]) -> fx.Graph:
    """fx's graph of the forward; the classes in `held` and the submodules whose forward fx cannot follow (kuangliu's
    ShuffleNetV2 splits its channels at `int(x.size(1) * ratio)`) kept as single calls, class by class, as torchvision's
    feature extraction lets its user keep them (`leaf_modules`), while the rest of the forward traces."""
    while True:
        tracer = _Tracer(held)
        try:
            return tracer.trace(model, concrete_args=fixed or None)
        except Exception:
            if tracer.failed_in is None or tracer.failed_in in held:
                raise
            held |= {tracer.failed_in}


def trace(model: nn.Module, held: frozenset[type] = frozenset()) -> fx.Graph:
    """The graph of `model.forward` (extra arguments fixed at their defaults, the classes in `held` kept as single
    calls); NotFound when fx cannot trace it or when the forward outside its leaf modules differs between training
    and evaluation."""
    parameters = list(inspect.signature(model.forward).parameters.values())[1:]
    fixed = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    graphs = []
    for training in (False, True):
        model.train(training)
        try:
            graphs.append(_without_fixed_inputs(_trace_holding(model, fixed, held)))
        except Exception as error:  # fx raises many error types for code it cannot follow symbolically
            raise NotFound(f"torch.fx could not trace the forward ({one_line(error)})") from None
        finally:
            model.eval()
    if _ops(graphs[0]) != _ops(graphs[1]):
        raise NotFound("the forward runs different operations in training and in evaluation outside its submodules")
    return graphs[0]


def _without_fixed_inputs(graph: fx.Graph) -> fx.Graph:
    """The graph without the inputs fx keeps for arguments fixed at their defaults: each is read only by a check that it
    still has that value (timm's ViT: `forward(x, attn_mask=None, is_causal=False)`), and the images are the one input
    the methods and the split's pieces pass."""
    for node in [n for n in graph.nodes if n.op == "placeholder"][1:]:
        readers = _reached(node, lambda n: n.users)
        if all(getattr(reader.target, "__name__", None) in VALUE_CHECKS for reader in readers):
            for reader in [n for n in reversed(graph.nodes) if n in readers]:
                graph.erase_node(reader)
            graph.erase_node(node)
    return graph


def _reached(node: fx.Node, neighbours: Callable[[fx.Node], Iterable[fx.Node]]) -> set[fx.Node]:
    """Every node reached from `node` step by step through `neighbours`: `users`, what is computed from it;
    `all_input_nodes`, what it is computed from."""
    found, stack = set(), [node]
    while stack:
        for other in neighbours(stack.pop()):
            if other not in found:
                found.add(other)
                stack.append(other)
    return found


def _ops(graph: fx.Graph) -> list[tuple[str, str]]:
    """The graph's operations; a tensor constant by its kind alone, since fx numbers them on from the constants an
    earlier trace left on the model (torchvision's MaxViT: `_tensor_constant0` in evaluation, `_tensor_constant4` then)."""
    return [(node.op, "_tensor_constant" if node.op == "get_attr" and node.target.startswith("_tensor_constant") else str(node.target))
            for node in graph.nodes]


class Traced:
    """A model's traced graph with the shape of every value on an example batch and its cut points."""

    def __init__(self, model: nn.Module, example: torch.Tensor):
        self.model, self.example = model, example
        # a channel shuffle stays a module of the split, where prune finds it (see `channel_shufflers`)
        self.graph = trace(model, frozenset(type(module) for module in channel_shufflers(model, example)))
        self.nodes = list(self.graph.nodes)
        self.position = {node: index for index, node in enumerate(self.nodes)}
        if sum(node.op == "placeholder" for node in self.nodes) != 1:
            raise NotFound("the forward takes more than one tensor")
        with torch.no_grad():
            try:
                ShapeProp(fx.GraphModule(model, self.graph)).propagate(example)
            except Exception as error:  # the traced graph raises whatever the model raises on this input
                raise NotFound(f"the traced forward does not run on the example batch ({one_line(error)})") from None
        images = next(node for node in self.nodes if node.op == "placeholder")
        self.constants = set(self.nodes) - _reached(images, lambda n: n.users) - {images}
        self.cuts = self._cut_points()
        self.spans = self._module_spans()
        self.feature_maps = {cut for cut in self.cuts if self._is_feature_map(cut)}

    def _cut_points(self) -> list[fx.Node]:
        """Nodes after which their own tensor is the only live value (parameters, and what the forward computes from
        them alone, such as CLIP's `logit_scale.exp()`, do not count: every piece computes them itself)."""
        last_use = {node: max(self.position[user] for user in node.users)
                    for node in self.nodes if node.users and node not in self.constants}
        born, dead = Counter(self.position[node] for node in last_use), Counter(last_use.values())
        live, cuts = 0, []
        for index, node in enumerate(self.nodes):
            live += born[index] - dead[index]
            if live == 1 and node in last_use and self.shape(node) is not None:
                cuts.append(node)
        return cuts

    def shape(self, node: fx.Node) -> tuple[int, ...] | None:
        meta = node.meta.get("tensor_meta")
        return tuple(meta.shape) if hasattr(meta, "shape") else None

    def resolution(self, node: fx.Node) -> int | None:
        """H x W of a feature map at a cut point; None for any other value."""
        return self.shape(node)[2] * self.shape(node)[3] if node in self.feature_maps else None

    def _is_feature_map(self, node: fx.Node) -> bool:
        """Whether the node's value is (N, C, H, W): 4-D, and a spatial layer gives or reads it, or a value it is
        joined to only by operations that keep the shape (a residual addition, an activation)."""
        if self.shape(node) is None or len(self.shape(node)) != 4:
            return False
        joined = {node} | _reached(node, self._same_layout_neighbours)
        return any(self._is_spatial(value) or any(self._is_spatial(user) and user.args[0] is value for user in value.users)
                   for value in joined)

    def _same_layout_neighbours(self, value: fx.Node) -> list[fx.Node]:
        """What `value` is computed from, and what is computed from it, laid out as it is (`_keeps_layout`)."""
        return ([arg for arg in value.all_input_nodes if self._keeps_layout(value, arg)]
                + [user for user in value.users if self._keeps_layout(user, value)])

    def _is_spatial(self, node: fx.Node) -> bool:
        """A 2-d convolution, batch norm or pooling, or a module holding one (torchvision's conv-norm-activation)."""
        if node.op == "call_module":
            return any(isinstance(m, SPATIAL_MODULES) for m in self.module(node).modules())
        return node.op == "call_function" and node.target in SPATIAL_FUNCTIONS

    def _keeps_layout(self, node: fx.Node, source: fx.Node) -> bool:
        """Whether `node` gives a value laid out as its input `source`: the same shape, not rearranged."""
        rearranges = ((node.op == "call_method" and node.target in REARRANGING_METHODS)
                      or (node.op == "call_function" and node.target in REARRANGING_FUNCTIONS)
                      or isinstance(self.module(node), Permute))
        return not rearranges and self.shape(source) is not None and self.shape(node) == self.shape(source)

    def module(self, node: fx.Node) -> nn.Module | None:
        return self.model.get_submodule(node.target) if node.op == "call_module" else None

    def calls_layer(self, node: fx.Node) -> bool:
        """Whether the node calls a conv or linear layer (or a module holding one)."""
        return node.op == "call_module" and any(isinstance(m, LAYER_TYPES) for m in self.module(node).modules())

    def has_layer(self, start: fx.Node, end: fx.Node) -> bool:
        """Whether a node after `start` up to `end` calls a conv or linear layer."""
        return any(self.calls_layer(node) for node in self._between(start, end))

    def _between(self, start: fx.Node, end: fx.Node) -> list[fx.Node]:
        return self.nodes[self.position[start] + 1:self.position[end] + 1]

    def _pools(self, node: fx.Node) -> bool:
        return isinstance(self.module(node), POOLING_MODULES) or (node.op == "call_function" and node.target in POOLING_FUNCTIONS)

    def output_node(self) -> fx.Node:
        value = self.nodes[-1].args[0]
        if not isinstance(value, fx.Node):
            raise NotFound(f"the forward returns a value of type {type(value).__name__}, not one tensor of logits")
        return value

    def classifier(self) -> str:
        """The name of the conv or linear layer whose output the forward returns (through pass-on operations)."""
        output = node = self.output_node()
        while self._passes_on(node):
            node = self._scaled(node) or node.args[0]
        logits = self.shape(output)[-1]
        if not (node.op == "call_module" and isinstance(self.module(node), LAYER_TYPES)):
            raise NotFound(f"the logits come from {self._describe(node)}, not from a Linear or Conv2d layer{self._candidates(node, logits)}")
        outputs = layer_outputs(self.module(node))
        if outputs != logits:
            raise NotFound(f"the logits come from {node.target} ({outputs} outputs) through operations that make them {logits}")
        return node.target

    def _candidates(self, node: fx.Node, logits: int) -> str:
        """Which layers to name, among those `node` is computed from: the ones giving as many outputs as the logits
        (timm's distilled DeiT and LeViT average two classifiers, `head` and `head_dist`)."""
        sources = _reached(node, lambda n: n.all_input_nodes)
        names = [n.target for n in sorted(sources, key=self.position.get)
                 if n.op == "call_module" and isinstance(self.module(n), LAYER_TYPES) and layer_outputs(self.module(n)) == logits]
        verb = "gives" if len(names) == 1 else "give"
        return f"; of the layers it is computed from, {' and '.join(names)} {verb} {logits} outputs" if names else ""

    def _passes_on(self, node: fx.Node) -> bool:
        if self._scaled(node):
            return True
        if not node.args or not isinstance(node.args[0], fx.Node):
            return False
        if node.op == "call_module":
            return isinstance(self.module(node), PASS_ON_MODULES)
        return (node.op == "call_function" and node.target in PASS_ON_FUNCTIONS) or (node.op == "call_method" and node.target in PASS_ON_METHODS)

    def _scaled(self, node: fx.Node) -> fx.Node | None:
        """What `node` multiplies or divides by one number (`logits / self.temperature`, CLIP's `scale.exp() * logits`),
        else None."""
        if node.op not in ("call_function", "call_method") or node.target not in SCALING or len(node.args) != 2 or node.kwargs:
            return None
        values = [arg for arg in node.args if isinstance(arg, fx.Node) and not self._one_number(arg)]
        numbers = [arg for arg in node.args if arg not in values]
        divides_by_value = node.target in (operator.truediv, torch.div, "div") and node.args[0] is not (values or [None])[0]
        return values[0] if len(values) == 1 and len(numbers) == 1 and not divides_by_value else None

    def _one_number(self, node: fx.Node) -> bool:
        shape = self.shape(node)
        return shape is not None and all(size == 1 for size in shape)

    def _describe(self, node: fx.Node) -> str:
        kind = type(self.module(node)).__name__ if node.op == "call_module" else getattr(node.target, "__name__", str(node.target))
        return f"{node.name} ({kind})"

    def stage_ends(self, classifier: str | None) -> tuple[fx.Node, list[fx.Node]]:
        """(where the stem ends, where each stage ends): the last cut point before each drop of the spatial
        resolution; the last stage ends at the last feature map before the classifier's pooling."""
        if classifier is None:
            raise NotFound("the classifier is unknown, so where the body ends is too")
        maps = self._feature_maps(classifier)
        ends = [cut for cut, after in zip(maps, maps[1:]) if self.resolution(after) < self.resolution(cut)] + [maps[-1]]
        ends = self._without_empty_stages(ends)
        if len(ends) < 2:
            raise NotFound(f"the spatial resolution of the feature maps (N, C, H, W) never drops at a point where one tensor "
                           f"is live, between the first layer and the classifier's pooling (input {tuple(self.example.shape[2:])})")
        first_blocks = self._blocks(self.nodes[0], ends[0])
        stem_end = first_blocks[0][1]  # the stem is the first block; the rest at full resolution is the first stage
        return stem_end, ends[1:] if stem_end is ends[0] else ends

    def _feature_maps(self, classifier: str) -> list[fx.Node]:
        """The cut points holding a feature map (N, C, H, W), from the first layer to the body's end: the
        last one before the classifier, or before the pooling that leads to it."""
        calls = [self.position[n] for n in self.nodes if n.op == "call_module" and n.target == classifier]
        if not calls:
            raise StructureError(f"--classifier {classifier}: the forward never calls it; name the layer that gives the logits")
        head, first = calls[0], next(self.position[n] for n in self.nodes if self.calls_layer(n))
        maps = [cut for cut in self.cuts if first <= self.position[cut] < head and self.resolution(cut)]
        if not maps:
            raise NotFound("tracing found no feature map (N, C, H, W) that is the only live tensor between the first layer and the classifier")
        while len(maps) > 1 and all(self._pools(node) for node in self._between(maps[-2], maps[-1])):
            maps.pop()
        return maps

    def _without_empty_stages(self, ends: list[fx.Node]) -> list[fx.Node]:
        """A stage without a conv or linear layer (a lone pooling) joins the one before it."""
        kept = [ends[0]]
        for end in ends[1:]:
            if not self.has_layer(kept[-1], end):
                kept.pop()
            kept.append(end)
        return kept

    def named_ends(self, names: tuple[str, ...]) -> tuple[fx.Node, list[fx.Node]]:
        """(stem end, stage ends) for stages named by the modules whose outputs end them."""
        spans = self.spans
        for name in names:
            if name not in spans:
                raise StructureError(f"--stages {name}: the forward never calls it; name modules the forward calls")
        order = [spans[name] for name in names]
        if any(b[0] <= a[1] for a, b in zip(order, order[1:])):
            raise StructureError(f"--stages {','.join(names)}: name modules in the order the forward calls them, each after the last")
        stem_end = self.nodes[order[0][0] - 1]
        for label, node in [(f"the start of {names[0]}", stem_end)] + [(name, self.nodes[span[1]]) for name, span in zip(names, order)]:
            if node not in self.cuts:
                raise StructureError(f"--stages: {label} is not a point where one tensor is live (a branch such as a residual "
                                     f"shortcut crosses it): name modules that end whole blocks")
        ends = [self.nodes[span[1]] for span in order]
        for name, end in zip(names, ends):
            if len(self.shape(end) or ()) == 4 and end not in self.feature_maps:
                raise StructureError(f"--stages {name}: its output {tuple(self.shape(end))} is 4-D but no feature map (N, C, H, "
                                     "W): no convolution, batch norm or pooling reads it unless permuted or reshaped (channels "
                                     "last, as a Swin's), and early exits would pool the wrong dimensions; name modules whose "
                                     "outputs are feature maps (N, C, H, W) or tokens (N, T, C)")
        return stem_end, ends

    def _module_spans(self) -> dict[str, tuple[int, int]]:
        """(first, last) position of the nodes each module's call produced."""
        spans: dict[str, tuple[int, int]] = {}
        for node in self.nodes:
            stack = [path for path, _ in node.meta.get("nn_module_stack", {}).values()]
            for path in stack + ([node.target] if node.op == "call_module" else []):
                first, _ = spans.get(path, (self.position[node], 0))
                spans[path] = (first, self.position[node])
        return spans

    def split(self, stem_end: fx.Node, ends: list[fx.Node]) -> StagedNet:
        """stem -> stages -> head calling the model's layers; NotFound when it does not compute the model's logits."""
        output = self.output_node()
        bounds = [self.nodes[0], stem_end] + ends
        stem = self._piece(self.nodes[0], stem_end, "Stem")
        stages = [nn.Sequential(*(self._piece(a, b, "Block") for a, b in self._blocks(start, end)))
                  for start, end in zip(bounds[1:], bounds[2:])]
        view = StagedNet(stem, stages, self._piece(ends[-1], output, "Head")).eval()
        self._check_same(view)
        return view

    def _blocks(self, start: fx.Node, end: fx.Node) -> list[tuple[fx.Node, fx.Node]]:
        """The pieces of a stage between consecutive cut points; a piece without a conv or linear layer
        joins the one before it (a convolution keeps its normalisation and activation)."""
        pieces, begin = [], start
        for cut in [c for c in self.cuts if self.position[start] < self.position[c] < self.position[end]] + [end]:
            if pieces and not (self.has_layer(begin, cut) and self.has_layer(*pieces[-1])):
                pieces[-1] = (pieces[-1][0], cut)
            else:
                pieces.append((begin, cut))
            begin = cut
        return pieces

    def _piece(self, start: fx.Node, end: fx.Node, name: str) -> fx.GraphModule:
        """The nodes after `start` up to `end` as a GraphModule taking start's value and returning end's."""
        graph, env = fx.Graph(), {start: None}
        env[start] = graph.placeholder("x")

        def value(node: fx.Node) -> fx.Node:
            if node not in env:  # a parameter or buffer, or what is computed from them alone: computed here again
                env[node] = graph.get_attr(node.target) if node.op == "get_attr" else graph.node_copy(node, value)
            return env[node]

        for node in self._between(start, end):
            if node not in self.constants:
                env[node] = graph.node_copy(node, value)
        graph.output(env[end])
        return fx.GraphModule(self.model, graph, class_name=name)

    @torch.no_grad()
    def _check_same(self, view: nn.Module) -> None:
        expected, got = self.model(self.example), view(self.example)
        scale = max(1.0, float(expected.abs().max()))
        if expected.shape != got.shape or not torch.allclose(expected, got, rtol=TOLERANCE, atol=TOLERANCE * scale):
            difference = float((expected - got).abs().max()) if expected.shape == got.shape else f"shape {tuple(got.shape)}"
            raise NotFound(f"the stem -> stages -> head split does not compute the model's logits (largest difference {difference})")

    def describe(self, view: StagedNet, stem_end: fx.Node, ends: list[fx.Node]) -> dict:
        return {"stem": self.name_of(stem_end), "stages": tuple(self.name_of(end) for end in ends),
                "blocks": tuple(len(stage) for stage in view.stages)}

    def name_of(self, node: fx.Node) -> str:
        """The outermost module whose call ends at `node`, else the node's own name."""
        ending = [path for path, (_, last) in self.spans.items() if last == self.position[node]]
        return min(ending, key=lambda path: path.count(".")) if ending else node.name
