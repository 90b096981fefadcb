"""Submanifold sparse 3D convolution over (T, H, W), by gather/scatter over active sites.

Plain PyTorch (no CUDA-only sparse library): for each kernel offset the neighbours of every
active site are looked up in the dense index grid, their features gathered (zero where the
neighbour is not a site or outside the clip), and multiplied by that offset's weight. The output
exists at the input's sites only. On those sites it equals ``nn.Conv3d`` (zero padding) applied
to the dense clip holding the features at the sites and zeros elsewhere (tests check it).
"""
from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

from mattekit.inference.models.umatting.keyregion import Sites


class SparseConv3d(nn.Module):
    """(N, in) features at the sites -> (N, out); kernel k x k x k over (T, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, not {kernel_size}")
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(kernel_size ** 3, in_channels, out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        bound = 1.0 / math.sqrt(in_channels * kernel_size ** 3)
        nn.init.uniform_(self.weight, -bound, bound)
        half = kernel_size // 2
        self.offsets = list(itertools.product(range(-half, half + 1), repeat=3))

    def forward(self, features: Tensor, sites: Sites) -> Tensor:
        coords, grid = sites.coords, sites.grid
        limits = torch.tensor(grid.shape[1:], device=coords.device)
        out = features.new_zeros(features.shape[0], self.weight.shape[2]) + self.bias
        zero = features.new_zeros(1, features.shape[1])
        padded = torch.cat([features, zero])  # row N: the zero of an absent neighbour
        for index, (dt, dy, dx) in enumerate(self.offsets):
            moved = coords[:, 1:] + coords.new_tensor([dt, dy, dx])
            inside = ((moved >= 0) & (moved < limits)).all(dim=1)
            clamped = torch.minimum(moved.clamp_min(0), limits - 1)
            rows = grid[coords[:, 0], clamped[:, 0], clamped[:, 1], clamped[:, 2]]
            rows = torch.where(inside & (rows >= 0), rows, features.shape[0])
            out = out + padded[rows] @ self.weight[index]
        return out

    def dense_weight(self) -> Tensor:
        """The same kernel as an ``nn.Conv3d`` weight (out, in, k, k, k)."""
        k = self.kernel_size
        return self.weight.reshape(k, k, k, *self.weight.shape[1:]).permute(4, 3, 0, 1, 2)
