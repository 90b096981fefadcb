"""CineMatte: background matting against a clean plate, robust to plate misregistration.

    src, bgr (B, 3, H, W) in 0..1 (frame and its clean plate; any H, W: padded internally)
      -> frozen ViT, ONE set of weights run on both (a single batched call)
         frame: tokens of the last block + of a middle block (the 1/8 skip); plate: last block
      -> adapters (1x1 conv + GN + ReLU), frame and plate each their own
      -> FBAM x n (self-attention, cross-attention to the plate tokens, MLP)      at 1/16
      -> JAFAR-style upsampler, guided by the frame, lifts the FBAM tokens to 1/4
      -> DPT decoder: 1/16 -> 1/8 (+ backbone skip) -> 1/4 (+ upsampled tokens)
      -> matting head with full-resolution detail of frame and plate
    -> fgr (B, 3, H, W), pha (B, 1, H, W), both in 0..1

(Resolutions for patch 16.) The encoder is frozen: its parameters never require a gradient and it
stays in eval mode when the model trains. It is only worth freezing once pretrained ViT weights
are loaded into ``model.encoder`` (a later, training issue); none are shipped.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from torch import Tensor, nn

from mattekit.inference.models.blocks import normalize_rgb, pad_to_multiple
from mattekit.inference.models.cinematte.adapter import Adapter
from mattekit.inference.models.cinematte.decoder import DPTDecoder
from mattekit.inference.models.cinematte.fbam import FBAM
from mattekit.inference.models.cinematte.head import MattingHead
from mattekit.inference.models.cinematte.upsampler import GuidedUpsampler
from mattekit.inference.models.config import ModelConfig
from mattekit.inference.models.vit import ViTEncoder


@dataclasses.dataclass(frozen=True)
class CineMatteConfig(ModelConfig):
    """Sizes of a CineMatte; the defaults are a ViT-S/16 backbone (what DINO-family weights fit)."""

    patch: int = 16
    embed_dim: int = 384          # ViT-S width
    depth: int = 12
    heads: int = 6
    mlp_ratio: float = 4.0
    pos_grid: int = 32            # learned position grid, resampled to the actual token grid
    skip_block: Optional[int] = None  # ViT block feeding the 1/8 skip; None = depth // 2 - 1
    adapter_dim: int = 256
    fbam_layers: int = 2
    fbam_heads: int = 8
    decoder_dim: int = 128
    upsampler_qk_dim: int = 64
    upsampler_heads: int = 4
    upsampler_window: int = 3
    detail_channels: int = 16
    freeze_encoder: bool = True

    @classmethod
    def tiny(cls) -> "CineMatteConfig":
        """A ~0.2M-parameter network for tests and smoke runs (not for real mattes)."""
        return cls(embed_dim=64, depth=2, heads=2, pos_grid=8, adapter_dim=32, fbam_layers=1,
                   fbam_heads=2, decoder_dim=16, upsampler_qk_dim=16, upsampler_heads=2,
                   detail_channels=8)


class CineMatte(nn.Module):
    """The network above: ``fgr, pha = CineMatte(config)(src, bgr)``."""

    architecture = "cinematte"
    config_class = CineMatteConfig
    onnx_input_names = ("src", "bgr")
    onnx_output_names = ("fgr", "pha")

    def __init__(self, config: Optional[CineMatteConfig] = None):
        super().__init__()
        self.config = config = config or CineMatteConfig()
        skip = config.depth // 2 - 1 if config.skip_block is None else config.skip_block
        if not -config.depth <= skip < config.depth:
            raise ValueError(f"skip_block {skip} is outside the encoder's {config.depth} blocks")
        self.encoder = ViTEncoder(3, config.patch, config.embed_dim, config.depth, config.heads,
                                  config.mlp_ratio, config.pos_grid, out_indices=(skip, -1))
        if config.freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()
        dim = config.adapter_dim
        self.frame_adapter = Adapter(config.embed_dim, dim)
        self.plate_adapter = Adapter(config.embed_dim, dim)
        self.skip_adapter = Adapter(config.embed_dim, dim)
        self.fbam = FBAM(dim, config.fbam_heads, config.fbam_layers, config.mlp_ratio)
        self.upsampler = GuidedUpsampler(dim, 3, config.upsampler_qk_dim, config.upsampler_heads,
                                         scale=4, window=config.upsampler_window)
        self.decoder = DPTDecoder(dim, config.decoder_dim)
        self.head = MattingHead(config.decoder_dim, config.detail_channels)

    def train(self, mode: bool = True) -> "CineMatte":
        super().train(mode)
        if self.config.freeze_encoder:
            self.encoder.eval()  # frozen: no dropout/statistics change, whatever the mode
        return self

    def encode(self, src: Tensor, bgr: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Both streams through the one encoder in a single call: (frame skip, frame, plate)."""
        batch = int(src.shape[0])
        pair = normalize_rgb(torch.cat([src, bgr], dim=0))
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_encoder):
            skip, last = self.encoder(pair)
        return skip[:batch], last[:batch], last[batch:]

    def forward(self, src: Tensor, bgr: Tensor) -> tuple[Tensor, Tensor]:
        height, width = int(src.shape[-2]), int(src.shape[-1])
        src_p = pad_to_multiple(src, self.config.patch)
        bgr_p = pad_to_multiple(bgr, self.config.patch)
        frame_skip, frame_tokens, plate_tokens = self.encode(src_p, bgr_p)
        frame = self.frame_adapter(frame_tokens)
        plate = self.plate_adapter(plate_tokens)
        batch, dim, h, w = (int(v) for v in frame.shape)
        fused = self.fbam(frame.flatten(2).transpose(1, 2), plate.flatten(2).transpose(1, 2))
        fused = fused.transpose(1, 2).reshape(batch, dim, h, w)
        guided = self.upsampler(fused, src_p)
        features = self.decoder(fused, self.skip_adapter(frame_skip), guided)
        fgr, pha = self.head(features, src_p, bgr_p)
        return fgr[..., :height, :width], pha[..., :height, :width]

    def example_inputs(self, height: int, width: int) -> tuple[Tensor, ...]:
        """Inputs of the right shapes for tracing/export: (src, bgr) of one frame."""
        return torch.rand(1, 3, height, width), torch.rand(1, 3, height, width)
