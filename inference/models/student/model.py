"""A light student for per-shot distillation (capture-stage matting's real-time student).

The teacher (a base engine such as BackgroundMatte's ``cleanplate``, plus the shot's scribble
correction) labels every frame of the shot; this network learns those labels and then replaces
the teacher on the shot. It is sized for speed: everything wide runs at 1/2 resolution or
below, the convolutions past the stem are depthwise-separable, and the full-resolution work is
one thin 3x3 layer over 4 upsampled features and the inputs. No normalisation layer: a crop
and a full frame see the same arithmetic (batch or group statistics would differ between a
256 px training crop and a 1080p frame).

    src, ref (B, 3, H, W) in 0..1 (ref: clean plate / second view, zeros when there is none)
      + |src - ref| (B, 1, H, W), the plate's change from its reference (correction.plate_change)
      -> pad to a multiple of 16 (replicate)
      -> stem 3x3 stride 2                              w    @ 1/2
      -> separable stride 2                             2w   @ 1/4
      -> separable stride 2, separable                  4w   @ 1/8
      -> separable stride 2, separable                  4w   @ 1/16
      -> dilated separable, dilation 2, 4, 8 (residual) 4w   @ 1/16  (context)
      -> up x2 + skip 1/8, 1x1 + depthwise 3x3          4w   @ 1/8
      -> up x2 + skip 1/4, 1x1 + depthwise 3x3          2w   @ 1/4
      -> up x2 + skip 1/2, 1x1 + depthwise 3x3, 1x1     w, 4 @ 1/2
      -> up x2 + the 7 input channels, 3x3 conv         1    @ full
    -> pha = clamp(raw, 0, 1) (B, 1, H, W)  (gradient straight through the clamp), unpadded
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from torch import Tensor, nn

from mattekit.inference.models.blocks import pad_to_multiple, resize_to
from mattekit.inference.models.config import ModelConfig
from mattekit.inference.models.correction.model import plate_change, straight_through_clamp

INPUTS = 7  # src, ref, |src - ref|
FULL = 4    # feature channels carried up to full resolution (the costly resolution)


@dataclasses.dataclass(frozen=True)
class StudentConfig(ModelConfig):
    width: int = 16  # channels at 1/2 resolution; x2 at 1/4, x4 at 1/8 and 1/16

    @classmethod
    def tiny(cls) -> "StudentConfig":
        return cls(width=4)


class Separable(nn.Sequential):
    """Depthwise 3x3 (optionally strided or dilated) + pointwise 1x1, each with bias + ReLU:
    (B, in, H, W) -> (B, out, H / stride, W / stride)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 dilation: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, stride, dilation, dilation=dilation,
                      groups=in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1),
            nn.ReLU(inplace=True),
        )


class Fuse(nn.Sequential):
    """A decoder step: pointwise 1x1 (in -> out) then depthwise 3x3, each with bias + ReLU:
    (B, in, H, W) -> (B, out, H, W). Pointwise first, so the depthwise pass runs on the
    narrower side of a concatenated skip."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, groups=out_channels),
            nn.ReLU(inplace=True),
        )


class Student(nn.Module):
    """The network above: ``pha = Student(config)(src, ref)``."""

    architecture = "student"
    config_class = StudentConfig
    onnx_input_names = ("src", "ref")
    onnx_output_names = ("pha",)

    def __init__(self, config: Optional[StudentConfig] = None):
        super().__init__()
        self.config = config = config or StudentConfig()
        w = config.width
        self.stem = nn.Sequential(nn.Conv2d(INPUTS, w, 3, 2, 1), nn.ReLU(inplace=True))
        self.at_quarter = Separable(w, 2 * w, stride=2)
        self.at_eighth = nn.Sequential(Separable(2 * w, 4 * w, stride=2), Separable(4 * w, 4 * w))
        self.at_sixteenth = nn.Sequential(Separable(4 * w, 4 * w, stride=2),
                                          Separable(4 * w, 4 * w))
        self.context = nn.ModuleList(Separable(4 * w, 4 * w, dilation=d) for d in (2, 4, 8))
        self.up_eighth = Fuse(8 * w, 4 * w)
        self.up_quarter = Fuse(6 * w, 2 * w)
        self.up_half = Fuse(3 * w, w)
        self.to_full = nn.Sequential(nn.Conv2d(w, FULL, 1), nn.ReLU(inplace=True))
        self.head = nn.Conv2d(FULL + INPUTS, 1, 3, padding=1)

    def forward(self, src: Tensor, ref: Tensor) -> Tensor:
        height, width = int(src.shape[-2]), int(src.shape[-1])
        x = pad_to_multiple(torch.cat([src, ref, plate_change(src, ref)], dim=1), 16)
        half = self.stem(x)
        quarter = self.at_quarter(half)
        eighth = self.at_eighth(quarter)
        bottom = self.at_sixteenth(eighth)
        for layer in self.context:
            bottom = bottom + layer(bottom)
        eighth = self.up_eighth(torch.cat([eighth, resize_to(bottom, eighth)], dim=1))
        quarter = self.up_quarter(torch.cat([quarter, resize_to(eighth, quarter)], dim=1))
        half = self.up_half(torch.cat([half, resize_to(quarter, half)], dim=1))
        raw = self.head(torch.cat([resize_to(self.to_full(half), x), x], dim=1))
        return straight_through_clamp(raw)[..., :height, :width]

    def example_inputs(self, height: int, width: int) -> tuple[Tensor, ...]:
        """(src, ref) of one frame, for tracing/export."""
        return torch.rand(1, 3, height, width), torch.rand(1, 3, height, width)


__all__ = ["Student", "StudentConfig"]
