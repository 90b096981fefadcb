"""Sparse key-region extraction: K from the coarse alpha, and K's pixels as active sites.

K = coarse alpha strictly between the thresholds, dilated (max-pool), upsampled to the full
resolution and feathered (a box blur of the dilated mask, so the fusion has no seam). The active
sites are the full-resolution (b, t, y, x) where K > 0, with a dense index grid that finds a
site's neighbours for the sparse convolution (-1 where a pixel is not a site).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class Sites(NamedTuple):
    """Active sites of a (B, T, H, W) clip: coords (N, 4) long as (b, t, y, x); grid
    (B, T, H, W) long holding each site's row in coords, -1 elsewhere."""

    coords: Tensor
    grid: Tensor

    @property
    def size(self) -> int:
        return int(self.coords.shape[0])


def coarse_key(alpha: Tensor, low: float, high: float, dilation: int) -> Tensor:
    """(N, 1, h, w) float 0/1: the band low < alpha < high, dilated by `dilation` pixels."""
    band = ((alpha > low) & (alpha < high)).to(alpha.dtype)
    if dilation <= 0:
        return band
    return F.max_pool2d(band, 2 * dilation + 1, stride=1, padding=dilation)


def full_key(key: Tensor, size: tuple[int, int], feather: int) -> Tensor:
    """K at the full `size`: nearest upsample of the coarse K, feathered inwards over about
    `feather` pixels (a box blur, kept at 0 outside the dilated band)."""
    hard = F.interpolate(key, size=size, mode="nearest")
    if feather <= 0:
        return hard
    soft = F.avg_pool2d(hard, 2 * feather + 1, stride=1, padding=feather,
                        count_include_pad=False)
    return soft * hard


def active_sites(key: Tensor) -> Sites:
    """The sites where K > 0 of a (B, T, H, W) key (frames of a clip stacked on T)."""
    coords = torch.nonzero(key > 0)
    grid = torch.full(key.shape, -1, dtype=torch.long, device=key.device)
    grid[tuple(coords.t())] = torch.arange(coords.shape[0], device=key.device)
    return Sites(coords=coords, grid=grid)


def gather_sites(dense: Tensor, sites: Sites) -> Tensor:
    """(N, C) features at the sites of a (B, T, C, H, W) tensor."""
    b, t, y, x = sites.coords.unbind(1)
    return dense[b, t, :, y, x]


def scatter_sites(values: Tensor, sites: Sites, shape: tuple[int, ...]) -> Tensor:
    """(B, T, C, H, W) zeros with the (N, C) `values` placed at the sites."""
    out = values.new_zeros(shape)
    b, t, y, x = sites.coords.unbind(1)
    out[b, t, :, y, x] = values
    return out


def _source_index(position: Tensor, size_in: int, size_out: int) -> tuple[Tensor, Tensor, Tensor]:
    """Bilinear taps of output positions as F.interpolate(align_corners=False) computes them."""
    source = ((position.to(torch.float32) + 0.5) * (size_in / size_out) - 0.5).clamp_min(0.0)
    low = source.floor().long().clamp_max(size_in - 1)
    high = (low + 1).clamp_max(size_in - 1)
    return low, high, (source - low.to(torch.float32)).clamp(0.0, 1.0)


def sample_at_sites(low: Tensor, sites: Sites, frames: int, size: tuple[int, int]) -> Tensor:
    """(N, C): a (B·T, C, h, w) low-resolution map bilinearly upsampled to `size`, read at the
    sites only (the full-resolution map is never built)."""
    b, t, y, x = sites.coords.unbind(1)
    frame = b * frames + t
    y0, y1, wy = _source_index(y, int(low.shape[-2]), size[0])
    x0, x1, wx = _source_index(x, int(low.shape[-1]), size[1])
    wy, wx = wy[:, None].to(low.dtype), wx[:, None].to(low.dtype)
    top = low[frame, :, y0, x0] * (1 - wx) + low[frame, :, y0, x1] * wx
    bottom = low[frame, :, y1, x0] * (1 - wx) + low[frame, :, y1, x1] * wx
    return top * (1 - wy) + bottom * wy
