"""μMatting's training losses on (B, T, 1, H, W) clips, alpha in 0..1.

- `region_loss`: L1 and Sobel-gradient L1 of the detail alpha against the truth on the key
  region's sites only (where the refiner is responsible).
- `entire_loss`: L1 + Laplacian-pyramid loss of the fused alpha over the whole frame, plus L1 of
  the coarse alpha against the downsampled truth (the coarse predictor learns the whole shape).
- `temporal_loss`: L1 between the frame-to-frame changes of prediction and truth (dtSSD's
  quantity), over K_t ∩ K_{t-1}, where the refined alpha of both frames is used.
- `umatting_loss`: the weighted sum and each term by name.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch.nn.functional as F
from torch import Tensor

from mattekit.inference.models.losses import laplacian_loss, masked_l1, sobel


def _frames(x: Tensor) -> Tensor:
    """(B, T, C, H, W) -> (B·T, C, H, W)."""
    return x.reshape(-1, *x.shape[2:])


def region_loss(detail: Tensor, true: Tensor, key: Tensor) -> Tensor:
    """L1 + gradient L1 of A_d on the sites (K > 0); off the sites the truth stands in, so
    the loss depends on the sites' values only."""
    mask = (_frames(key) > 0).to(detail.dtype)
    truth = _frames(true)
    pred = mask * _frames(detail) + (1.0 - mask) * truth
    pgx, pgy = sobel(pred)
    tgx, tgy = sobel(truth)
    return (masked_l1(pred, truth, mask) + masked_l1(pgx, tgx, mask)
            + masked_l1(pgy, tgy, mask))


def entire_loss(alpha: Tensor, coarse: Tensor, true: Tensor) -> Tensor:
    """Whole-frame L1 + Laplacian of the fused alpha, and L1 of the upsampled coarse alpha."""
    pred, truth = _frames(alpha), _frames(true)
    return (F.l1_loss(pred, truth) + laplacian_loss(pred, truth)
            + F.l1_loss(_frames(coarse), truth))


def temporal_loss(alpha: Tensor, true: Tensor, key: Tensor) -> Tensor:
    """Mean |(a_t - a_{t-1}) - (g_t - g_{t-1})| over K_t ∩ K_{t-1} (0 for a single frame)."""
    if alpha.shape[1] < 2:
        return alpha.new_zeros(())
    both = ((key[:, 1:] > 0) & (key[:, :-1] > 0)).to(alpha.dtype)
    change = alpha[:, 1:] - alpha[:, :-1]
    truth = true[:, 1:] - true[:, :-1]
    return masked_l1(change, truth, both)


@dataclasses.dataclass(frozen=True)
class UMattingLossWeights:
    region: float = 1.0
    entire: float = 1.0
    temporal: float = 0.5


def umatting_loss(alpha: Tensor, detail: Tensor, coarse: Tensor, key: Tensor, true: Tensor,
                  weights: Optional[UMattingLossWeights] = None) -> dict[str, Tensor]:
    """Every term by name and their weighted sum under "total"."""
    weights = weights or UMattingLossWeights()
    terms = {"region": region_loss(detail, true, key),
             "entire": entire_loss(alpha, coarse, true),
             "temporal": temporal_loss(alpha, true, key)}
    terms["total"] = (weights.region * terms["region"] + weights.entire * terms["entire"]
                      + weights.temporal * terms["temporal"])
    return terms
