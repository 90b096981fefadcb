"""OAVM's encoder: a MobileNetV3-style stack of inverted residuals (Howard et al. 2019).

    stem   3x3 conv, stride 2, hardswish                                 1/2
    stage1 inverted residuals, 3x3, ReLU                                 1/2   -> f1
    stage2 inverted residuals, 3x3, ReLU, first with stride 2            1/4   -> f2
    stage3 inverted residuals, 5x5, squeeze-excite, ReLU, stride 2       1/8   -> f3
    stage4 inverted residuals, 3x3, squeeze-excite, hardswish, stride 2  1/16  -> f4

An inverted residual: 1x1 expansion, k x k depthwise conv, optional squeeze-excite (hardsigmoid
gate), 1x1 linear projection, BatchNorm after each conv, a residual where the shape allows. The
layout follows MobileNetV3-Large (what RVM's encoder is) with fewer, configurable blocks.

src (B, 3, H, W) in 0..1 (H, W multiples of 16)  ->  [f1, f2, f3, f4] at 1/2, 1/4, 1/8, 1/16
"""
from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from mattekit.inference.models.blocks import normalize_rgb

# per stage: depthwise kernel, squeeze-excite, activation (MobileNetV3-Large's choices)
STAGES = ((3, False, "relu"), (3, False, "relu"), (5, True, "relu"), (3, True, "hardswish"))


def activation(name: str) -> nn.Module:
    return nn.Hardswish() if name == "hardswish" else nn.ReLU()


def divisible(value: float, divisor: int = 8) -> int:
    """`value` rounded to a multiple of `divisor`, never below it (MobileNet's channel rule)."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class SqueezeExcite(nn.Module):
    """Channel gate: global average -> 1x1 -> ReLU -> 1x1 -> hardsigmoid, times the input."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = divisible(channels / reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(scale))))


class InvertedResidual(nn.Module):
    """1x1 expand -> k x k depthwise (stride) -> [SE] -> 1x1 project; residual when it fits."""

    def __init__(self, in_channels: int, expanded: int, out_channels: int, kernel: int,
                 stride: int, squeeze_excite: bool, act: str):
        super().__init__()
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers += [nn.Conv2d(in_channels, expanded, 1, bias=False),
                       nn.BatchNorm2d(expanded), activation(act)]
        layers += [nn.Conv2d(expanded, expanded, kernel, stride, kernel // 2, groups=expanded,
                             bias=False),
                   nn.BatchNorm2d(expanded), activation(act)]
        if squeeze_excite:
            layers.append(SqueezeExcite(expanded))
        layers += [nn.Conv2d(expanded, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class MobileNetV3Encoder(nn.Module):
    """The four stages above; `widths` and `depths` per stage, `expand_ratio` for every block."""

    def __init__(self, widths: Sequence[int], depths: Sequence[int], expand_ratio: float):
        super().__init__()
        if len(widths) != 4 or len(depths) != 4 or min(depths) < 1:
            raise ValueError(f"the encoder has 4 stages: widths {tuple(widths)} and depths "
                             f"{tuple(depths)} need 4 entries each, depths >= 1")
        self.widths = tuple(int(w) for w in widths)
        self.stem = nn.Sequential(nn.Conv2d(3, self.widths[0], 3, 2, 1, bias=False),
                                  nn.BatchNorm2d(self.widths[0]), nn.Hardswish())
        stages = []
        channels = self.widths[0]
        for index, ((kernel, se, act), width, depth) in enumerate(zip(STAGES, self.widths, depths)):
            blocks = []
            for block in range(int(depth)):
                stride = 2 if index > 0 and block == 0 else 1
                expanded = divisible(channels * expand_ratio) if index > 0 else channels
                blocks.append(InvertedResidual(channels, expanded, width, kernel, stride, se, act))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)

    def forward(self, src: Tensor) -> list[Tensor]:
        x = self.stem(normalize_rgb(src))
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features
