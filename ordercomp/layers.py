"""The one home of compression state: what a method leaves on a model for later methods to keep.

Every mark lives on the modules themselves and is read and written only through the accessors
below (methods, metrics, export and training use nothing else):

- bit widths: `bits_of(layer)` -> (weight bits, activation bits); `is_quantised(layer)` for a
  fake-quantised conv/linear layer (`to_quant` makes one, and a quantised self-attention from a
  MultiheadAttention, computed step by step like the `StepwiseAttention` that head pruning leaves,
  whose heads may be fewer than its embedding allows); a converted int8 part also has bits; a unit without weights that multiplies
  activations (token merging's matching) has activation bits only, which quantisation lowers.
- sparsity: `sparsity_of(layer)` (None when not marked); `magnitude_prune_` zeroes and marks;
  `sparse_masks` lets fine-tuning keep the zeros.
- int8 kernels: `mark_int8(part)` on a converted part; `is_int8_converted(model)` is true when any
  part of the model runs int8 kernels (its weights are no longer trainable).
- exit heads: `exit_heads(model)` (empty for a plain model), `all_outputs(model, x)` the logits of
  every exit.
- classifiers: `mark_logits_layer(layer)` on the layer that produces the class logits (the zoo's
  heads and exit heads mark theirs, `models.structure` the one it traces or the user names);
  `output_layers(model)` lists them: they are never pruned, sparsified or factored, so the number
  of classes never changes. A layer that replaces a marked one inherits the mark.
- stage boundaries: `is_staged(model)` (stem, stages, head: a zoo model, or a user's network split
  by `models.structure`).
`compression_marks(model)` sums them up for tests and manifests.

The "B after A" contract: a method B applied to the output of a method A keeps every mark A left,
or raises `Incompatible` saying why. Bits never go up (`to_quant` keeps the lower width, layers
that replace a quantised layer inherit its bits, exit heads added to a quantised body are
quantised alike); sparse layers stay marked and keep their zeros through fine-tuning (factors
inherit the mark); exit heads survive and are pruned, quantised and distilled with the body; a
model with int8 parts is not trained again. tests/test_layers.py checks this for every ordered
pair of registered methods.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

FULL_BITS = 32
SUPPORTED_BITS = (2, 4, 8)


def fake_quant_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel quantisation with a straight-through gradient."""
    qmax = 2 ** (bits - 1) - 1
    flat = weight.detach().flatten(1).abs().amax(dim=1).clamp_min(1e-8)
    scale = (flat / qmax).view(-1, *([1] * (weight.dim() - 1)))
    quantised = torch.clamp(torch.round(weight / scale), -qmax, qmax) * scale
    return weight + (quantised - weight).detach()


def fake_quant_activation(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor, bits: int) -> torch.Tensor:
    """Asymmetric per-tensor quantisation over [low, high] with a straight-through gradient, computed
    in float32 (under bf16 autocast too) and returned in the input's dtype."""
    levels = 2 ** bits - 1
    scale = ((high - low) / levels).clamp_min(1e-8)
    zero = torch.round(-low / scale)
    full = x.float()
    quantised = (torch.clamp(torch.round(full / scale) + zero, 0, levels) - zero) * scale
    return (full + (quantised - full).detach()).to(x.dtype)


def fake_quant_probabilities(p: torch.Tensor, bits: int) -> torch.Tensor:
    """Attention probabilities (on [0, 1]) with a straight-through gradient. Below 8 bits on a log-sqrt(2) grid
    (FQ-ViT, Lin et al. 2022: levels 2^(-k/2), k = 0 .. 2^bits - 2, and 0): a uniform 4-bit grid's step is 1/15, so
    it rounds every probability under 1/30 to zero, which is every one of a 65-token ViT's evenly spread attention.
    At 8 bits the uniform grid, finer near 1."""
    if bits >= 8:
        return fake_quant_activation(p, p.new_zeros(()), p.new_ones(()), bits)
    zero_code = 2 ** bits - 1
    full = p.float()
    codes = torch.clamp(torch.round(-2 * torch.log2(full.clamp_min(2.0 ** -zero_code))), 0, zero_code)
    quantised = torch.where(codes == zero_code, torch.zeros_like(full), torch.exp2(-codes / 2))
    return (full + (quantised - full).detach()).to(p.dtype)


