"""Token merging (ToMe, Bolya et al. 2023): every transformer block merges r pairs of similar tokens.

Between a block's attention and its MLP, the tokens are split alternately into two sets A and B (bipartite
soft matching); each token of A is matched to its most similar token of B (cosine similarity of the tokens the
attention read: the keys ToMe uses would take a second projection), and the r best-matched A tokens are
averaged into their partners, weighted by how many patches each already stands for (its size). The class
token is never merged. Attention weighs each key by its size (proportional attention: log size added to its
logits), so a merged token counts as the patches it holds. Fewer tokens reach the MLP and every later block,
so MACs and BitOps drop (the metrics count attention at the tokens that reach it); then fine-tuning.

torchvision's classes stay as they are: `TokenMergingLayers` takes the place of a VisionTransformer's
`encoder.layers`, holds the same EncoderBlocks under the same names (the state dict keeps its keys) and runs
each block's own layers with the merge between them. B after A: merging again keeps the higher r.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vision_transformer import EncoderBlock

from ..layers import FULL_BITS, bits_of, fake_quant_activation
from ..models.structure import vision_transformers
from ..train import train
from .base import Context, Incompatible, Method, check_range, require_trainable


# Quantised similarities take few values and tie often; PyTorch's sort and onnxruntime's break ties differently, so
# they merged different tokens (a float ONNX file of token_merge -> quantize: 40 of 359 images off its logits). Among
# equal scores, the earlier token goes first: far below any quantisation step, far above float noise.
TIE_BREAK = 1e-6


@dataclass(frozen=True)
class TokenMergeConfig:
    r: int = 16  # tokens merged per block: the sample's 65 tokens become 49, 33, 17, 9 (about half its BitOps)

    def __post_init__(self):
        check_range("tokens merged per block (r)", self.r, 1, 4096)


class TokenMatching(nn.Module):
    """Bipartite soft matching of a block's tokens; its similarities are products of activations, computed at the
    activation bits of the attention beside it (`act_bits`: quantisation lowers them, the metrics count them)."""

    def __init__(self, act_bits: int = FULL_BITS):
        super().__init__()
        self.act_bits = act_bits

    @torch.no_grad()
    def forward(self, metric: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(A tokens merged, A tokens kept in their order, the B partner of each merged one), indices (B, n, 1)."""
        metric = F.normalize(metric.float(), dim=-1)
        if self.act_bits < FULL_BITS:  # unit vectors: their entries lie in [-1, 1]
            metric = fake_quant_activation(metric, metric.new_full((), -1.0), metric.new_ones(()), self.act_bits)
        scores = metric[:, ::2] @ metric[:, 1::2].transpose(1, 2)  # (B, |A|, |B|) cosine similarities
        scores[:, 0] = -torch.inf  # the class token is never merged
        best, partner = scores.max(dim=-1)  # the first of tied partners, in PyTorch as in ONNX's ArgMax
        ranked = (best - TIE_BREAK * torch.arange(best.shape[-1], device=best.device)).argsort(dim=-1, descending=True)[..., None]
        merged, kept = ranked[:, :r], ranked[:, r:].sort(dim=1).values
        return merged, kept, partner[..., None].gather(1, merged)


class TokenMergingLayers(nn.Module):
    """A ViT encoder's blocks under their own names, run with `r` tokens merged in each."""

    def __init__(self, layers: nn.Sequential, r: int, act_bits: int):
        super().__init__()
        self.block_names = [name for name, _ in layers.named_children()]
        for name, block in layers.named_children():
            self.add_module(name, block)
        self.matching = TokenMatching(act_bits)
        self.r = r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = None  # patches per token, (B, T, 1); None while every token is one patch
        for name in self.block_names:
            x, size = self.step(getattr(self, name), x, size)
        return x

    def step(self, block: EncoderBlock, x: torch.Tensor, size: torch.Tensor | None):
        """One block on (tokens, sizes): merging, or torchvision's own forward while merging is paused (`tokens_unmerged`)."""
        return self.merging_block(block, x, size) if self.r else (block(x), size)

    def merging_block(self, block: EncoderBlock, x: torch.Tensor, size: torch.Tensor | None):
        """torchvision's EncoderBlock.forward with the merge between attention and MLP: (tokens, sizes) out."""
        normed = block.ln_1(x)
        attended, _ = block.self_attention(normed, normed, normed, need_weights=False,
                                           attn_mask=proportional_mask(size, block.self_attention.num_heads, x.dtype))
        x = block.dropout(attended) + x
        x, size = bipartite_merge(x, normed, torch.ones_like(x[..., :1]) if size is None else size, self.r, self.matching)
        return x + block.mlp(block.ln_2(x)), size


