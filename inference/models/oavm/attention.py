"""Masked multi-head cross-attention (Mask2Former's masked attention), for OAVM's object queries.

Each query attends only to the context tokens (pixels) a mask lets through: a masked-out key
gets a -1e4 bias before the softmax, so its weight is exactly zero in float32 (and float16) and
nothing of its key or value reaches the output. A mask that lets nothing through for an image
is treated as letting everything through (the query would otherwise average nothing).

x (B, N, C) queries, context (B, M, C) tokens, mask (B, M) 1 = visible  ->  (B, N, C)
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from mattekit.inference.models.blocks import Attention

MASKED = -1e4  # additive logit of a hidden key: exp underflows to 0 even in float16


def visibility_bias(mask: Tensor) -> Tensor:
    """(B, M) mask (1/True = visible) -> (B, 1, 1, M) additive logit bias; an empty row shows
    every key."""
    visible = (mask > 0.5).to(torch.float32)
    empty = (visible.sum(dim=-1, keepdim=True) == 0).to(torch.float32)
    visible = torch.maximum(visible, empty)
    return ((1.0 - visible) * MASKED)[:, None, None, :]


class MaskedAttention(Attention):
    """Multi-head attention of `x` to `context`, restricted by `mask` (None = no restriction);
    the same projections as `Attention`, plain matmul + softmax for one ONNX graph."""

    def forward(  # type: ignore[override]
            self, x: Tensor, context: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        batch, queries, dim = x.shape
        keys = context.shape[1]
        head_dim = dim // self.heads
        q = self.q(x).reshape(batch, queries, self.heads, head_dim).transpose(1, 2)
        k, v = self.kv(context).reshape(batch, keys, 2, self.heads, head_dim).permute(
            2, 0, 3, 1, 4).unbind(0)
        logits = (q * self.scale) @ k.transpose(-2, -1)  # (B, heads, N, M)
        if mask is not None:
            logits = logits + visibility_bias(mask).to(logits.dtype)
        weights = torch.softmax(logits, dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(batch, queries, dim)
        return self.proj(out)