def observe_range_(low: torch.Tensor, high: torch.Tensor, observed: torch.Tensor, x: torch.Tensor) -> None:
    """Widen [low, high] to hold 0 and follow x's range: set on the first batch, then an EMA (weight 0.1)."""
    new_low, new_high = (v.to(low.dtype) for v in (x.min().clamp_max(0.0), x.max().clamp_min(0.0)))
    if not bool(observed):
        low.copy_(new_low), high.copy_(new_high), observed.fill_(True)
    else:
        low.lerp_(new_low, 0.1), high.lerp_(new_high, 0.1)


class _QuantMixin:
    """Fake quantisation of the input activation and of the weight, with an EMA range observer."""

    def _init_quant(self, weight_bits: int, act_bits: int) -> None:
        self.weight_bits, self.act_bits = weight_bits, act_bits
        self.register_buffer("act_low", torch.zeros(()))
        self.register_buffer("act_high", torch.zeros(()))
        self.register_buffer("observed", torch.zeros((), dtype=torch.bool))

    def _quant_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_bits >= FULL_BITS:
            return x
        if self.training:
            self._observe(x.detach())
        return fake_quant_activation(x, self.act_low, self.act_high, self.act_bits)

    def _observe(self, x: torch.Tensor) -> None:
        observe_range_(self.act_low, self.act_high, self.observed, x)

    def _quant_weight(self) -> torch.Tensor:
        return self.weight if self.weight_bits >= FULL_BITS else fake_quant_weight(self.weight, self.weight_bits)


class QuantConv2d(_QuantMixin, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self._quant_input(x), self._quant_weight(), self.bias)


class QuantLinear(_QuantMixin, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._quant_input(x), self._quant_weight(), self.bias)


class ActivationRange(nn.Module):
    """The observed range of one activation an attention product reads, and its fake quantisation over it."""

    def __init__(self):
        super().__init__()
        self.register_buffer("low", torch.zeros(()))
        self.register_buffer("high", torch.zeros(()))
        self.register_buffer("observed", torch.zeros((), dtype=torch.bool))

    def forward(self, x: torch.Tensor, bits: int) -> torch.Tensor:
        if bits >= FULL_BITS:
            return x
        if self.training:
            observe_range_(self.low, self.high, self.observed, x.detach())
        return fake_quant_activation(x, self.low, self.high, bits)


class StepwiseAttention(nn.MultiheadAttention):
    """Self-attention as torchvision's EncoderBlock calls it (batch first, one packed in-projection), computed step by
    step with any number of heads of any width: once heads are removed (`keep_heads_`) its inner width is heads x head
    width, no longer its embedding, which nn.MultiheadAttention's own forward requires. Takes token merging's additive
    mask (B * heads, T, T). The hooks below are where quantisation (QuantMultiheadAttention) rounds its operands."""

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_padding_mask=None,
                need_weights: bool = True, attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False, query_rows: int | None = None) -> tuple[torch.Tensor, None]:
        """`query_rows`: only the first tokens ask (an exit's class token), every token's keys and values answer."""
        packed = F.linear(self._quant_input(query), self._in_weight(), self.in_proj_bias)  # query, key, value: the same tokens
        return self.out_proj(attend_by_heads(packed, self.num_heads, attn_mask, self._attend, self._operand, query_rows)), None

    def _quant_input(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _in_weight(self) -> torch.Tensor:
        return self.in_proj_weight

    def _operand(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return x

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)


def attend_by_heads(packed: torch.Tensor, heads: int, attn_mask: torch.Tensor | None, attend, operand=lambda name, x: x,
                    query_rows: int | None = None) -> torch.Tensor:
    """The middle of self-attention: packed queries, keys and values (B, T, 3 x inner), each passed through
    `operand(name, x)`, split into `heads`, attended by `attend(q, k, v, mask)` (token merging's additive mask,
    (B * heads, Q, T), viewed per head), and the heads merged back: (B, Q, inner). Q is T, or `query_rows` when only
    the first tokens ask: their rows of the products, nothing else, so their values are those of the whole."""
    batch, tokens, width = packed.shape[0], packed.shape[1], packed.shape[2] // 3 // heads
    asking = tokens if query_rows is None else query_rows
    query, key, value = packed.chunk(3, dim=-1)
    q, k, v = (operand(name, part).reshape(batch, part.shape[1], heads, width).transpose(1, 2)
               for name, part in (("query", query[:, :asking]), ("key", key), ("value", value)))
    mask = None if attn_mask is None else attn_mask.view(batch, heads, asking, tokens)
    return attend(q, k, v, mask).transpose(1, 2).reshape(batch, asking, heads * width)


class QuantMultiheadAttention(_QuantMixin, StepwiseAttention):
    """Step-by-step self-attention with every operand fake-quantised: its input and in-projection, the queries, keys
    and values the products read (each over its observed range), the attention probabilities
    (fake_quant_probabilities), and out_proj (a QuantLinear)."""

    def _init_quant(self, weight_bits: int, act_bits: int) -> None:
        super()._init_quant(weight_bits, act_bits)
        self.operands = nn.ModuleDict({name: ActivationRange() for name in ("query", "key", "value")})

    def _in_weight(self) -> torch.Tensor:
        return self.in_proj_weight if self.weight_bits >= FULL_BITS else fake_quant_weight(self.in_proj_weight, self.weight_bits)

    def _operand(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return self.operands[name](x, self.act_bits)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        scores = q @ k.transpose(-2, -1) * self.head_dim ** -0.5  # (B, H, T, T)
        if mask is not None:  # added to the logits (token merging's proportional attention)
            scores = scores + mask
        probabilities = scores.softmax(dim=-1)
        if self.act_bits < FULL_BITS:
            probabilities = fake_quant_probabilities(probabilities, self.act_bits)
        return F.dropout(probabilities, self.dropout, self.training) @ v


def attention_as(kind: type, attention: nn.MultiheadAttention) -> StepwiseAttention:
    """A new step-by-step attention of class `kind` with `attention`'s embedding, heads, head width, dropout and
    weights (copied)."""
    inner = attention.num_heads * attention.head_dim
    new = kind(inner, attention.num_heads, attention.dropout, bias=attention.in_proj_bias is not None, batch_first=True,
               device=attention.in_proj_weight.device)
    new.embed_dim = new.kdim = new.vdim = attention.embed_dim
    new.in_proj_weight = nn.Parameter(attention.in_proj_weight.detach().clone())
    if attention.in_proj_bias is not None:
        new.in_proj_bias = nn.Parameter(attention.in_proj_bias.detach().clone())
    new.out_proj = copy.deepcopy(attention.out_proj)
    return new


@torch.no_grad()
def keep_heads_(attention: StepwiseAttention, keep: list[int]) -> None:
    """Keep the heads `keep` (indices in order) of a step-by-step attention, in place: their rows of the packed
    in-projection (queries, keys and values alike) and their columns of out_proj."""
    width, inner = attention.head_dim, attention.num_heads * attention.head_dim
    device = attention.in_proj_weight.device
    channels = (torch.tensor(keep, device=device)[:, None] * width + torch.arange(width, device=device)).flatten()
    rows = torch.cat([channels + part * inner for part in range(3)])
    attention.in_proj_weight = nn.Parameter(attention.in_proj_weight[rows].clone())
    if attention.in_proj_bias is not None:
        attention.in_proj_bias = nn.Parameter(attention.in_proj_bias[rows].clone())
    attention.out_proj.weight = nn.Parameter(attention.out_proj.weight[:, channels].clone())
    attention.out_proj.in_features = len(channels)
    attention.num_heads = len(keep)


def has_every_head(attention: nn.MultiheadAttention) -> bool:
    """True while an attention's inner width (heads x head width) is its embedding: no head has been removed."""
    return attention.num_heads * attention.head_dim == attention.embed_dim


def quantisable_attention(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The attention modules quantisation rewrites: self-attention called batch first with one packed in-projection
    (torchvision's ViT); any other keeps its float projections, and the metrics count them at full bits."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.MultiheadAttention) and m.batch_first
            and m.in_proj_weight is not None and m.bias_k is None and not m.add_zero_attn]


def _step_by_step(module: nn.Module, args: tuple) -> None:
    """A forward pre-hook that does nothing: its presence keeps PyTorch's transformer layers off their fused path."""


def step_by_step_transformer_layers_(model: nn.Module) -> nn.Module:
    """Keep every nn.TransformerEncoderLayer and nn.TransformerDecoderLayer of a user's network on its step-by-step
    path. In eval mode without gradients their fused fast path reads the weights of their attention and linear
    layers itself instead of calling them, so a layer a method rewrote would not run: a quantised layer computed in
    float while its bits were reported, a factored one broke the forward. A forward pre-hook on the layer is one of
    the conditions that turn that path off (the others are global or depend on the input)."""
    for module in model.modules():
        if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)) and \
                _step_by_step not in module._forward_pre_hooks.values():
            module.register_forward_pre_hook(_step_by_step)
    return model


def compute_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The conv and linear layers of a model, with their qualified names."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def called_layers(model: nn.Module, example: torch.Tensor | None = None) -> list[tuple[str, nn.Module]]:
    """The conv and linear layers that are called as modules, so a replacement changes what the model
    computes: a MultiheadAttention reads its out_proj's weight itself and never calls the layer. Given an example
    input, only the layers its forward (through every exit) calls: torchvision's Swin Transformer reads its
    attention's qkv and proj weights itself too, and a layer replaced there would change nothing it computes."""
    read_directly = {id(m.out_proj) for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    layers = [(name, layer) for name, layer in compute_layers(model) if id(layer) not in read_directly]
    if example is None:
        return layers
    called: set[int] = set()
    hooks = [layer.register_forward_pre_hook(lambda module, args: called.add(id(module))) for _, layer in layers]
    training = model.training
    try:
        with torch.no_grad():
            all_outputs(model.eval(), example.to(next((p.device for p in model.parameters()), example.device)))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(training)
    return [(name, layer) for name, layer in layers if id(layer) in called]


def bits_of(layer: nn.Module) -> tuple[int, int]:
    """(weight bits, activation bits) of a layer or int8 part; full precision unless quantised."""
    return getattr(layer, "weight_bits", FULL_BITS), getattr(layer, "act_bits", FULL_BITS)


def has_bits(module: nn.Module) -> bool:
    """True for a module that carries its own bit widths (a quantised layer or an int8 part)."""
    return hasattr(module, "weight_bits")


def multiplies_activations_at_bits(module: nn.Module) -> bool:
    """True for a module whose products of activations run at its own activation bits: a quantised layer, an
    int8 part, or a unit without weights such as token merging's matching."""
    return hasattr(module, "act_bits")


def lower_activation_bits_(model: nn.Module, act_bits: int) -> None:
    """Quantisation lowers the bits of the units without weights too (bits never go up)."""
    for module in model.modules():
        if multiplies_activations_at_bits(module) and not has_bits(module):
            module.act_bits = min(module.act_bits, act_bits)


def is_quantised(layer: nn.Module) -> bool:
    """True for a fake-quantised conv/linear layer (quantisation-aware training)."""
    return isinstance(layer, (QuantConv2d, QuantLinear))


def quantises_activations(model: nn.Module) -> bool:
    """True when the model rounds activations below full precision: a fake-quantised layer rounding its input, or a
    part converted to int8 kernels (its activations are quantised to 8 bits between its operators)."""
    return is_int8_converted(model) or any(bits_of(layer)[1] < FULL_BITS for _, layer in quantised_layers(model))


def quantised_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, layer) for name, layer in compute_layers(model) if is_quantised(layer)]


