"""Small building blocks shared by the architectures: attention, MLP, conv (+ GroupNorm) + ReLU.

Shapes: token tensors are (B, N, C); image tensors are (B, C, H, W).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def group_count(channels: int, preferred: int = 8) -> int:
    """The largest group count <= `preferred` that divides `channels` (GroupNorm needs that)."""
    return math.gcd(channels, preferred) or 1


def normalize_rgb(image: Tensor) -> Tensor:
    """ImageNet normalisation of a (B, 3, H, W) image in 0..1, what ViT backbones expect."""
    mean = image.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = image.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (image - mean) / std


def pad_to_multiple(image: Tensor, multiple: int) -> Tensor:
    """Replicate-pad the bottom/right of (B, C, H, W): H and W become multiples of `multiple`."""
    height, width = int(image.shape[-2]), int(image.shape[-1])
    pad_h = (multiple - height % multiple) % multiple
    pad_w = (multiple - width % multiple) % multiple
    if pad_h == 0 and pad_w == 0:
        return image
    return F.pad(image, (0, pad_w, 0, pad_h), mode="replicate")


def upsample2(x: Tensor) -> Tensor:
    """Bilinear x2 upsampling of (B, C, H, W)."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def resize_to(x: Tensor, like: Tensor) -> Tensor:
    """Bilinear resize of (B, C, h, w) to the spatial size of `like` (unchanged when equal)."""
    size = (int(like.shape[-2]), int(like.shape[-1]))
    if (int(x.shape[-2]), int(x.shape[-1])) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ConvNormAct(nn.Sequential):
    """Conv (k x k, optionally dilated) + GroupNorm + ReLU:
    (B, in, H, W) -> (B, out, H / stride, W / stride)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, dilation: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                      dilation * (kernel_size // 2), dilation=dilation, bias=False),
            nn.GroupNorm(group_count(out_channels), out_channels),
            nn.ReLU(inplace=True),
        )


class ConvAct(nn.Sequential):
    """Conv (k x k, optionally dilated, with bias) + leaky ReLU, no normalisation:
    (B, in, H, W) -> (B, out, H / stride, W / stride). For networks trained on crops and run
    on whole frames, where a norm's statistics would differ between the two. He-initialised
    (without a norm, PyTorch's default initialisation shrinks the signal layer after layer) and
    leaky (a short fine-tuning must not lose units that a large step switched off for good)."""

    slope = 0.1

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, dilation: int = 1):
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                         dilation * (kernel_size // 2), dilation=dilation)
        nn.init.kaiming_normal_(conv.weight, a=self.slope, nonlinearity="leaky_relu")
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
        super().__init__(conv, nn.LeakyReLU(self.slope, inplace=True))


class Mlp(nn.Module):
    """Two linear layers with GELU: (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head attention; self-attention when `context` is None, else cross-attention.

    x: (B, N, C) queries; context: (B, M, C) keys/values -> (B, N, C). Written with plain
    matmul + softmax so that the ONNX export is the same graph on every runtime.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        source = x if context is None else context
        batch, queries, dim = x.shape
        keys = source.shape[1]
        head_dim = dim // self.heads
        q = self.q(x).reshape(batch, queries, self.heads, head_dim).transpose(1, 2)
        k, v = self.kv(source).reshape(batch, keys, 2, self.heads, head_dim).permute(
            2, 0, 3, 1, 4).unbind(0)
        weights = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(batch, queries, dim)
        return self.proj(out)
