"""OAVM's matting decoder: from the corrected 1/16 features back to full resolution.

RVM-style: four x2 steps, each fusing the encoder's features of that scale (f3 at 1/8, f2 at
1/4, f1 at 1/2, the frame itself at full size), then alpha (sigmoid) and a foreground residual
added to the frame.

features (B, C, H/16, W/16), f3, f2, f1, src (B, 3, H, W)
    -> fgr (B, 3, H, W) in 0..1, pha (B, 1, H, W) in 0..1
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from mattekit.inference.models.blocks import ConvNormAct, resize_to


class UpBlock(nn.Module):
    """x2 bilinear, concatenate the skip of that scale, two conv + GroupNorm + ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Sequential(ConvNormAct(in_channels + skip_channels, out_channels),
                                  ConvNormAct(out_channels, out_channels))

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv(torch.cat([resize_to(x, skip), skip], dim=1))


class MattingDecoder(nn.Module):
    """1/16 -> 1/8 (+f3) -> 1/4 (+f2) -> 1/2 (+f1) -> 1 (+src) -> (fgr, pha)."""

    def __init__(self, in_channels: int, skip_channels: Sequence[int],
                 channels: Sequence[int]):
        super().__init__()
        if len(skip_channels) != 3 or len(channels) != 4:
            raise ValueError(f"the decoder takes 3 skips (f3, f2, f1) and 4 widths, got "
                             f"{tuple(skip_channels)} and {tuple(channels)}")
        f3, f2, f1 = (int(c) for c in skip_channels)
        c8, c4, c2, c1 = (int(c) for c in channels)
        self.up8 = UpBlock(in_channels, f3, c8)
        self.up4 = UpBlock(c8, f2, c4)
        self.up2 = UpBlock(c4, f1, c2)
        self.up1 = UpBlock(c2, 3, c1)
        self.out = nn.Conv2d(c1, 4, 3, padding=1)

    def forward(self, features: Tensor, f3: Tensor, f2: Tensor, f1: Tensor, src: Tensor
                ) -> tuple[Tensor, Tensor]:
        x = self.up8(features, f3)
        x = self.up4(x, f2)
        x = self.up2(x, f1)
        x = self.up1(x, src)
        out = self.out(x)
        pha = torch.sigmoid(out[:, :1])
        fgr = (src + out[:, 1:]).clamp(0.0, 1.0)
        return fgr, pha
