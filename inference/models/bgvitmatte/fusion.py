"""ViTMatte's fusion step: upsample x2, concatenate the detail map of that scale, conv + GN + ReLU.

x (B, C, h, w), detail (B, D, ~2h, ~2w) -> (B, out, detail's h, detail's w)
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from mattekit.inference.models.blocks import ConvNormAct, resize_to


class FusionUp(nn.Module):
    """Resize to the detail map, concatenate it, conv + GN + ReLU (as above)."""

    def __init__(self, in_channels: int, detail_channels: int, out_channels: int):
        super().__init__()
        self.conv = ConvNormAct(in_channels + detail_channels, out_channels)

    def forward(self, x: Tensor, detail: Tensor) -> Tensor:
        return self.conv(torch.cat([resize_to(x, detail), detail], dim=1))
