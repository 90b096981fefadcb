"""Matting losses of the BackgroundMatte papers, on (B, 1, H, W) alpha tensors in 0..1.

- `known_unknown_l1`: L1 on the known region and on the unknown band of a training trimap,
  reported separately (CineMatte / ViTMatte weigh the band, where the edges are, on its own).
  Trimaps may be 0/0.5/1 or 0/128/255; the unknown band is every value strictly between
  a quarter and three quarters of the way from background to foreground.
- `laplacian_loss`: L1 between Laplacian pyramids, level i weighted 2**i (BGMv2 / RVM), so
  structure at every scale counts, not only per-pixel error.
- `gradient_penalty`: L1 between the Sobel gradients of prediction and truth, plus `smoothness`
  times the prediction's own gradient magnitude (GCA / ViTMatte's gradient penalty: edges where
  the truth has them, no noise elsewhere).
- `matting_loss`: all of them, weighted, as a dict of named terms with their "total".
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def trimap_regions(trimap: Tensor) -> tuple[Tensor, Tensor]:
    """(known, unknown) float masks of a 0/0.5/1 or 0/128/255 trimap (same shape)."""
    scaled = trimap / 255.0 if float(trimap.max()) > 1.0 else trimap
    unknown = ((scaled > 0.25) & (scaled < 0.75)).to(trimap.dtype if trimap.is_floating_point()
                                                      else torch.float32)
    return 1.0 - unknown, unknown


def masked_l1(pred: Tensor, true: Tensor, mask: Tensor) -> Tensor:
    """Mean |pred - true| over the pixels where mask is 1 (0 when the mask is empty)."""
    return ((pred - true).abs() * mask).sum() / mask.sum().clamp_min(1.0)


def known_unknown_l1(pred: Tensor, true: Tensor, trimap: Tensor) -> tuple[Tensor, Tensor]:
    """(L1 over the trimap's known pixels, L1 over its unknown band)."""
    known, unknown = trimap_regions(trimap)
    return masked_l1(pred, true, known), masked_l1(pred, true, unknown)


def _gaussian_kernel(channels: int, like: Tensor) -> Tensor:
    taps = like.new_tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
    return (taps[:, None] * taps[None, :]).expand(channels, 1, 5, 5).contiguous()


def _blur(x: Tensor, kernel: Tensor) -> Tensor:
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=int(x.shape[1]))


def laplacian_pyramid(x: Tensor, levels: int = 5) -> list[Tensor]:
    """Band-pass levels, finest first, then the low-pass residual; stops early on small images."""
    kernel = _gaussian_kernel(int(x.shape[1]), x)
    pyramid: list[Tensor] = []
    current = x
    for _ in range(levels - 1):
        if min(int(current.shape[-2]), int(current.shape[-1])) < 6:
            break
        down = _blur(current, kernel)[..., ::2, ::2]
        up = F.interpolate(down, size=current.shape[-2:], mode="bilinear", align_corners=False)
        pyramid.append(current - up)
        current = down
    pyramid.append(current)
    return pyramid


def laplacian_loss(pred: Tensor, true: Tensor, levels: int = 5) -> Tensor:
    """Sum over levels i of 2**i * mean |L_i(pred) - L_i(true)|: zero only when they agree."""
    total = pred.new_zeros(())
    for level, (a, b) in enumerate(zip(laplacian_pyramid(pred, levels),
                                       laplacian_pyramid(true, levels))):
        total = total + (2 ** level) * F.l1_loss(a, b)
    return total


def sobel(x: Tensor) -> tuple[Tensor, Tensor]:
    """Horizontal and vertical Sobel gradients of (B, C, H, W), edge-replicated: same shape."""
    gx = x.new_tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
    channels = int(x.shape[1])
    kernel = torch.stack([gx, gx.t()]).unsqueeze(1).repeat(channels, 1, 1, 1)
    out = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=channels)
    return out[:, 0::2], out[:, 1::2]


def gradient_penalty(pred: Tensor, true: Tensor, smoothness: float = 0.01) -> Tensor:
    """mean |grad pred - grad true| + smoothness * mean |grad pred| (Sobel, both directions)."""
    pgx, pgy = sobel(pred)
    tgx, tgy = sobel(true)
    match = F.l1_loss(pgx, tgx) + F.l1_loss(pgy, tgy)
    return match + smoothness * (pgx.abs().mean() + pgy.abs().mean())


@dataclasses.dataclass(frozen=True)
class LossWeights:
    known: float = 1.0
    unknown: float = 2.0
    laplacian: float = 1.0
    gradient: float = 1.0
    smoothness: float = 0.01


def matting_loss(pred: Tensor, true: Tensor, trimap: Tensor,
                 weights: Optional[LossWeights] = None) -> dict[str, Tensor]:
    """Every term by name, and their weighted sum under "total"."""
    weights = weights or LossWeights()
    known, unknown = known_unknown_l1(pred, true, trimap)
    terms = {"known": known, "unknown": unknown, "laplacian": laplacian_loss(pred, true),
             "gradient": gradient_penalty(pred, true, weights.smoothness)}
    terms["total"] = (weights.known * known + weights.unknown * unknown
                      + weights.laplacian * terms["laplacian"]
                      + weights.gradient * terms["gradient"])
    return terms
