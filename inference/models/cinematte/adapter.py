"""CineMatte's adapter: a 1x1 conv + GroupNorm + ReLU on a frozen backbone's token map.

(B, D, h, w) ViT tokens -> (B, C, h, w): the trainable bridge from the frozen encoder's feature
space to the width the FBAM layers and the decoder work at.
"""
from __future__ import annotations

from torch import Tensor, nn

from mattekit.inference.models.blocks import group_count


class Adapter(nn.Module):
    """1x1 conv + GroupNorm + ReLU: (B, in_channels, h, w) -> (B, out_channels, h, w)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.norm = nn.GroupNorm(group_count(out_channels), out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))