def quantised_units(model: nn.Module) -> list[nn.Module]:
    """Everything that observes activation ranges: quantised layers and quantised attention."""
    return [m for m in model.modules() if is_quantised(m) or isinstance(m, QuantMultiheadAttention)]


def to_quant(layer: nn.Module, weight_bits: int, act_bits: int) -> nn.Module:
    """A quantised copy of a conv/linear layer or of self-attention; bits never go up if it is quantised already."""
    old_w, old_a = bits_of(layer)
    weight_bits, act_bits = min(weight_bits, old_w), min(act_bits, old_a)
    if isinstance(layer, (QuantConv2d, QuantLinear, QuantMultiheadAttention)):
        layer.weight_bits, layer.act_bits = weight_bits, act_bits
        if isinstance(layer, QuantMultiheadAttention):
            layer.out_proj = to_quant(layer.out_proj, weight_bits, act_bits)
        return layer
    if isinstance(layer, nn.MultiheadAttention):
        return _quant_attention(layer, weight_bits, act_bits)
    quant = layer_like(layer, QuantConv2d, QuantLinear)
    quant._init_quant(weight_bits, act_bits)
    quant.to(layer.weight.device)
    quant.load_state_dict(layer.state_dict(), strict=False)
    copy_marks(layer, quant)
    return quant


