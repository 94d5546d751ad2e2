"""Early exit: classifier heads after intermediate stages; a confident sample leaves early.

The model's cost becomes an expectation over the data (the fraction of samples leaving at each
exit, see metrics). The body is frozen while the exit heads (linear probes, trained at their own
learning rate) train, so the final exit keeps its accuracy; later methods fine-tune body and exits together and prune or quantise them alike.

A Vision Transformer (torchvision's) has blocks of tokens, not stages of feature maps: its exits read the class
token after every encoder block but the last, through a LayerNorm and a Linear layer as its own head does after
the encoder's LayerNorm; the same threshold rule decides, and merged tokens go on merged (`TransformerExits`).
Since an exit reads the class token alone, a sample that leaves after a block computes there only the class
token's path (`class_token_path`): every token's keys and values, its own query, attention row and MLP.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vision_transformer import EncoderBlock, VisionTransformer

from ..train import train
from ..layers import bits_of, is_int8_part, mark_logits_layer, quantised_layers, to_quant
from .base import Context, Incompatible, Method, check_range, require_staged
from .token_merge import block_names, block_steps, proportional_mask


class EarlyExitNet(nn.Module):
    """A staged network with an exit head after every stage but the last."""

    splits_into_stages = True  # layers.is_staged

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
        exits = dict(enumerate(self.exits))  # exit i after stage i
        return leave_early(self.stem(x), list(self.stages), exits, self.head, self.threshold)

    def reaches(self, unit: str, exit_index: int) -> bool:
        """Whether a sample leaving at `exit_index` (len(exits): the final head) runs the named part (metrics)."""
        part, _, rest = unit.partition(".")
        if exit_index == len(self.exits):
            return True
        if part in ("stages", "exits"):
            return int(rest.split(".")[0]) <= exit_index
        return part != "head"


CLASS_PATH = "class_path"  # the metrics' name for a block's class-token path: class_path.<block>.<part>


def class_token_path(block: EncoderBlock, tokens: torch.Tensor, size: torch.Tensor | None) -> torch.Tensor:
    """torchvision's EncoderBlock on (tokens, sizes) for the class token alone, (B, 1, C): what an exit after the block
    reads. The class token's output needs every token's keys and values but only its own query, attention row,
    out_proj and MLP (token merging never merges it, and merges after attention), so a sample that leaves at the
    exit skips the rest of the block (on the ViT sample's default chain, 13.2 M of its first block's 38.5 M BitOps)."""
    attention = block.self_attention
    normed = block.ln_1(tokens)
    row = proportional_mask(size, attention.num_heads, tokens.dtype, queries=1)
    if type(attention) is nn.MultiheadAttention:  # torchvision's own: its query may be other tokens than its keys
        attended, _ = attention(normed[:, :1], normed, normed, need_weights=False, attn_mask=row)
    elif "query_rows" in inspect.signature(attention.forward).parameters:  # ordercomp's step-by-step attentions
        attended, _ = attention(normed, normed, normed, need_weights=False, attn_mask=row, query_rows=1)
    else:  # any other: every row, of which the class token's (the metrics count what runs)
        every = proportional_mask(size, attention.num_heads, tokens.dtype)
        attended = attention(normed, normed, normed, need_weights=False, attn_mask=every)[0][:, :1]
    cls = tokens[:, :1] + block.dropout(attended)
    return cls + block.mlp(block.ln_2(cls))


class TransformerExits(nn.Module):
    """torchvision's VisionTransformer with an exit head on the class token after every encoder block but the last;
    with token merging, each block merges as the encoder's own forward would (`block_steps`)."""

    def __init__(self, vit: nn.Module, exits: dict[str, nn.Module], threshold: float):
        super().__init__()
        self.vit, self.exits, self.threshold = vit, nn.ModuleDict(exits), threshold  # exits keyed by their block's name

    def _steps(self) -> list[tuple[str, Callable]]:
        """(block name, step on (tokens, sizes)) for every block of the encoder, in order."""
        return block_steps(self.vit.encoder.layers)

    def _embed(self, images: torch.Tensor) -> tuple[torch.Tensor, None]:
        """VisionTransformer.forward up to its blocks: patches, class token, position embeddings; every token one patch."""
        vit = self.vit
        tokens = vit._process_input(images)
        tokens = torch.cat([vit.class_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)  # not len(): it fixes the batch in export
        return vit.encoder.dropout(tokens + vit.encoder.pos_embedding), None

    def _final(self, state: tuple) -> torch.Tensor:
        return self.vit.heads(self.vit.encoder.ln(state[0])[:, 0])

    def forward_all(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every exit, the final head last (training and statistics)."""
        state, outputs = self._embed(images), []
        for name, step in self._steps():
            state = step(*state)
            if name in self.exits:
                outputs.append(self.exits[name](state[0]))
        return outputs + [self._final(state)]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Each sample stops at the first exit whose confidence reaches the threshold. An exit reads the class token
        alone, so its block first computes only that token (`class_token_path`); the block's other tokens are computed
        for the samples that go on."""
        if self.training:
            return self.forward_all(images)[-1]
        steps, first = self._steps(), self.reads_class_token_first()
        blocks = ([lambda state: state] if first else []) + [lambda state, step=step: step(*state) for _, step in steps]
        exits = {index: self._exit(name, first) for index, (name, _) in enumerate(steps) if name in self.exits}
        return leave_early(self._embed(images), blocks, exits, self._final, self.threshold)  # exits[i]: after blocks[i]

    def _exit(self, name: str, first: bool) -> Callable:
        """The exit after block `name` on the state entering that block (`first`) or leaving it."""
        head = self.exits[name]
        if not first:
            return lambda state: head(state[0])
        block = getattr(self.vit.encoder.layers, name)
        return lambda state: head(class_token_path(block, *state))

    def reads_class_token_first(self) -> bool:
        """Whether each exit runs on its block's class-token path, before the rest of the block: not once int8 has
        converted the blocks' layers (at the token counts they saw; the path hands some of them one token)."""
        return not any(is_int8_part(m) for m in self.vit.encoder.modules())

    def class_token_inputs(self, example: torch.Tensor) -> list[tuple[str, nn.Module, tuple]]:
        """(block name, block, the (tokens, sizes) entering it) for every block with an exit, when the exits read the
        class token's path, on `example` (metrics)."""
        if not self.reads_class_token_first():
            return []
        state, inputs = self._embed(example), []
        for name, step in self._steps():
            if name in self.exits:
                inputs.append((name, getattr(self.vit.encoder.layers, name), state))
            state = step(*state)
        return inputs

    def reaches(self, unit: str, exit_index: int) -> bool:
        """Whether a sample leaving at `exit_index` (len(exits): the final head) runs the named part (metrics): the
        blocks before its exit whole, and the class token's path (`class_path.<block>.…`) through every block with an
        exit up to its own. Token matching is one module that every block calls, so it counts whole (at most a few %
        of a block)."""
        if exit_index == len(self.exits):
            return True
        names, exit_blocks = block_names(self.vit.encoder.layers), list(self.exits)
        parts = unit.split(".")
        if parts[0] in ("exits", CLASS_PATH):
            return exit_blocks.index(parts[1]) <= exit_index
        if parts[:3] == ["vit", "encoder", "layers"] and len(parts) > 3 and parts[3] in names:
            if self.reads_class_token_first():  # the exit's own block: for the samples that go on only
                return names.index(parts[3]) < names.index(exit_blocks[exit_index])
            return names.index(parts[3]) <= names.index(exit_blocks[exit_index])
        return not unit.startswith(("vit.heads", "vit.encoder.ln"))

    def drop_orphan_exits(self) -> None:
        """Remove the exits after blocks that are gone or now last (distillation's depth dropped blocks)."""
        for name in set(self.exits) - set(block_names(self.vit.encoder.layers)[:-1]):
            del self.exits[name]


def leave_early(state, blocks: list[Callable], exits: dict[int, Callable], final: Callable, threshold: float) -> torch.Tensor:
    """Run `blocks` on `state` (a tensor, or a tuple of tensors or None, batch first), with the exit `exits[i]` after
    block i, `final` after the last: each sample stops at its first exit whose confidence reaches the threshold."""
    out, active = None, None
    for index, block in enumerate(blocks):
        state = block(state)
        if index not in exits:
            continue
        logits = exits[index](state)
        if out is None:
            out, active = logits.new_empty(logits.shape), torch.arange(len(logits), device=logits.device)
        done = confident(logits, threshold)
        out[active[done]] = logits[done]
        active, state = active[~done], _samples(state, ~done)
        if active.numel() == 0:
            return out
    final_logits = final(state)
    if out is None:
        return final_logits
    out[active] = final_logits
    return out


def _samples(state, keep: torch.Tensor):
    """The samples `keep` of a state: a tensor, or a tuple of tensors (None stays None)."""
    if isinstance(state, tuple):
        return tuple(None if part is None else part[keep] for part in state)
    return state[keep]


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


def exit_head(channels: int, num_classes: int, *, tokens: bool = False) -> nn.Sequential:
    """An exit on a feature map (N, C, H, W): pooled to 2x2, flattened, a Linear layer; on tokens (N, T, C) (a block of
    a user's own transformer): its first token and the mean of all (`TokenPool`), a LayerNorm and a Linear layer."""
    if tokens:
        return nn.Sequential(TokenPool(), nn.LayerNorm(2 * channels), mark_logits_layer(nn.Linear(2 * channels, num_classes)))
    return nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), mark_logits_layer(nn.Linear(4 * channels, num_classes)))


