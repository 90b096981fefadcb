"""Background-conditioned ViTMatte, the teacher of the capture-stage matting paper.

ViTMatte (Yao et al. 2024) with the clean plate as extra input channels instead of (or beside) a
trimap: the whole plain ViT sees frame and plate together from the first patch on, and is trained
(not frozen). A guidance channel (trimap, scribbles, a rough mask; 0.5 = unknown) is optional.

    src, bgr (B, 3, H, W) in 0..1 [, guidance (B, 1, H, W) in 0..1]   (any H, W: padded inside)
      -> ViT over concat(src, bgr[, guidance]) (ImageNet-normalised RGB)        at 1/p
      -> detail capture convs over the same raw input                      at 1/2 .. 1/(p/2)
      -> log2(p) fusion steps, x2 each, with the detail map of that scale (the last one with the
         raw input itself)                                                        at 1/1
      -> head
    -> fgr (B, 3, H, W), pha (B, 1, H, W), both in 0..1
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from torch import Tensor, nn

from mattekit.inference.models.bgvitmatte.detail import DetailCapture
from mattekit.inference.models.bgvitmatte.fusion import FusionUp, fusion_steps
from mattekit.inference.models.bgvitmatte.head import MatteHead
from mattekit.inference.models.blocks import normalize_rgb, pad_to_multiple
from mattekit.inference.models.config import ModelConfig
from mattekit.inference.models.vit import ViTEncoder


@dataclasses.dataclass(frozen=True)
class BgViTMatteConfig(ModelConfig):
    """Sizes of a BgViTMatte; the defaults are ViTMatte-S (ViT-S/16, its detail/fusion widths)."""

    patch: int = 16
    embed_dim: int = 384          # ViTMatte-S
    depth: int = 12
    heads: int = 6
    mlp_ratio: float = 4.0
    pos_grid: int = 32
    guidance: bool = False        # a 7th input channel: trimap / scribbles / rough mask
    detail_dims: tuple[int, ...] = (48, 96, 192)        # 1/2, 1/4, 1/8 (log2(patch) - 1 maps)
    fusion_dims: tuple[int, ...] = (256, 128, 64, 32)   # 1/8, 1/4, 1/2, 1/1 (log2(patch) steps)
    head_dim: int = 16

    @classmethod
    def tiny(cls) -> "BgViTMatteConfig":
        """A ~0.25M-parameter network for tests and smoke runs (not for real mattes)."""
        return cls(embed_dim=64, depth=2, heads=2, pos_grid=8, detail_dims=(8, 16, 16),
                   fusion_dims=(32, 16, 16, 8), head_dim=8)


class BgViTMatte(nn.Module):
    """The network above: ``fgr, pha = BgViTMatte(config)(src, bgr[, guidance])``."""

    architecture = "bgvitmatte"
    config_class = BgViTMatteConfig
    onnx_output_names = ("fgr", "pha")

    def __init__(self, config: Optional[BgViTMatteConfig] = None):
        super().__init__()
        self.config = config = config or BgViTMatteConfig()
        steps = fusion_steps(config.patch, config.fusion_dims, config.detail_dims)
        channels = 7 if config.guidance else 6
        self.onnx_input_names: tuple[str, ...] = (
            ("src", "bgr", "guidance") if config.guidance else ("src", "bgr"))
        self.encoder = ViTEncoder(channels, config.patch, config.embed_dim, config.depth,
                                  config.heads, config.mlp_ratio, config.pos_grid)
        self.detail = DetailCapture(channels, config.detail_dims)
        details = [*reversed(config.detail_dims), channels]  # coarse to fine, raw input last
        widths = [config.embed_dim, *config.fusion_dims]
        self.fusion = nn.ModuleList(FusionUp(widths[i], details[i], widths[i + 1])
                                    for i in range(steps))
        self.head = MatteHead(config.fusion_dims[-1], config.head_dim)

    def forward(self, src: Tensor, bgr: Tensor,
                guidance: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        if self.config.guidance != (guidance is not None):
            raise ValueError(f"this BgViTMatte was built with guidance={self.config.guidance}: "
                             f"{'pass' if self.config.guidance else 'do not pass'} a guidance map")
        height, width = int(src.shape[-2]), int(src.shape[-1])
        raw = [src, bgr] if guidance is None else [src, bgr, guidance]
        x = pad_to_multiple(torch.cat(raw, dim=1), self.config.patch)
        normalized = torch.cat([normalize_rgb(x[:, :3]), normalize_rgb(x[:, 3:6]), x[:, 6:]],
                               dim=1)
        (features,) = self.encoder(normalized)
        details = [*reversed(self.detail(x)), x]
        for step, detail in zip(self.fusion, details):
            features = step(features, detail)
        fgr, pha = self.head(features, x[:, :3])
        return fgr[..., :height, :width], pha[..., :height, :width]

    def example_inputs(self, height: int, width: int) -> tuple[Tensor, ...]:
        """Inputs of the right shapes for tracing/export: (src, bgr[, guidance]) of one frame."""
        inputs = [torch.rand(1, 3, height, width), torch.rand(1, 3, height, width)]
        if self.config.guidance:
            inputs.append(torch.rand(1, 1, height, width))
        return tuple(inputs)