def _quant_attention(attention: nn.MultiheadAttention, weight_bits: int, act_bits: int) -> QuantMultiheadAttention:
    quant = attention_as(QuantMultiheadAttention, attention)
    quant._init_quant(weight_bits, act_bits)
    quant.to(attention.in_proj_weight.device)
    quant.out_proj = to_quant(quant.out_proj, weight_bits, act_bits)
    return quant


@torch.no_grad()
def plain_layers_(model: nn.Module) -> nn.Module:
    """Replace every fake-quantised layer by a plain one holding its quantised weights (no activation
    quantisation), in place: what int8 conversion and runtime quantisers start from."""
    for name, layer in quantised_layers(model):
        plain = layer_like(layer)
        plain.weight.copy_(fake_quant_weight(layer.weight, layer.weight_bits) if layer.weight_bits < FULL_BITS else layer.weight)
        if layer.bias is not None:
            plain.bias.copy_(layer.bias)
        copy_marks(layer, plain)
        replace_module(model, name, plain.to(layer.weight.device))
    return model


def layer_like(layer: nn.Module, conv_type: type = nn.Conv2d, linear_type: type = nn.Linear) -> nn.Module:
    """A new, uninitialised layer of the given class with `layer`'s shape and hyperparameters."""
    if isinstance(layer, nn.Conv2d):
        return conv_type(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                         layer.dilation, layer.groups, layer.bias is not None, layer.padding_mode)
    return linear_type(layer.in_features, layer.out_features, layer.bias is not None)


def copy_marks(source: nn.Module, target: nn.Module) -> None:
    """Carry the sparsity and classifier marks over to a layer that replaces `source`."""
    if sparsity_of(source) is not None:
        target.sparsity = sparsity_of(source)
    if produces_logits(source):
        mark_logits_layer(target)


def mark_logits_layer(layer: nn.Module) -> nn.Module:
    """Mark the layer whose output is the class logits (the model's classifier or an exit head's)."""
    layer.produces_logits = True
    return layer


def produces_logits(layer: nn.Module) -> bool:
    return getattr(layer, "produces_logits", False)


