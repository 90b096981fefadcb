"""A small alpha-correction network for per-shot scribble fine-tuning (capture-stage matting).

It refines an alpha some engine already made: it sees the plate, the reference the node has
(clean plate or second frame; zeros when there is none) and that alpha, and outputs a
correction added to the alpha. (A correction of the logit would starve: where the engine is
sure and wrong, alpha = 1, the sigmoid's slope is nil and no loss can move it.)
The last layer starts at zero, so an untrained network hands the alpha back unchanged:
fine-tuning on a shot's scribbles teaches it only what to change.

    src, ref (B, 3, H, W) in 0..1, alpha (B, 1, H, W) in 0..1        (any H, W: padded inside)
      + |src - ref| (B, 1, H, W), the plate's change from its reference
      -> U-Net: full, 1/2, 1/4 resolution, dilated context at 1/4, skips back up
         (conv + leaky ReLU, no norm: it trains on crops and runs on whole frames)
      -> delta (B, 1, H, W)
    -> pha = clamp(alpha + delta, 0, 1)   (B, 1, H, W)   (gradient straight through the clamp)
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from torch import Tensor, nn

from mattekit.inference.models.blocks import ConvAct, pad_to_multiple, resize_to
from mattekit.inference.models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class AlphaCorrectionConfig(ModelConfig):
    width: int = 24  # channels at full resolution; x2 at 1/2, x4 at 1/4

    @classmethod
    def tiny(cls) -> "AlphaCorrectionConfig":
        return cls(width=8)


def plate_change(src: Tensor, ref: Tensor) -> Tensor:
    """Mean absolute difference of plate and reference, (B, 1, H, W); zeros where the reference
    is absent (all zeros). The clean plate's strongest cue, handed over rather than left for a
    few hundred fine-tuning steps to rediscover."""
    present = (ref.abs().amax(dim=(1, 2, 3), keepdim=True) > 0).to(src.dtype)
    return (src - ref).abs().mean(dim=1, keepdim=True) * present


def straight_through_clamp(raw: Tensor) -> Tensor:
    """raw clamped to 0..1 whose gradient passes as if unclamped. A plain clamp has no gradient
    once a pixel is pushed past 1 (or below 0), and a pixel the engine is sure of (alpha = 1)
    sits right there: a scribble saying "background" could then never pull it down."""
    return raw + (raw.clamp(0.0, 1.0) - raw).detach()


class AlphaCorrection(nn.Module):
    """The network above: ``pha = AlphaCorrection(config)(src, ref, alpha)``."""

    architecture = "alphacorrection"
    config_class = AlphaCorrectionConfig
    onnx_input_names = ("src", "ref", "alpha")
    onnx_output_names = ("pha",)

    def __init__(self, config: Optional[AlphaCorrectionConfig] = None):
        super().__init__()
        self.config = config = config or AlphaCorrectionConfig()
        w = config.width
        self.at_full = nn.Sequential(ConvAct(8, w), ConvAct(w, w))
        self.at_half = nn.Sequential(ConvAct(w, 2 * w, stride=2), ConvAct(2 * w, 2 * w))
        self.at_quarter = nn.Sequential(ConvAct(2 * w, 4 * w, stride=2),
                                        ConvAct(4 * w, 4 * w, dilation=2),
                                        ConvAct(4 * w, 4 * w, dilation=4))
        self.up_half = ConvAct(6 * w, 2 * w)
        self.up_full = ConvAct(3 * w, w)
        self.delta = nn.Conv2d(w, 1, 3, padding=1)
        nn.init.zeros_(self.delta.weight)
        if self.delta.bias is not None:
            nn.init.zeros_(self.delta.bias)

    def forward(self, src: Tensor, ref: Tensor, alpha: Tensor) -> Tensor:
        height, width = int(src.shape[-2]), int(src.shape[-1])
        x = pad_to_multiple(torch.cat([src, ref, alpha, plate_change(src, ref)], dim=1), 4)
        full = self.at_full(x)
        half = self.at_half(full)
        quarter = self.at_quarter(half)
        half = self.up_half(torch.cat([half, resize_to(quarter, half)], dim=1))
        full = self.up_full(torch.cat([full, resize_to(half, full)], dim=1))
        return straight_through_clamp(x[:, 6:7] + self.delta(full))[..., :height, :width]

    def example_inputs(self, height: int, width: int) -> tuple[Tensor, ...]:
        """(src, ref, alpha) of one frame, for tracing/export."""
        return (torch.rand(1, 3, height, width), torch.rand(1, 3, height, width),
                torch.rand(1, 1, height, width))


__all__ = ["AlphaCorrection", "AlphaCorrectionConfig"]
