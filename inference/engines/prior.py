"""RVM as the semantic prior of a per-frame engine: a coarse "which regions are the subject".

The engines that use it work in linear light; RVM sees an sRGB-encoded copy at a reduced size
(the prior only settles regions; the edges come from the engine's own cue), a fresh recurrent
state per frame.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from mattekit import ocio
from mattekit.inference.cleanplate import downsized, resized_to
from mattekit.inference.engines.rvm import RvmEngine


class RvmPrior:
    """RVM's alpha for a linear frame, computed at <= ``size`` px and resampled to it."""

    def __init__(self, spec: Any, model: Any, model_file: Optional[Path], device: str,
                 size: int):
        self.size = size
        self.engine = RvmEngine(spec, model, model_file, device,
                                {"downsample_target": 512, "cut_threshold": 0.0})
        self.model_hash = self.engine.model_hash
        self._to_srgb = ocio.Converter(ocio.load_config(ocio.PINNED_CONFIG_URI),
                                       spec.input_space, ocio.ENGINE_SRGB)

    def reset(self) -> None:
        self.engine.reset()

    def alpha(self, src: np.ndarray) -> np.ndarray:
        small = downsized(src, self.size)
        srgb = self._to_srgb.apply(small)
        np.clip(srgb, 0.0, 1.0, out=srgb)
        self.engine.reset()
        return resized_to(self.engine.process(srgb).alpha, src.shape[:2])


class PriorEngine:
    """A per-frame engine in linear light with the RVM prior: nothing carried between frames.
    Subclasses set ``version`` and ``prior_size`` and define ``process``."""

    temporal = False
    clip_input = False
    version = ""
    prior_size = 320

    def __init__(self, spec: Any, model: Any, model_file: Optional[Path], device: str,
                 params: Mapping[str, Any]):
        self.name = spec.name
        self.input_space = spec.input_space
        self.params = dict(params)
        self.prior = RvmPrior(spec, model, model_file, device, self.prior_size)
        self.model_hash = self.prior.model_hash
        self.cuts_detected = 0

    def reset(self) -> None:
        self.prior.reset()

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Stateless: nothing to restore."""