def sparsity_of(layer: nn.Module) -> float | None:
    """The fraction of weights a sparsifying method zeroed in this layer, or None if not marked."""
    return getattr(layer, "sparsity", None)


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def magnitude_prune_(layer: nn.Module, sparsity: float) -> None:
    """Zero the smallest-magnitude fraction `sparsity` of a layer's weights and mark it sparse."""
    weight = layer.weight.data
    count = int(round(sparsity * weight.numel()))
    if count > 0:
        threshold = weight.abs().flatten().kthvalue(count).values
        weight.mul_((weight.abs() > threshold).to(weight.dtype))
    layer.sparsity = max(sparsity, sparsity_of(layer) or 0.0)


def sparse_masks(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, mask of non-zeros) for every layer marked sparse, so fine-tuning keeps the zeros."""
    return [(m.weight, (m.weight.data != 0).to(m.weight.dtype)) for _, m in compute_layers(model) if sparsity_of(m) is not None]


def mark_int8(part: torch.fx.GraphModule, sparsity: float | None = None) -> None:
    """Mark a part converted to int8 kernels (8-bit weights and activations, not trainable), sparse
    when the layers it holds were (zeros stay zeros on the symmetric int8 weight grid).
    A GraphModule drops plain attributes when deep-copied; the ones named in this meta entry it keeps."""
    marks = {"weight_bits": 8, "act_bits": 8, "int8_kernels": True, **({"sparsity": sparsity} if sparsity is not None else {})}
    part.meta.setdefault("_user_preserved_attributes", {}).update(marks)
    for name, value in marks.items():
        setattr(part, name, value)


def is_int8_part(module: nn.Module) -> bool:
    return getattr(module, "int8_kernels", False)


def is_int8_converted(model: nn.Module) -> bool:
    return any(is_int8_part(module) for module in model.modules())


def int8_weights(part: nn.Module) -> list[torch.Tensor]:
    """The int8 weight tensors of a converted part (conv and linear weights, not scales)."""
    return [b for b in part.buffers() if b.dtype == torch.int8 and b.dim() > 1]


def sparse_weights(model: nn.Module) -> list[torch.Tensor]:
    """The weights of every unit marked sparse: sparse layers and sparse int8 parts."""
    return [tensor for module in model.modules() if sparsity_of(module) is not None
            for tensor in (int8_weights(module) if is_int8_part(module) else [module.weight])]


def lowest_sparsity(model: nn.Module) -> float | None:
    marks = [sparsity_of(layer) for _, layer in compute_layers(model) if sparsity_of(layer) is not None]
    return min(marks, default=None)


def is_staged(model: nn.Module) -> bool:
    """True for a model ordercomp split into stem, stages and head (where exits attach). A user's network whose parts
    bear those names is not (timm's ConvNeXt, LeViT, MobileViT: its forward runs more than them), so it is traced."""
    return getattr(type(model), "splits_into_stages", False)


def exit_heads(model: nn.Module) -> list[nn.Module]:
    """The early-exit heads of a model, in stage order (none for a plain model)."""
    return list(getattr(model, "exits", []))


def all_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Logits of every exit, the final head last (a plain model has one)."""
    return model.forward_all(x) if hasattr(model, "forward_all") else [model(x)]


def output_layers(model: nn.Module) -> list[nn.Module]:
    """The layers marked as producing class logits (the classifier and every exit head's): never pruned;
    empty when the classifier is unknown."""
    return [module for module in model.modules() if produces_logits(module)]


def compression_marks(model: nn.Module) -> dict:
    """Every mark on a model: the highest bit widths of its bit-annotated modules, its sparse
    layers and their lowest mark, whether it runs int8 kernels, and its number of exit heads."""
    annotated = [bits_of(m) for m in model.modules() if has_bits(m)]
    sparse = [sparsity_of(m) for m in model.modules() if sparsity_of(m) is not None]
    return {"weight_bits": max((b[0] for b in annotated), default=None), "act_bits": max((b[1] for b in annotated), default=None),
            "sparse_layers": len(sparse), "sparsity": min(sparse, default=None), "int8": is_int8_converted(model),
            "exits": len(exit_heads(model))}