@torch.no_grad()
def stage_outputs(model: nn.Module, example: torch.Tensor) -> list[tuple[int, bool]]:
    """(channels, whether they are tokens) of every stage's output; Incompatible when a stage ends in something else
    than a feature map (N, C, H, W) or tokens (N, T, C), which an exit head cannot pool."""
    x, outputs = model.stem(example), []
    for index, stage in enumerate(model.stages):
        x = stage(x)
        if not isinstance(x, torch.Tensor) or x.dim() not in (3, 4):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise Incompatible(f"early exit heads pool feature maps (N, C, H, W) or tokens (N, T, C), and stage {index + 1} "
                               f"ends in {shape}: end the stages (--stages) at feature maps or at blocks of tokens")
        outputs.append((x.shape[1] if x.dim() == 4 else x.shape[-1], x.dim() == 3))
    return outputs


def apply(model: nn.Module, config: EarlyExitConfig, context: Context) -> nn.Module:
    model.to(context.device).eval()
    if isinstance(model, VisionTransformer):
        model = _transformer_exits(model, context)
    elif not isinstance(model, (EarlyExitNet, TransformerExits)):
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
    """New exit heads after every stage but the last, quantised like the body when the body is quantised already."""
    require_staged(model, "early_exit")
    if len(model.stages) < 2:
        raise Incompatible("early_exit adds exits after every stage but the last, and this model has one stage: "
                           "name at least two with --stages")
    outputs = stage_outputs(model, context.data.example_input(2).to(context.device))
    heads = [exit_head(c, context.data.num_classes, tokens=tokens) for c, tokens in outputs[:-1]]
    for head in heads:
        head[2] = _quantised_like_body(head[2], model)
    return EarlyExitNet(model.stem, model.stages, model.head, heads, 1.0).to(context.device)


