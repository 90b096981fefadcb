"""The background-matte default engine: the clean plate decides, RVM settles what it cannot.

Works in linear Rec.709 (the compositing equation holds in linear light); the RVM prior sees an
sRGB-encoded copy. Per frame (not temporal): each frame stands on its own clean-plate evidence.
Outputs alpha, the un-premultiplied foreground and a `confidence.Y` layer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from mattekit import ocio
from mattekit.inference.cleanplate import clean_plate_matte, downsized, resized_to
from mattekit.inference.engines.rvm import MatteResult, RvmEngine
from mattekit.inference.errors import EngineError

ENGINE_VERSION = "cleanplate-4"  # bump when a change alters the output (invalidates caches)
PRIOR_SIZE = 320  # long side the RVM prior runs at (a coarse "which regions are the subject")


class BackgroundMatteEngine:
    """Clean-plate registration, noise/shadow-aware difference, known-background alpha solve."""

    temporal = False
    param_limits = {"max_shift": (0.0, 1.0), "shadow_tolerance": (0.0, 1.0),
                    "prior_strength": (0.0, None), "edge_softness": (0.0, None)}
    clip_input = False

    def __init__(self, spec: Any, model: Any, model_file: Optional[Path], device: str,
                 params: Mapping[str, Any]):
        self.name = spec.name
        self.input_space = spec.input_space
        self.version = ENGINE_VERSION
        self.params = dict(params)
        prior_params = {"downsample_target": 512, "cut_threshold": 0.0}
        self.prior = RvmEngine(spec, model, model_file, device, prior_params)
        self.model_hash = self.prior.model_hash
        self.cuts_detected = 0
        self._to_srgb = ocio.Converter(ocio.load_config(ocio.PINNED_CONFIG_URI),
                                       self.input_space, ocio.ENGINE_SRGB)

    def reset(self) -> None:
        self.prior.reset()

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Stateless: nothing to restore."""

    def _prior(self, src: np.ndarray) -> np.ndarray:
        """RVM's alpha, computed at <= PRIOR_SIZE px and resampled: the prior only settles
        which regions belong to the subject; the edges come from the clean plate."""
        small = downsized(src, PRIOR_SIZE)
        srgb = self._to_srgb.apply(small)
        np.clip(srgb, 0.0, 1.0, out=srgb)
        self.prior.reset()
        return resized_to(self.prior.process(srgb).alpha, src.shape[:2])

    def process(self, src: np.ndarray, inputs: Optional[Mapping[str, np.ndarray]] = None
                ) -> MatteResult:
        """Matte one frame; `inputs` must hold "clean_plate" (same size) and may hold "mask"."""
        if not inputs or inputs.get("clean_plate") is None:
            raise EngineError("background-matte needs a clean plate (--clean-plate)")
        prior = self._prior(src) if self.params["prior_strength"] > 0 else None
        result = clean_plate_matte(
            src, inputs["clean_plate"], prior=prior, mask=inputs.get("mask"),
            register=bool(self.params["register"]), max_shift=float(self.params["max_shift"]),
            shadow_tolerance=float(self.params["shadow_tolerance"]),
            prior_strength=float(self.params["prior_strength"]),
            edge_softness=float(self.params["edge_softness"]))
        return MatteResult(alpha=result.alpha, foreground=result.foreground,
                           layers={"confidence.Y": result.confidence})
