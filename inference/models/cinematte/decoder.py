"""CineMatte's DPT-style decoder (Ranftl et al. 2021): three fusion stages, coarse to fine.

    stage 1 (1/p):    FBAM tokens                                        -> x2 -> 1/(p/2)
    stage 2 (1/(p/2)): + backbone skip, reassembled from a middle ViT block
                        (1x1 conv then a stride-2 transposed conv, as DPT) -> x2 -> 1/(p/4)
    stage 3 (1/(p/4)): + the image-guided upsampler's features             -> out

With the usual patch p = 16 these are 1/16, 1/8 (the backbone skip) and 1/4.

tokens (B, C, h, w), skip (B, C, h, w), guided (B, C, 4h, 4w)  ->  (B, decoder_dim, 4h, 4w)
"""
from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from mattekit.inference.models.blocks import upsample2


class ResidualConvUnit(nn.Module):
    """x + conv(relu(conv(relu(x)))), as DPT: (B, C, H, W) -> same."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionStage(nn.Module):
    """DPT fusion block: x (+ RCU(skip), when built `with_skip`) -> RCU -> (x2) -> 1x1 conv."""

    def __init__(self, channels: int, upsample: bool, with_skip: bool = True):
        super().__init__()
        self.skip_unit = ResidualConvUnit(channels) if with_skip else None
        self.unit = ResidualConvUnit(channels)
        self.upsample = upsample
        self.project = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor, skip: Optional[Tensor] = None) -> Tensor:
        if self.skip_unit is not None:
            if skip is None:
                raise ValueError("this fusion stage fuses a skip input: pass one")
            x = x + self.skip_unit(skip)
        x = self.unit(x)
        if self.upsample:
            x = upsample2(x)
        return self.project(x)


class DPTDecoder(nn.Module):
    """The three fusion stages above: FBAM tokens at 1/16, the backbone skip at 1/8 and the
    guided upsampler's features at 1/4, each projected to `decoder_dim` first."""

    def __init__(self, in_channels: int, decoder_dim: int):
        super().__init__()
        self.project_tokens = nn.Conv2d(in_channels, decoder_dim, 3, padding=1, bias=False)
        self.reassemble_skip = nn.Sequential(
            nn.Conv2d(in_channels, decoder_dim, 1),
            nn.ConvTranspose2d(decoder_dim, decoder_dim, 2, stride=2),
        )
        self.project_guided = nn.Conv2d(in_channels, decoder_dim, 3, padding=1, bias=False)
        self.stage1 = FusionStage(decoder_dim, upsample=True, with_skip=False)
        self.stage2 = FusionStage(decoder_dim, upsample=True)
        self.stage3 = FusionStage(decoder_dim, upsample=False)

    def forward(self, tokens: Tensor, skip: Tensor, guided: Tensor) -> Tensor:
        x = self.stage1(self.project_tokens(tokens))
        x = self.stage2(x, self.reassemble_skip(skip))
        return self.stage3(x, self.project_guided(guided))
