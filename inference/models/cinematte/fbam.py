"""FBAM: the frame-background attention module of CineMatte.

Each layer lets every frame token look at the other frame tokens (self-attention), then at all
the clean-plate tokens (cross-attention: the plate token that matches wherever it lies, so a
misregistered plate still lines up), then through an MLP; pre-norm, residual.

frame: (B, N, C) tokens, plate: (B, M, C) tokens  ->  (B, N, C) frame tokens.
"""
from __future__ import annotations

from torch import Tensor, nn

from mattekit.inference.models.blocks import Attention, Mlp


class FBAMLayer(nn.Module):
    """One layer: self-attention, cross-attention to the plate tokens, MLP (pre-norm, residual)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.norm_query = nn.LayerNorm(dim)
        self.norm_plate = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, heads)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, frame: Tensor, plate: Tensor) -> Tensor:
        frame = frame + self.self_attn(self.norm_self(frame))
        frame = frame + self.cross_attn(self.norm_query(frame), self.norm_plate(plate))
        return frame + self.mlp(self.norm_mlp(frame))


class FBAM(nn.Module):
    """`layers` FBAM layers in sequence; the plate tokens are the same context for every layer."""

    def __init__(self, dim: int, heads: int, layers: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.layers = nn.ModuleList(FBAMLayer(dim, heads, mlp_ratio) for _ in range(layers))

    def forward(self, frame: Tensor, plate: Tensor) -> Tensor:
        for layer in self.layers:
            frame = layer(frame, plate)
        return frame
