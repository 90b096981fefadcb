"""ViTMatte's fusion step: upsample x2, concatenate the detail map of that scale, conv + GN + ReLU.

x (B, C, h, w), detail (B, D, ~2h, ~2w) -> (B, out, detail's h, detail's w)
"""
from __future__ import annotations

from typing import Sequence

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


def fusion_steps(patch: int, fusion_dims: Sequence[int], detail_dims: Sequence[int]) -> int:
    """How many x2 fusion steps lead from the ViT's 1/patch tokens back to full size (log2 of
    the patch, which must be a power of two), checked against the configured widths: one
    fusion width per step, one detail map fewer (the last step fuses the raw input)."""
    steps = patch.bit_length() - 1
    if patch < 2 or patch != 1 << steps:
        raise ValueError(f"patch must be a power of two, got {patch}")
    if len(fusion_dims) != steps or len(detail_dims) != steps - 1:
        raise ValueError(f"patch {patch} needs {steps} fusion_dims and {steps - 1} "
                         f"detail_dims, got {len(fusion_dims)} and {len(detail_dims)}")
    return steps
