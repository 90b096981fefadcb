"""JAFAR-style image-guided feature upsampler (Couairon, Chambon et al. 2025), windowed.

Low-resolution semantic features are lifted to a finer grid by attention: queries come from the
image at the fine resolution, keys from the same image pooled to the coarse grid and modulated
(Spatial Feature Transform) by the semantic features, values are the semantic features. So the
upsampled features follow the image's edges instead of a bilinear blur.

Unlike JAFAR's global attention, each fine pixel attends to the `window` x `window` coarse cells
around its own cell: memory stays linear in the pixel count, which 2K-4K plates need. Nothing is
materialised at the fine resolution but the queries, the weights and the output (einsum over a
(coarse cell, sub-pixel) layout).

features: (B, C, h, w), image: (B, G, h*scale, w*scale)  ->  (B, C, h*scale, w*scale)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mattekit.inference.models.blocks import ConvNormAct, group_count


class GuidedUpsampler(nn.Module):
    """Windowed attention upsampling by `scale`: queries from the image at the fine grid, keys
    from the image pooled to the coarse grid and modulated by the features, values the features.
    Every output is a convex combination of the window's feature vectors."""

    def __init__(self, feature_channels: int, guide_channels: int = 3, qk_dim: int = 64,
                 heads: int = 4, scale: int = 4, window: int = 3):
        super().__init__()
        if qk_dim % heads or feature_channels % heads:
            raise ValueError(f"upsampler widths {qk_dim} (qk) and {feature_channels} (features) "
                             f"must both be divisible by {heads} heads")
        if window % 2 == 0:
            raise ValueError(f"upsampler window must be odd, got {window}")
        self.heads, self.scale, self.window = heads, scale, window
        self.guide = nn.Sequential(ConvNormAct(guide_channels, qk_dim),
                                   nn.Conv2d(qk_dim, qk_dim, 3, padding=1))
        self.to_query = nn.Conv2d(qk_dim, qk_dim, 1)
        self.to_key = nn.Conv2d(qk_dim, qk_dim, 1)
        self.key_norm = nn.GroupNorm(group_count(qk_dim), qk_dim, affine=False)
        # SFT: the semantic features decide how the image keys are scaled and shifted
        self.sft = nn.Conv2d(feature_channels, 2 * qk_dim, 1)
        # where a fine pixel lies inside its coarse cell, and where a key lies in the window
        self.subpixel = nn.Parameter(torch.zeros(1, qk_dim, scale, scale))
        self.relative = nn.Parameter(torch.zeros(1, qk_dim, window * window, 1, 1))
        nn.init.trunc_normal_(self.subpixel, std=0.02)
        nn.init.trunc_normal_(self.relative, std=0.02)

    def _neighbours(self, x: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, C, window*window, h, w): each cell's window, edge-replicated."""
        radius = self.window // 2
        height, width = int(x.shape[-2]), int(x.shape[-1])
        padded = F.pad(x, (radius, radius, radius, radius), mode="replicate")
        shifts = [padded[..., dy:dy + height, dx:dx + width]
                  for dy in range(self.window) for dx in range(self.window)]
        return torch.stack(shifts, dim=2)

    def forward(self, features: Tensor, image: Tensor) -> Tensor:
        batch, channels, height, width = (int(v) for v in features.shape)
        s, g = self.scale, self.heads
        guide = self.guide(F.interpolate(image, size=(height * s, width * s), mode="bilinear",
                                         align_corners=False))
        subpixel = self.subpixel.repeat(1, 1, height, width)
        query = self.to_query(guide) + subpixel  # (B, Q, h*s, w*s)
        coarse = F.adaptive_avg_pool2d(guide, (height, width))
        gamma, beta = self.sft(features).chunk(2, dim=1)
        key = self.key_norm(self.to_key(coarse)) * (1 + gamma) + beta  # (B, Q, h, w)
        qk_dim = int(key.shape[1])
        d = qk_dim // g
        keys = (self._neighbours(key) + self.relative).reshape(batch, g, d, -1, height, width)
        values = self._neighbours(features).reshape(batch, g, channels // g, -1, height, width)
        query = query.reshape(batch, g, d, height, s, width, s)
        logits = torch.einsum("bgdhswt,bgdkhw->bgkhswt", query, keys) * d ** -0.5
        weights = torch.softmax(logits, dim=2)  # over the window: (B, G, K, h, s, w, s)
        out = torch.einsum("bgkhswt,bgckhw->bgchswt", weights, values)
        return out.reshape(batch, channels, height * s, width * s)
