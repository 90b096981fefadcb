"""The coarse predictor interface of μMatting and a small convolutional predictor.

Any network that maps low-resolution frames to a coarse alpha and a feature map can be the
coarse stage: ``alpha, features = predictor(frames)`` with frames (N, 3, h, w) in 0..1, alpha
(N, 1, h, w) in 0..1 and features (N, feature_channels, h, w). The refiner only reads those two.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from mattekit.inference.models.blocks import ConvNormAct, resize_to


class CoarsePredictor(nn.Module):
    """Interface: frames (N, 3, h, w) -> (alpha (N, 1, h, w), features (N, C, h, w))."""

    feature_channels: int

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - interface
        raise NotImplementedError


class CoarseNet(CoarsePredictor):
    """A small encoder-decoder: two stride-2 stages, back to the input size, alpha head."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.feature_channels = width
        self.stem = ConvNormAct(3, width // 2)
        self.down1 = ConvNormAct(width // 2, width, stride=2)
        self.down2 = ConvNormAct(width, width, stride=2)
        self.fuse = ConvNormAct(2 * width, width)
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        skip = self.down1(self.stem(frames))
        low = self.down2(skip)
        features = self.fuse(torch.cat([resize_to(low, skip), skip], dim=1))
        features = resize_to(features, frames)
        return torch.sigmoid(self.head(features)), features
