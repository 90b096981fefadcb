"""μMatting: coarse alpha at low resolution, refinement only in the key region at full
resolution over short clips, fusion A = K·A_d + (1-K)·A_c.

    model = UMatting(UMattingConfig.tiny())
    out = model(src)                    # src (B, T, 3, H, W) clip, or (B, 3, H, W) one frame
    out.alpha, out.foreground           # (B, T, 1, H, W), (B, T, 3, H, W) (no T for a frame)
    out = model(next_frame, out.hidden) # the TSCM state carried to the next call

    src -> downsample to coarse_size -> coarse predictor: coarse alpha + features   (coarse.py)
        -> K: band low < alpha < high, dilated, upsampled, feathered; its sites     (keyregion.py)
        -> sparse refiner over the clip's sites: sparse 3D convs + TSCM gating       (refiner.py)
        -> A = K·A_d + (1-K)·A_c, F = K·F_d + (1-K)·src
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mattekit.inference.models.config import ModelConfig
from mattekit.inference.models.umatting.coarse import CoarseNet, CoarsePredictor
from mattekit.inference.models.umatting.keyregion import (
    active_sites,
    coarse_key,
    full_key,
    gather_sites,
    sample_at_sites,
    scatter_sites,
)
from mattekit.inference.models.umatting.refiner import SparseRefiner


@dataclasses.dataclass(frozen=True)
class UMattingConfig(ModelConfig):
    """Sizes and key-region settings of a μMatting."""

    coarse_size: int = 512       # long side the coarse predictor sees, in pixels
    coarse_width: int = 32       # coarse features
    low: float = 0.02            # K: coarse alpha strictly between low and high ...
    high: float = 0.98
    dilation: int = 2            # ... dilated by this many coarse pixels
    feather: int = 4             # full-resolution pixels over which K fades out
    width: int = 32              # refiner features
    layers: int = 3              # sparse 3D convolutions in the refiner body (+ input layer)
    hidden: int = 32             # TSCM's GRU

    @classmethod
    def tiny(cls) -> "UMattingConfig":
        return cls(coarse_size=32, coarse_width=8, width=8, layers=2, hidden=8, feather=2,
                   dilation=1)



class UMattingOutput(NamedTuple):
    alpha: Tensor        # fused, full resolution
    foreground: Tensor   # full resolution, 0..1
    coarse: Tensor       # the coarse alpha upsampled to full resolution (A_c)
    detail: Tensor       # A_d at the sites, 0 elsewhere
    key: Tensor          # K, feathered, full resolution
    hidden: Tensor       # TSCM state after the last frame


class UMatting(nn.Module):
    architecture = "umatting"
    config_class = UMattingConfig

    def __init__(self, config: Optional[UMattingConfig] = None,
                 coarse: Optional[CoarsePredictor] = None):
        super().__init__()
        self.config = config or UMattingConfig()
        self.coarse = coarse or CoarseNet(self.config.coarse_width)
        self.refiner = SparseRefiner(self.coarse.feature_channels, self.config.width,
                                     self.config.layers, self.config.hidden)

    def forward(self, src: Tensor, hidden: Optional[Tensor] = None) -> UMattingOutput:
        single = src.dim() == 4
        clip = src[:, None] if single else src
        batch, frames, _, height, width = clip.shape
        flat = clip.reshape(batch * frames, 3, height, width)
        scale = min(1.0, self.config.coarse_size / max(height, width))
        small = flat if scale == 1.0 else F.interpolate(
            flat, scale_factor=scale, mode="bilinear", align_corners=False, antialias=True)
        coarse_alpha, features = self.coarse(small)
        size = (height, width)
        coarse_up = F.interpolate(coarse_alpha, size=size, mode="bilinear", align_corners=False)
        key = full_key(coarse_key(coarse_alpha.detach(), self.config.low, self.config.high,
                                  self.config.dilation), size, self.config.feather)
        key = key.reshape(batch, frames, 1, height, width)
        sites = active_sites(key[:, :, 0])
        coarse_up = coarse_up.reshape(batch, frames, 1, height, width)
        if sites.size:
            # the refiner's inputs are read at the sites only: plate, A_c, coarse features
            inputs = torch.cat([gather_sites(clip, sites), gather_sites(coarse_up, sites),
                                sample_at_sites(features, sites, frames, size)], dim=1)
            detail_sites, fg_sites, hidden = self.refiner(inputs, sites, batch, frames, hidden)
            detail = scatter_sites(detail_sites, sites, tuple(coarse_up.shape))
            fg_detail = scatter_sites(fg_sites, sites, tuple(clip.shape))
        else:
            detail, fg_detail = torch.zeros_like(coarse_up), torch.zeros_like(clip)
            if hidden is None:
                hidden = clip.new_zeros(1, batch, self.config.hidden)
        alpha = key * detail + (1.0 - key) * coarse_up
        foreground = key * fg_detail + (1.0 - key) * clip
        outputs = [alpha, foreground, coarse_up, detail, key]
        if single:
            outputs = [x[:, 0] for x in outputs]
        return UMattingOutput(outputs[0], outputs[1], outputs[2], outputs[3], outputs[4],
                              hidden)
