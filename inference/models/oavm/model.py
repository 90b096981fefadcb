"""OAVM: object-aware video matting with cross-frame guidance, one frame at a time.

    memory = model.init_memory(first_frame, first_mask)   # the coarse mask names the target
    fgr, pha, memory = model(src, memory)                  # every frame, the first included

    src (B, 3, H, W) in 0..1 (any H, W: padded to 16 internally)
      -> MobileNetV3-style encoder: f1 1/2, f2 1/4, f3 1/8, f4 1/16 (1x1 embed to `dim`)
      -> pixel-level memory matching at 1/16: global attention to the first frame's memory,
         local 15 x 15 window attention to the previous frame's memory      (memory.py)
      -> OGCR: the object queries attend to the pixels inside the previous alpha, binarised and
         dilated (cross-frame guided masked attention), then correct and refine them (ogcr.py)
      -> matting decoder with the encoder's skips                            (decoder.py)
    -> fgr (B, 3, H, W), pha (B, 1, H, W), both in 0..1, and the next memory

The memory (``MemoryState``) is explicit state in and out, as RVM's recurrent tensors: the first
frame's keys and values (its mask embedded), the previous frame's keys and values (its predicted
alpha embedded), the previous alpha per 16 x 16 cell (the guidance) and the target's object
queries. ``init_memory`` builds it from the first frame: keys, values, and the object queries
from the query generator's masked attention to the first mask; the previous-frame memory starts
as the first frame's. A 5-D ``src`` (B, T, 3, H, W) runs the frames in order and returns
(B, T, ...) outputs with the last memory.

Training: ``target`` (the ground-truth alpha of the frame) makes the object queries come from the
query generator's masked attention to that alpha on this frame instead of from the memory (the
object query generation the paper trains with); without it, the queries are carried over.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mattekit.inference.models.blocks import pad_to_multiple
from mattekit.inference.models.config import ModelConfig
from mattekit.inference.models.oavm.backbone import MobileNetV3Encoder
from mattekit.inference.models.oavm.decoder import MattingDecoder
from mattekit.inference.models.oavm.memory import PixelMemory
from mattekit.inference.models.oavm.ogcr import OGCR
from mattekit.inference.models.oavm.query import ObjectQueryGenerator

STRIDE = 16  # the memory's grid: one cell per 16 x 16 pixels


@dataclasses.dataclass(frozen=True)
class OavmConfig(ModelConfig):
    """Sizes of an OAVM; the defaults are a MobileNetV3-Large-like encoder (RVM's width)."""

    widths: tuple[int, ...] = (16, 24, 40, 112)   # encoder stages at 1/2, 1/4, 1/8, 1/16
    depths: tuple[int, ...] = (1, 2, 3, 4)        # inverted residuals per stage
    expand_ratio: float = 4.0
    dim: int = 128               # pixel features and object queries at 1/16
    key_dim: int = 64
    value_dim: int = 128
    window: int = 15             # local attention to the previous frame: window x window cells
    queries: int = 16
    heads: int = 4
    query_layers: int = 2        # object query generation
    ogcr_layers: int = 2
    guide_dilation: int = 2      # cells (x16 px) the previous alpha is dilated by
    decoder_channels: tuple[int, ...] = (80, 40, 32, 16)  # at 1/8, 1/4, 1/2, 1
    mlp_ratio: float = 4.0

    @classmethod
    def tiny(cls) -> "OavmConfig":
        """A ~0.05M-parameter network for tests and smoke runs (not for real mattes)."""
        return cls(widths=(8, 12, 16, 24), depths=(1, 1, 1, 1), expand_ratio=2.0, dim=16,
                   key_dim=8, value_dim=16, queries=4, heads=2, query_layers=1, ogcr_layers=1,
                   guide_dilation=1, decoder_channels=(16, 12, 8, 8), mlp_ratio=2.0)


class MemoryState(NamedTuple):
    """OAVM's recurrent state; h, w = the padded frame's size / 16."""

    first_key: Tensor    # (B, key_dim, h, w): the first (key) frame's keys
    first_value: Tensor  # (B, value_dim, h, w): its values, the first mask embedded
    prev_key: Tensor     # (B, key_dim, h, w): the previous frame's keys
    prev_value: Tensor   # (B, value_dim, h, w): its values, its predicted alpha embedded
    prev_alpha: Tensor   # (B, 1, h, w): the previous alpha's largest value in each cell
    queries: Tensor      # (B, queries, dim): the target's object queries


def cell_mean(mask: Tensor) -> Tensor:
    """(B, 1, H, W) -> (B, 1, h, w): the mask's mean over each 16 x 16 cell (padded frame)."""
    return F.avg_pool2d(pad_to_multiple(mask, STRIDE), STRIDE)


def cell_max(mask: Tensor) -> Tensor:
    """(B, 1, H, W) -> (B, 1, h, w): the mask's largest value in each 16 x 16 cell, so a
    binarised cell is set wherever the binarised full-resolution mask has a pixel."""
    return F.max_pool2d(pad_to_multiple(mask, STRIDE), STRIDE)


class OAVM(nn.Module):
    """The network above: ``fgr, pha, memory = OAVM(config)(src, memory)``."""

    architecture = "oavm"
    config_class = OavmConfig
    onnx_input_names = ("src", *(f"{name}_in" for name in MemoryState._fields))
    onnx_output_names = ("fgr", "pha", *(f"{name}_out" for name in MemoryState._fields))

    def __init__(self, config: Optional[OavmConfig] = None):
        super().__init__()
        self.config = config = config or OavmConfig()
        widths = tuple(config.widths)
        self.encoder = MobileNetV3Encoder(widths, config.depths, config.expand_ratio)
        self.embed = nn.Conv2d(widths[3], config.dim, 1)
        self.memory = PixelMemory(config.dim, config.key_dim, config.value_dim, config.window)
        self.query_generator = ObjectQueryGenerator(config.dim, config.queries, config.heads,
                                                    config.query_layers, config.mlp_ratio)
        self.ogcr = OGCR(config.dim, config.heads, config.ogcr_layers, config.guide_dilation,
                         config.mlp_ratio)
        self.decoder = MattingDecoder(config.dim, (widths[2], widths[1], widths[0]),
                                      config.decoder_channels)

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """A padded frame -> (f1, f2, f3, embedded 1/16 features)."""
        f1, f2, f3, f4 = self.encoder(src)
        return f1, f2, f3, self.embed(f4)

    def init_memory(self, first_frame: Tensor, first_mask: Tensor) -> MemoryState:
        """The memory of a target named by `first_mask` (B, 1, H, W), 0..1, on `first_frame`
        (B, 3, H, W); run ``forward`` on every frame afterwards, this one included."""
        _check_mask(first_frame, first_mask, "first_mask")
        features = self.encode(pad_to_multiple(first_frame, STRIDE))[3]
        key = self.memory.encode_key(features)
        value = self.memory.encode_value(features, cell_mean(first_mask))
        coverage = cell_max(first_mask)
        queries = self.query_generator(features, coverage)
        return MemoryState(key, value, key, value, coverage, queries)

    def forward(self, src: Tensor, memory_state: Sequence[Tensor],
                target: Optional[Tensor] = None
                ) -> tuple[Tensor, Tensor, MemoryState]:
        state = MemoryState(*memory_state)
        if src.dim() == 5:
            return self._sequence(src, state, target)
        return self._step(src, state, target)

    def _step(self, src: Tensor, state: MemoryState, target: Optional[Tensor]
              ) -> tuple[Tensor, Tensor, MemoryState]:
        height, width = int(src.shape[-2]), int(src.shape[-1])
        src_p = pad_to_multiple(src, STRIDE)
        f1, f2, f3, features = self.encode(src_p)
        grid = (int(features.shape[-2]), int(features.shape[-1]))
        for name in ("prev_key", "prev_value", "prev_alpha"):
            have = tuple(int(v) for v in getattr(state, name).shape[-2:])
            if have != grid:
                raise ValueError(f"the memory's {name} is {have} cells, the frame needs {grid} "
                                 f"({height}x{width} px): start a new memory for this size")
        key = self.memory.encode_key(features)
        pixels = self.memory(features, key, state.first_key, state.first_value, state.prev_key,
                             state.prev_value)
        queries = state.queries
        if target is not None:
            _check_mask(src, target, "target")
            queries = self.query_generator(features, cell_max(target))
        pixels, queries, _ = self.ogcr(pixels, queries, state.prev_alpha)
        fgr, pha = self.decoder(pixels, f3, f2, f1, src_p)
        value = self.memory.encode_value(features, F.avg_pool2d(pha, STRIDE))
        new_state = MemoryState(state.first_key, state.first_value, key, value,
                                F.max_pool2d(pha, STRIDE), queries)
        return fgr[..., :height, :width], pha[..., :height, :width], new_state

    def _sequence(self, src: Tensor, state: MemoryState, target: Optional[Tensor]
                  ) -> tuple[Tensor, Tensor, MemoryState]:
        fgrs, phas = [], []
        for t in range(int(src.shape[1])):
            fgr, pha, state = self._step(src[:, t], state, None if target is None
                                         else target[:, t])
            fgrs.append(fgr)
            phas.append(pha)
        return torch.stack(fgrs, dim=1), torch.stack(phas, dim=1), state

    def example_inputs(self, height: int, width: int
                       ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Inputs of the right shapes for tracing/export: (src, memory tensors) of one frame."""
        with torch.no_grad():
            mask = torch.zeros(1, 1, height, width)
            mask[..., height // 4:3 * height // 4, width // 4:3 * width // 4] = 1.0
            state = self.init_memory(torch.rand(1, 3, height, width), mask)
        return torch.rand(1, 3, height, width), tuple(state)


def _check_mask(frame: Tensor, mask: Union[Tensor, None], name: str) -> None:
    if mask is None or mask.dim() != frame.dim() or int(mask.shape[-3]) != 1 \
            or tuple(mask.shape[-2:]) != tuple(frame.shape[-2:]) \
            or int(mask.shape[0]) != int(frame.shape[0]):
        shape = None if mask is None else tuple(mask.shape)
        raise ValueError(f"{name} must be (B, 1, H, W) like the frame {tuple(frame.shape)}, "
                         f"got {shape}")
