"""Vision Transformers a user writes in their own repository: `OwnViT` as timm writes them, `KeptWidthsViT` with
timm's own attention, `CachedBiasViT` with LeViT's, `EncoderViT` on PyTorch's nn.TransformerEncoder; not torchvision's class.

OwnViT's attention packs queries, keys and values in one Linear layer `qkv` and reshapes its output to
(3, heads, width / heads) with the number of heads it keeps in an attribute; pre-norm blocks, a class
token and position embeddings as parameters of the model, a LayerNorm and a Linear classifier `head`
on the class token. Tests load it as `tests/user_models/own_vit.py:OwnViT`, at 8 px (digits) or larger.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v)
        return self.proj(attended.transpose(1, 2).reshape(batch, tokens, dim))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int, attention: type = Attention):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class OwnViT(nn.Module):
    attention = Attention  # the attention class of its blocks

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image: int = 8, patch: int = 2, dim: int = 16,
                 depth: int = 2, heads: int = 2, mlp: int = 32):
        super().__init__()
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp, self.attention) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


class KeptWidthsAttention(Attention):
    """timm's attention: its forward reshapes to the head width and inner width it keeps in attributes, not to the
    width of its input, so it still runs when that width narrows."""

    def __init__(self, dim: int, heads: int):
        super().__init__(dim, heads)
        self.head_dim, self.attn_dim = dim // heads, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v)
        return self.proj(attended.transpose(1, 2).reshape(batch, tokens, self.attn_dim))


class KeptWidthsViT(OwnViT):
    """OwnViT with timm's attention."""

    attention = KeptWidthsAttention


class CachedBiasAttention(Attention):
    """timm's LeViT and EfficientFormer attention: a bias per head, read afresh in training and cached in evaluation by
    a method the forward calls (so the forward runs other operations in each mode, and evaluation keeps a tensor it
    computed)."""

    def __init__(self, dim: int, heads: int):
        super().__init__(dim, heads)
        self.bias = nn.Parameter(torch.zeros(heads, 1, 1))
        self.cache: dict[str, torch.Tensor] = {}

    def train(self, mode: bool = True):
        self.cache = {}
        return super().train(mode)

    def biases(self) -> torch.Tensor:
        if self.training:
            return self.bias * 1.0
        if "bias" not in self.cache:
            self.cache["bias"] = self.bias + 0.0
        return self.cache["bias"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=self.biases())
        return self.proj(attended.transpose(1, 2).reshape(batch, tokens, dim))


class CachedBiasViT(OwnViT):
    """OwnViT with LeViT's attention."""

    attention = CachedBiasAttention


class EncoderViT(OwnViT):
    """The same ViT with its blocks built by PyTorch's own nn.TransformerEncoder (batch first, pre-norm, GELU), as many
    users write it: in eval mode without gradients its layers take a fused path that reads their weights without
    calling them."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image: int = 8, patch: int = 2, dim: int = 16,
                 depth: int = 2, heads: int = 2, mlp: int = 32):
        super().__init__(num_classes, in_channels, image, patch, dim, depth, heads, mlp)
        layer = nn.TransformerEncoderLayer(dim, heads, mlp, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
