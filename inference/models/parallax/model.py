"""ParallaxNet: alpha from two views with camera parallax (Parallax Portrait Matting).

    per view: frame, the other view background-aligned to it, trimap     (B, 3+3+1, H, W)
      -> ONE plain ViT for both views (weights shared: a single batched call)          at 1/p
      -> decoder cross-attention between the two views' tokens (shared weights both ways)
      -> ViTMatte-style detail capture convs over each view's raw input  at 1/2 .. 1/(p/2)
      -> log2(p) fusion steps, x2 each, with the detail map of that scale             at 1/1
      -> head: alpha and a foreground residual
    -> fgr (B, 3, H, W), pha (B, 1, H, W) of the first view (``forward_both``: of both)

The network is symmetric: swapping the views swaps the outputs. Frames are sRGB-encoded 0..1
(ImageNet-normalised inside), trimaps 0 / 0.5 / 1; any H, W (padded inside). The premultiplied
foreground is ``fgr * pha``. Trained on patches (448 px in the paper); ``tiler`` runs it so.
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
from mattekit.inference.models.parallax.cross import BranchCrossAttention
from mattekit.inference.models.vit import ViTEncoder

VIEW_CHANNELS = 7  # frame (3), the other view background-aligned (3), trimap (1)


@dataclasses.dataclass(frozen=True)
class ParallaxNetConfig(ModelConfig):
    """Sizes of a ParallaxNet; the defaults are ViTMatte-S widths on a ViT-S/16."""

    patch: int = 16
    embed_dim: int = 384
    depth: int = 12
    heads: int = 6
    mlp_ratio: float = 4.0
    pos_grid: int = 28            # 448 px patches / 16
    cross_layers: int = 2
    cross_heads: int = 6
    detail_dims: tuple[int, ...] = (48, 96, 192)        # 1/2, 1/4, 1/8
    fusion_dims: tuple[int, ...] = (256, 128, 64, 32)   # 1/8, 1/4, 1/2, 1/1
    head_dim: int = 16

    @classmethod
    def tiny(cls) -> "ParallaxNetConfig":
        """A ~0.2M-parameter network for tests and smoke runs (not for real mattes)."""
        return cls(embed_dim=64, depth=2, heads=2, pos_grid=8, cross_layers=1, cross_heads=2,
                   detail_dims=(8, 16, 16), fusion_dims=(32, 16, 16, 8), head_dim=8)


class ParallaxNet(nn.Module):
    """The network above: ``fgr, pha = ParallaxNet(config)(src, src_other, src_trimap, ref,
    ref_other, ref_trimap)``."""

    architecture = "parallaxnet"
    config_class = ParallaxNetConfig
    onnx_input_names = ("src", "src_other", "src_trimap", "ref", "ref_other", "ref_trimap")
    onnx_output_names = ("fgr", "pha")

    def __init__(self, config: Optional[ParallaxNetConfig] = None):
        super().__init__()
        self.config = config = config or ParallaxNetConfig()
        steps = fusion_steps(config.patch, config.fusion_dims, config.detail_dims)
        self.encoder = ViTEncoder(VIEW_CHANNELS, config.patch, config.embed_dim, config.depth,
                                  config.heads, config.mlp_ratio, config.pos_grid)
        self.cross = BranchCrossAttention(config.embed_dim, config.cross_heads,
                                          config.cross_layers, config.mlp_ratio)
        self.detail = DetailCapture(VIEW_CHANNELS, config.detail_dims)
        details = [*reversed(config.detail_dims), VIEW_CHANNELS]
        widths = [config.embed_dim, *config.fusion_dims]
        self.fusion = nn.ModuleList(FusionUp(widths[i], details[i], widths[i + 1])
                                    for i in range(steps))
        self.head = MatteHead(config.fusion_dims[-1], config.head_dim)

    def forward_both(self, src: Tensor, src_other: Tensor, src_trimap: Tensor, ref: Tensor,
                     ref_other: Tensor, ref_trimap: Tensor
                     ) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """((fgr, pha) of the first view, (fgr, pha) of the second)."""
        batch = int(src.shape[0])
        height, width = int(src.shape[-2]), int(src.shape[-1])
        views = torch.cat([torch.cat([src, src_other, src_trimap], dim=1),
                           torch.cat([ref, ref_other, ref_trimap], dim=1)], dim=0)
        x = pad_to_multiple(views, self.config.patch)
        normalized = torch.cat([normalize_rgb(x[:, :3]), normalize_rgb(x[:, 3:6]), x[:, 6:]],
                               dim=1)
        (tokens,) = self.encoder(normalized)
        dim, h, w = (int(v) for v in tokens.shape[1:])
        sequence = tokens.flatten(2).transpose(1, 2)
        first, second = self.cross(sequence[:batch], sequence[batch:])
        features = torch.cat([first, second], dim=0).transpose(1, 2).reshape(-1, dim, h, w)
        details = [*reversed(self.detail(x)), x]
        for step, detail in zip(self.fusion, details):
            features = step(features, detail)
        fgr, pha = self.head(features, x[:, :3])
        fgr, pha = fgr[..., :height, :width], pha[..., :height, :width]
        return (fgr[:batch], pha[:batch]), (fgr[batch:], pha[batch:])

    def forward(self, src: Tensor, src_other: Tensor, src_trimap: Tensor, ref: Tensor,
                ref_other: Tensor, ref_trimap: Tensor) -> tuple[Tensor, Tensor]:
        first, _ = self.forward_both(src, src_other, src_trimap, ref, ref_other, ref_trimap)
        return first

    def example_inputs(self, height: int, width: int) -> tuple[Tensor, ...]:
        """Inputs of the right shapes for tracing/export: both views of one patch."""
        rgb = [torch.rand(1, 3, height, width) for _ in range(4)]
        trimaps = [torch.full((1, 1, height, width), 0.5) for _ in range(2)]
        return rgb[0], rgb[1], trimaps[0], rgb[2], rgb[3], trimaps[1]