def _transformer_exits(vit: nn.Module, context: Context) -> TransformerExits:
    """New exit heads on the class token after every block of the encoder but the last."""
    names = block_names(vit.encoder.layers)
    if len(names) < 2:
        raise Incompatible("early_exit adds exits after every block but the last, and this Vision Transformer has one block")
    heads = {name: class_token_head(vit.hidden_dim, context.data.num_classes) for name in names[:-1]}
    for head in heads.values():
        head[2] = _quantised_like_body(head[2], vit)
    return TransformerExits(vit, heads, 1.0).to(context.device)


def class_token_head(width: int, num_classes: int) -> nn.Sequential:
    """LayerNorm and Linear on token 0, as torchvision's ViT reads its class token (its LayerNorm's eps too)."""
    return nn.Sequential(ClassToken(), nn.LayerNorm(width, eps=1e-6), mark_logits_layer(nn.Linear(width, num_classes)))


class TokenPool(nn.Module):
    """Token 0 of (B, T, C) tokens beside their mean: (B, 2C). A user's transformer may or may not keep a class token
    first; on a 2-block ViT of the 8-px digits an exit after block 1 read 62 % from token 0, 47 % from the mean and 71 %
    from both (tests/test_own_vit.py's model, 3 epochs)."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.cat([tokens[:, 0], tokens.mean(dim=1)], dim=1)


class ClassToken(nn.Module):
    """Token 0 of (B, T, C) tokens: (B, C)."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 0]


def _quantised_like_body(layer: nn.Module, body: nn.Module) -> nn.Module:
    """An exit's layer at the lowest bits of the body's quantised layers, or as it is when none is quantised."""
    bits = [bits_of(part) for _, part in quantised_layers(body)]
    return to_quant(layer, min(b[0] for b in bits), min(b[1] for b in bits)) if bits else layer


METHOD = Method("early_exit", "Early exit", EarlyExitConfig, apply, "threshold",
                "Adds trained exit heads after intermediate stages (a ViT: blocks); confident samples stop early.")