def proportional_mask(size: torch.Tensor | None, heads: int, dtype: torch.dtype, queries: int | None = None) -> torch.Tensor | None:
    """log(size) of every key, added to the attention logits: (B * heads, Q, T), Q the `queries` that ask (all T
    tokens unless fewer are given: an exit's class token), or None when all sizes are 1."""
    if size is None:
        return None
    batch, tokens, _ = size.shape
    rows = tokens if queries is None else queries
    logs = size.log().transpose(1, 2).expand(batch, rows, tokens)  # row i, column j: log size of key j
    return logs[:, None].expand(batch, heads, rows, tokens).reshape(batch * heads, rows, tokens).to(dtype)


def bipartite_merge(x: torch.Tensor, metric: torch.Tensor, size: torch.Tensor, r: int,
                    matching: TokenMatching | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, T, C) with r tokens merged into their most similar partners by `metric` (B, T, C'), averaged by
    `size` (B, T, 1); token 0 (the class token) is kept in place. Returns (tokens, sizes), T - r of each."""
    r = min(r, (x.shape[1] + 1) // 2 - 1)  # set A holds ceil(T/2) tokens, the class token among them
    if r <= 0:
        return x, size
    merged, kept, partner = (matching or TokenMatching())(metric, r)
    weighted, channels = x * size, x.shape[-1]
    a, b = weighted[:, ::2], weighted[:, 1::2]
    a_size, b_size = size[:, ::2], size[:, 1::2]
    b = b.scatter_add(1, partner.expand(-1, -1, channels), _rows(a, merged))
    b_size = b_size.scatter_add(1, partner, _rows(a_size, merged))
    tokens, sizes = torch.cat([_rows(a, kept), b], 1), torch.cat([_rows(a_size, kept), b_size], 1)
    return tokens / sizes, sizes


def block_names(layers: nn.Module) -> list[str]:
    """The names of a ViT encoder's blocks in order: torchvision's Sequential of them, or token merging's module."""
    return list(layers.block_names) if isinstance(layers, TokenMergingLayers) else [name for name, _ in layers.named_children()]


def block_steps(layers: nn.Module) -> list[tuple[str, Callable]]:
    """Each block of a ViT encoder's layers as (name, step), a step taking and giving (tokens, sizes), so a caller can
    run the encoder block by block (early exits between them) and merge tokens as `layers` does."""
    if isinstance(layers, TokenMergingLayers):
        return [(name, partial(layers.step, getattr(layers, name))) for name in layers.block_names]
    return [(name, lambda x, size, block=block: (block(x), size)) for name, block in layers.named_children()]


def _rows(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return tokens.gather(1, index.expand(-1, -1, tokens.shape[-1]))


@contextlib.contextmanager
def tokens_unmerged(model: nn.Module):
    """Every block runs on all its tokens inside the context: Torch-Pruning traces the channels a model's forward
    couples, and cannot follow the gathers and scatters that move tokens (which never couple channels)."""
    merging = [m for m in model.modules() if isinstance(m, TokenMergingLayers)]
    saved = [m.r for m in merging]
    for module in merging:
        module.r = 0
    try:
        yield
    finally:
        for module, r in zip(merging, saved):
            module.r = r


def merge_tokens_(model: nn.Module, r: int) -> nn.Module:
    """Merge r tokens per block in every VisionTransformer of the model (the higher r where it merges already)."""
    encoders = [vit.encoder for vit in vision_transformers(model)]
    if not encoders:
        raise Incompatible("token_merge merges the tokens of a Vision Transformer (torchvision's VisionTransformer), "
                           "and this model has none: it applies to transformers only")
    for encoder in encoders:
        if isinstance(encoder.layers, TokenMergingLayers):
            encoder.layers.r = max(encoder.layers.r, r)
        else:
            encoder.layers = TokenMergingLayers(encoder.layers, r, _attention_act_bits(encoder))
    return model


def _attention_act_bits(encoder: nn.Module) -> int:
    """The lowest activation bits of the encoder's attention (full when none is quantised): matching inherits them."""
    return min((bits_of(m)[1] for m in encoder.modules() if isinstance(m, nn.MultiheadAttention)), default=FULL_BITS)


def apply(model: nn.Module, config: TokenMergeConfig, context: Context) -> nn.Module:
    require_trainable(model, "token_merge")
    merge_tokens_(model, config.r)
    return train(model, context.data, context.budget, seed=context.seed, device=context.device,
                 progress=context.progress, label="fine-tune")


METHOD = Method("token_merge", "Token merging", TokenMergeConfig, apply, "r",
                "Merges r similar tokens in every transformer block (ToMe), then fine-tunes.")
