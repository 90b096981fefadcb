"""ParallaxNet's training losses: the matting terms of ``models.losses`` on alpha (separate L1
over the trimap's known region and its unknown band, Laplacian pyramid, gradient penalty), plus
the composition loss of both views and an L1 on the foreground where the subject is.

pha, true_pha, trimap: (B, 1, H, W); fgr, true_fgr, image, background: (B, 3, H, W), 0..1.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from mattekit.inference.models.losses import LossWeights, masked_l1, matting_loss


def composition_loss(pha: Tensor, fgr: Tensor, background: Tensor, image: Tensor) -> Tensor:
    """mean |pha * fgr + (1 - pha) * background - image|: the matte must rebuild the frame."""
    return (pha * fgr + (1.0 - pha) * background - image).abs().mean()


def parallax_loss(pha: Tensor, fgr: Tensor, true_pha: Tensor, true_fgr: Tensor,
                  trimap: Tensor, image: Tensor, background: Tensor,
                  weights: Optional[LossWeights] = None, composition: float = 1.0,
                  foreground: float = 1.0) -> dict[str, Tensor]:
    """Every term by name and the weighted "total" (the matting terms keep their weights)."""
    terms = matting_loss(pha, true_pha, trimap, weights)
    terms["composition"] = composition_loss(pha, fgr, background, image)
    terms["foreground"] = masked_l1(fgr, true_fgr, (true_pha > 0).to(fgr.dtype).expand_as(fgr))
    terms["total"] = (terms["total"] + composition * terms["composition"]
                      + foreground * terms["foreground"])
    return terms
