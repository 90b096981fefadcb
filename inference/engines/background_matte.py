"""The background-matte default engine: the clean plate decides, RVM settles what it cannot.

Works in linear Rec.709 (the compositing equation holds in linear light); the RVM prior sees an
sRGB-encoded copy. Per frame (not temporal): each frame stands on its own clean-plate evidence.
Outputs alpha, the un-premultiplied foreground and a `confidence.Y` layer.
"""
from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from mattekit.inference.cleanplate import clean_plate_matte
from mattekit.inference.engines.prior import PriorEngine
from mattekit.inference.engines.rvm import MatteResult
from mattekit.inference.errors import EngineError

ENGINE_VERSION = "cleanplate-10"  # bump when a change alters the output (invalidates caches)
PRIOR_SIZE = 320  # long side the RVM prior runs at (a coarse "which regions are the subject")


class BackgroundMatteEngine(PriorEngine):
    """Clean-plate registration, noise/shadow-aware difference, known-background alpha solve."""

    version = ENGINE_VERSION
    prior_size = PRIOR_SIZE
    param_limits = {"max_shift": (0.0, 1.0), "shadow_tolerance": (0.0, 1.0),
                    "prior_strength": (0.0, None), "edge_softness": (0.0, None),
                    "noise_level": (0.0, None)}

    def process(self, src: np.ndarray, inputs: Optional[Mapping[str, np.ndarray]] = None
                ) -> MatteResult:
        """Matte one frame; `inputs` must hold "clean_plate" (same size) and may hold "mask"."""
        if not inputs or inputs.get("clean_plate") is None:
            raise EngineError("background-matte needs a clean plate (--clean-plate)")
        prior = self.prior.alpha(src) if self.params["prior_strength"] > 0 else None
        result = clean_plate_matte(
            src, inputs["clean_plate"], prior=prior, mask=inputs.get("mask"),
            register=bool(self.params["register"]), max_shift=float(self.params["max_shift"]),
            shadow_tolerance=float(self.params["shadow_tolerance"]),
            prior_strength=float(self.params["prior_strength"]),
            edge_softness=float(self.params["edge_softness"]),
            noise_level=float(self.params["noise_level"]))
        return MatteResult(alpha=result.alpha, foreground=result.foreground,
                           layers={"confidence.Y": result.confidence})
