"""Cross-attention between the two branches of ParallaxNet's decoder, symmetric.

Each layer lets the tokens of one view attend to themselves and then to the other view's tokens
(where the same subject sits over another background), then through an MLP; the same weights
serve both directions, so swapping the views swaps the outputs.

a, b: (B, N, C) token sequences of the two views -> (a', b'), each (B, N, C).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from mattekit.inference.models.cinematte.fbam import FBAMLayer


class BranchCrossAttention(nn.Module):
    """`layers` self + cross-attention layers applied to both views with shared weights."""

    def __init__(self, dim: int, heads: int, layers: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.layers = nn.ModuleList(FBAMLayer(dim, heads, mlp_ratio) for _ in range(layers))

    def forward(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        batch = int(a.shape[0])
        for layer in self.layers:
            # both directions in one batched call: (a attends b, b attends a)
            both = layer(torch.cat([a, b], dim=0), torch.cat([b, a], dim=0))
            a, b = both[:batch], both[batch:]
        return a, b
