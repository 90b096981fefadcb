"""CineMatte's matting head: from the decoder's 1/4 features back to full resolution.

Two upsampling steps (to 1/2, then full size; exact x2 steps for the usual patch 16), each fused
with shallow features of the frame and the plate at that resolution (the fine detail a ViT never
sees), then alpha (sigmoid) and a foreground residual added to the frame.

features (B, F, h', w') (1/4 for patch 16), src (B, 3, H, W), bgr (B, 3, H, W)
    -> fgr (B, 3, H, W) in 0..1, pha (B, 1, H, W) in 0..1
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from mattekit.inference.models.blocks import ConvNormAct, resize_to


class MattingHead(nn.Module):
    """Decoder features + full-resolution frame/plate detail -> (fgr, pha), as above."""

    def __init__(self, in_channels: int, detail_channels: int = 16):
        super().__init__()
        half = max(detail_channels, in_channels // 2)
        self.detail2 = ConvNormAct(6, detail_channels, stride=2)
        self.detail1 = ConvNormAct(6, detail_channels)
        self.fuse2 = ConvNormAct(in_channels + detail_channels, half)
        self.fuse1 = ConvNormAct(half + detail_channels, detail_channels)
        self.out = nn.Conv2d(detail_channels, 4, 3, padding=1)

    def forward(self, features: Tensor, src: Tensor, bgr: Tensor) -> tuple[Tensor, Tensor]:
        pair = torch.cat([src, bgr], dim=1)
        detail2, detail1 = self.detail2(pair), self.detail1(pair)
        x = self.fuse2(torch.cat([resize_to(features, detail2), detail2], dim=1))
        x = self.fuse1(torch.cat([resize_to(x, detail1), detail1], dim=1))
        out = self.out(x)
        pha = torch.sigmoid(out[:, :1])
        fgr = (src + out[:, 1:]).clamp(0.0, 1.0)
        return fgr, pha
