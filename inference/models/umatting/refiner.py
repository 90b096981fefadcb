"""The sparse refiner: full-resolution detail alpha and foreground at the key region's sites.

Per site: the full-resolution RGB, the upsampled coarse alpha and the upsampled coarse features
-> sparse 3D convolutions over (T, H, W) with TSCM's temporal gating between them -> a residual
on the coarse alpha (A_d = clamp(A_c + delta)) and on the plate's colour (the foreground).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from mattekit.inference.models.umatting.keyregion import Sites
from mattekit.inference.models.umatting.sparse_conv import SparseConv3d
from mattekit.inference.models.umatting.tscm import TSCM


class SparseRefiner(nn.Module):
    """(N, 4 + C) site inputs -> detail alpha (N, 1), foreground (N, 3), next TSCM hidden."""

    def __init__(self, feature_channels: int, width: int = 32, layers: int = 3,
                 hidden: int = 32):
        super().__init__()
        self.inp = SparseConv3d(4 + feature_channels, width)
        self.tscm = TSCM(width, hidden)
        self.body = nn.ModuleList(SparseConv3d(width, width) for _ in range(layers - 1))
        self.out = SparseConv3d(width, 4, kernel_size=1)

    def forward(self, inputs: Tensor, sites: Sites, batch: int, frames: int,
                hidden: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
        x = torch.relu(self.inp(inputs, sites))
        x, hidden = self.tscm(x, sites, batch, frames, hidden)
        for conv in self.body:
            x = x + torch.relu(conv(x, sites))
        delta = self.out(x, sites)
        rgb, coarse_alpha = inputs[:, :3], inputs[:, 3:4]
        alpha = (coarse_alpha + delta[:, :1]).clamp(0.0, 1.0)
        foreground = (rgb + delta[:, 1:]).clamp(0.0, 1.0)
        return alpha, foreground, hidden
