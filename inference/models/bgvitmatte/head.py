"""The matting head of the background-conditioned ViTMatte: alpha and a foreground residual.

x (B, C, H, W), src (B, 3, H, W) -> fgr (B, 3, H, W) in 0..1, pha (B, 1, H, W) in 0..1
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MatteHead(nn.Module):
    """3x3 conv + ReLU + 1x1 conv to 4 channels: sigmoid alpha, foreground residual on src."""

    def __init__(self, in_channels: int, hidden: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.out = nn.Conv2d(hidden, 4, 1)

    def forward(self, x: Tensor, src: Tensor) -> tuple[Tensor, Tensor]:
        out = self.out(F.relu(self.conv(x)))
        return (src + out[:, 1:]).clamp(0.0, 1.0), torch.sigmoid(out[:, :1])
