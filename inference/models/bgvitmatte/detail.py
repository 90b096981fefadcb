"""ViTMatte's detail capture stream: a few strided convs over the raw input (frame, clean plate,
optional guidance), giving the fine features a ViT's 16-pixel patches lose.

x (B, C, H, W) -> [(B, dims[0], H/2, W/2), (B, dims[1], H/4, W/4), ...], one map per dim.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from mattekit.inference.models.blocks import ConvNormAct


class DetailCapture(nn.Module):
    """Stride-2 conv + GN + ReLU stages, one per entry of `dims`, each map kept."""

    def __init__(self, in_channels: int, dims: Sequence[int]):
        super().__init__()
        widths = [in_channels, *dims]
        self.stages = nn.ModuleList(ConvNormAct(widths[i], widths[i + 1], stride=2)
                                    for i in range(len(dims)))

    def forward(self, x: Tensor) -> list[Tensor]:
        maps: list[Tensor] = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps
