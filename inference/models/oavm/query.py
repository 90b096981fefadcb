"""OAVM's object query generation: learned queries gather the target from pixels by masked
attention.

A fixed set of learned query vectors; each layer lets them attend ONLY to the pixels inside the
object's mask (masked cross-attention: the rest of the frame, a second person included, cannot
leak into them), then to each other (self-attention), then through an MLP; pre-norm, residual.
The result is an object-level description of the target, independent of where it is.

The model runs it on the first frame with the user's coarse mask (the initial queries of the
memory) and, while training, on the current frame with the ground-truth alpha (what the queries
of that frame should be: see ``OAVM.forward``'s ``target``).

features (B, C, h, w), mask (B, 1, h, w) (> 0.5 = object)  ->  queries (B, N, C)
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from mattekit.inference.models.blocks import Attention, Mlp
from mattekit.inference.models.oavm.attention import MaskedAttention


class QueryLayer(nn.Module):
    """Masked cross-attention to the pixel tokens, self-attention, MLP (pre-norm, residual)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm_query = nn.LayerNorm(dim)
        self.norm_pixels = nn.LayerNorm(dim)
        self.cross_attn = MaskedAttention(dim, heads)
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, queries: Tensor, pixels: Tensor, mask: Tensor) -> Tensor:
        """queries (B, N, C), pixels (B, M, C), mask (B, M) -> (B, N, C)."""
        queries = queries + self.cross_attn(self.norm_query(queries), self.norm_pixels(pixels),
                                            mask)
        queries = queries + self.self_attn(self.norm_self(queries))
        return queries + self.mlp(self.norm_mlp(queries))


class ObjectQueryGenerator(nn.Module):
    """`count` learned queries refined by `layers` QueryLayers over the masked pixels."""

    def __init__(self, dim: int, count: int, heads: int, layers: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.queries = nn.Parameter(torch.zeros(1, count, dim))
        nn.init.trunc_normal_(self.queries, std=0.02)
        self.layers = nn.ModuleList(QueryLayer(dim, heads, mlp_ratio) for _ in range(layers))

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        batch = int(features.shape[0])
        pixels = features.flatten(2).transpose(1, 2)
        visible = mask.flatten(1)
        queries = self.queries.expand(batch, -1, -1)
        for layer in self.layers:
            queries = layer(queries, pixels, visible)
        return queries
