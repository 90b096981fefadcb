"""OAVM's pixel-level memory matching, at 1/16 of the frame.

Two memories, both keys (from the frame's features) and values (from the features with a mask
embedded: the first frame's coarse mask, the previous frame's predicted alpha):

- long-term, global: every pixel of the current frame attends to ALL pixels of the first frame
  (the target as the user named it, wherever it has moved since);
- short-term, local: every pixel attends to the `window` x `window` pixels around the same place
  in the previous frame (15 x 15 by default: up to 7 cells = 112 px of motion at 1/16), fine
  temporal detail without the cost, or the confusions, of a global match.

Keys: one shared 3x3 conv, for the current frame and for both memories (a space-time memory
network's key); scaled dot-product affinity, softmax over the memory pixels. The window is
unfolded one row at a time from a zero-padded memory (keys outside the frame get a -1e4 logit,
so they have no weight): nothing of size (keys x window**2) is ever materialised, and the
graph exports to ONNX opset 17 (``unfold`` becomes Gather-based im2col).

features (B, C, h, w), key (B, Ck, h, w), memories (B, Ck|Cv, h, w)  ->  (B, C, h, w)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mattekit.inference.models.blocks import ConvNormAct
from mattekit.inference.models.oavm.attention import MASKED


def global_readout(query_key: Tensor, memory_key: Tensor, memory_value: Tensor) -> Tensor:
    """Each query pixel's softmax-weighted average of every memory value:
    (B, Ck, h, w), (B, Ck, hm, wm), (B, Cv, hm, wm) -> (B, Cv, h, w)."""
    batch, key_dim, height, width = (int(v) for v in query_key.shape)
    query = query_key.flatten(2).transpose(1, 2)                  # (B, N, Ck)
    logits = (query * key_dim ** -0.5) @ memory_key.flatten(2)    # (B, N, M)
    weights = torch.softmax(logits, dim=-1)
    out = memory_value.flatten(2) @ weights.transpose(1, 2)       # (B, Cv, N)
    return out.reshape(batch, -1, height, width)


def row_windows(x: Tensor, window: int) -> Tensor:
    """(B, C, h, w + window - 1) -> (B, C, window, h, w): x[..., j + dx] for dx = 0..window-1
    (one row of the window, by ``unfold``: ONNX's Gather-based im2col)."""
    batch, channels, height, padded = (int(v) for v in x.shape)
    width = padded - window + 1
    columns = F.unfold(x.reshape(batch * channels, 1, height, padded), (1, window))
    return columns.reshape(batch, channels, window, height, width)


def local_readout(query_key: Tensor, memory_key: Tensor, memory_value: Tensor,
                  window: int = 15) -> Tensor:
    """Each query pixel's softmax-weighted average of the memory values in the `window` x
    `window` square centred on the same pixel (the part inside the frame): same shapes as
    `global_readout`, the memory the same size as the query.

    Computed one row of the window at a time, so at most (C x window x h x w) values are
    unfolded at once, never the whole (C x window**2 x h x w)."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"the local attention window must be odd and >= 1, got {window}")
    height, width = int(query_key.shape[-2]), int(query_key.shape[-1])
    if (int(memory_key.shape[-2]), int(memory_key.shape[-1])) != (height, width):
        raise ValueError(f"the previous frame's memory is {tuple(memory_key.shape[-2:])}, the "
                         f"frame's keys {(height, width)}: they must be the same size")
    radius = window // 2
    pad = (radius, radius, radius, radius)
    keys = F.pad(memory_key, pad)
    values = F.pad(memory_value, pad)
    inside = F.pad(torch.ones_like(memory_key[:, :1]), pad)
    query = query_key[:, :, None] * int(query_key.shape[1]) ** -0.5  # (B, Ck, 1, h, w)
    logits = []
    for dy in range(window):
        row_keys = row_windows(keys[..., dy:dy + height, :], window)     # (B, Ck, win, h, w)
        row_inside = row_windows(inside[..., dy:dy + height, :], window)[:, 0]
        logits.append((query * row_keys).sum(dim=1) + (1.0 - row_inside) * MASKED)
    weights = torch.softmax(torch.cat(logits, dim=1), dim=1)  # (B, window**2, h, w), dy-major
    out = torch.zeros_like(memory_value)
    for dy in range(window):
        row_values = row_windows(values[..., dy:dy + height, :], window)  # (B, Cv, win, h, w)
        row_weights = weights[:, None, dy * window:(dy + 1) * window]
        out = out + (row_weights * row_values).sum(dim=2)
    return out


class PixelMemory(nn.Module):
    """Key/value encoders and the two readouts, fused into the frame's features (residual)."""

    def __init__(self, channels: int, key_dim: int, value_dim: int, window: int = 15):
        super().__init__()
        if window < 1 or window % 2 == 0:
            raise ValueError(f"the local attention window must be odd and >= 1, got {window}")
        self.window = window
        self.key = nn.Conv2d(channels, key_dim, 3, padding=1)
        self.value = nn.Sequential(ConvNormAct(channels + 1, value_dim),
                                   nn.Conv2d(value_dim, value_dim, 3, padding=1))
        self.fuse = nn.Sequential(ConvNormAct(channels + 2 * value_dim, channels),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def encode_key(self, features: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, key_dim, h, w)."""
        return self.key(features)

    def encode_value(self, features: Tensor, mask: Tensor) -> Tensor:
        """Features with the object's mask (B, 1, h, w) at their resolution embedded."""
        return self.value(torch.cat([features, mask.to(features.dtype)], dim=1))

    def forward(self, features: Tensor, key: Tensor, first_key: Tensor, first_value: Tensor,
                prev_key: Tensor, prev_value: Tensor) -> Tensor:
        long_term = global_readout(key, first_key, first_value)
        short_term = local_readout(key, prev_key, prev_value, self.window)
        return features + self.fuse(torch.cat([features, long_term, short_term], dim=1))
