"""TSCM, μMatting's temporal modulation: a global token per frame -> GRU over the frames ->
channel gates on every site of that frame.

The token is the mean of the frame's site features (a frame without sites gives zeros); the GRU
carries what the clip has shown so far, and its hidden state goes in and out explicitly so an
engine can run one frame at a time.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from mattekit.inference.models.umatting.keyregion import Sites


class TSCM(nn.Module):
    """features (N, C) at the sites of a (B, T) clip -> gated features, next hidden (1, B, H)."""

    def __init__(self, channels: int, hidden: int = 32):
        super().__init__()
        self.gru = nn.GRU(channels, hidden, batch_first=True)
        self.gate = nn.Linear(hidden, channels)

    def forward(self, features: Tensor, sites: Sites, batch: int, frames: int,
                hidden: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        b, t = sites.coords[:, 0], sites.coords[:, 1]
        frame = b * frames + t
        sums = features.new_zeros(batch * frames, features.shape[1]).index_add(0, frame, features)
        counts = torch.bincount(frame, minlength=batch * frames).clamp_min(1).to(features.dtype)
        tokens = (sums / counts[:, None]).reshape(batch, frames, -1)
        states, hidden = self.gru(tokens, hidden)
        gates = torch.sigmoid(self.gate(states)).reshape(batch * frames, -1)
        return features * gates[frame], hidden
