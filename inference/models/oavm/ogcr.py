"""OGCR: OAVM's object-guided correction and refinement, with cross-frame guided masked attention.

The target's object queries (from the memory) look at the current frame's pixels, but only where
the target can be: the previous frame's alpha, binarised and dilated (``guidance_mask``), is the
attention mask of their cross-attention. So an object that enters elsewhere, however much it
looks like the target, never reaches the queries. Then every pixel attends to the updated queries
(correction: object-level evidence flows back into the pixel features), each query's mask
embedding is matched against the pixels (an object map, the queries' own estimate of where the
target is), and a conv block refines the features from the corrected features, that map and the
guidance itself.

features (B, C, h, w), queries (B, N, C), prev_alpha (B, 1, h, w) 0..1
    -> features (B, C, h, w), queries (B, N, C), object logits (B, 1, h, w)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mattekit.inference.models.blocks import Attention, ConvNormAct, Mlp
from mattekit.inference.models.oavm.query import QueryLayer


def guidance_mask(prev_alpha: Tensor, dilation: int) -> Tensor:
    """The previous frame's alpha binarised (> 0.5), then dilated by `dilation` pixels (a
    (2 * dilation + 1) square): (B, 1, h, w) -> (B, 1, h, w) of 0.0 / 1.0."""
    if dilation < 0:
        raise ValueError(f"the guidance dilation must be >= 0 pixels, got {dilation}")
    binary = (prev_alpha > 0.5).to(prev_alpha.dtype)
    if dilation == 0:
        return binary
    return F.max_pool2d(binary, 2 * dilation + 1, stride=1, padding=dilation)


class OGCR(nn.Module):
    """Guided query update (``layers`` masked QueryLayers), pixel correction, object map,
    refinement; see the module docstring."""

    def __init__(self, dim: int, heads: int, layers: int, dilation: int,
                 mlp_ratio: float = 4.0):
        super().__init__()
        if dilation < 0:
            raise ValueError(f"the guidance dilation must be >= 0 pixels, got {dilation}")
        self.dilation = dilation
        self.layers = nn.ModuleList(QueryLayer(dim, heads, mlp_ratio) for _ in range(layers))
        self.norm_pixels = nn.LayerNorm(dim)
        self.norm_queries = nn.LayerNorm(dim)
        self.correct = Attention(dim, heads)
        self.mask_embed = Mlp(dim, dim)
        self.refine = nn.Sequential(ConvNormAct(dim + 2, dim),
                                    nn.Conv2d(dim, dim, 3, padding=1))

    def forward(self, features: Tensor, queries: Tensor, prev_alpha: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
        batch, dim, height, width = (int(v) for v in features.shape)
        guide = guidance_mask(prev_alpha, self.dilation)
        pixels = features.flatten(2).transpose(1, 2)  # (B, h*w, C)
        for layer in self.layers:
            queries = layer(queries, pixels, guide.flatten(1))
        pixels = pixels + self.correct(self.norm_pixels(pixels), self.norm_queries(queries))
        corrected = pixels.transpose(1, 2).reshape(batch, dim, height, width)
        per_query = (self.mask_embed(queries) * dim ** -0.5) @ corrected.flatten(2)  # (B, N, hw)
        object_logits = torch.logsumexp(per_query, dim=1, keepdim=True).reshape(
            batch, 1, height, width)
        extra = torch.cat([corrected, torch.sigmoid(object_logits), guide], dim=1)
        return corrected + self.refine(extra), queries, object_logits
