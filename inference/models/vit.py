"""A plain Vision Transformer encoder (ViT-S/B style), the backbone of both architectures.

image (B, C, H, W), H and W multiples of `patch`  ->  list of token maps (B, D, H/patch, W/patch),
one per requested block (`out_indices`, 0-based), in that order.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mattekit.inference.models.blocks import Attention, Mlp


class ViTBlock(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x)); (B, N, D) -> same."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTEncoder(nn.Module):
    """Patch embedding + learned position embedding (resampled to any grid) + `depth` blocks."""

    def __init__(self, in_channels: int = 3, patch: int = 16, dim: int = 384, depth: int = 12,
                 heads: int = 6, mlp_ratio: float = 4.0, pos_grid: int = 32,
                 out_indices: Sequence[int] = (-1,)):
        super().__init__()
        self.patch = patch
        self.dim = dim
        self.out_indices = tuple(i % depth for i in out_indices)
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, pos_grid, pos_grid))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(ViTBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, image: Tensor) -> list[Tensor]:
        x = self.patch_embed(image)  # (B, D, h, w)
        height, width = int(x.shape[-2]), int(x.shape[-1])
        pos: Tensor = self.pos_embed
        if (height, width) != tuple(pos.shape[-2:]):
            pos = F.interpolate(pos, size=(height, width), mode="bilinear", align_corners=False)
        tokens = (x + pos).flatten(2).transpose(1, 2)  # (B, h*w, D)
        produced: dict[int, Tensor] = {}
        last = len(self.blocks) - 1
        for index, block in enumerate(self.blocks):
            tokens = block(tokens)
            if index in self.out_indices:
                out = self.norm(tokens) if index == last else tokens
                produced[index] = out.transpose(1, 2).reshape(-1, self.dim, height, width)
        return [produced[index] for index in self.out_indices]
