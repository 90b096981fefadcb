"""The parallax-matte default engine: a second view with camera parallax decides the edge.

Works in linear Rec.709 (the compositing equation holds in linear light); the RVM prior sees an
sRGB-encoded copy. Per frame (not temporal). The second view arrives as ``inputs["reference"]``
(the renderer reads it from the Reference input, or from the plate ``reference_offset`` frames
away). The trimap comes from ``inputs["mask"]`` (a rough roto) when given, else from the RVM
prior (people only) joined by what moves unlike the background between the two views (the
parallax of a nearer subject; ``motion_trimap``). Outputs alpha, the
un-premultiplied foreground, and ``confidence.Y`` (how much of alpha the second view decided)
and ``trimap.Y`` layers.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from mattekit.inference.engines.prior import PriorEngine
from mattekit.inference.engines.rvm import MatteResult
from mattekit.inference.errors import EngineError, InputWarning
from mattekit.inference.parallax import (
    DenseFlow,
    ParallaxMatte,
    SingleFrame,
    dense_flow,
    motion_subject,
    parallax_flows,
    single_frame_matte,
    trimap_from_alpha,
    two_view_matte,
)

ENGINE_VERSION = "parallax-1"  # bump when a change alters the output (invalidates caches)
PRIOR_SIZE = 512  # long side the RVM prior runs at
IDENTICAL = 1e-6  # largest difference between two views still called the same frame
NO_HELP = 0.05  # highest confidence of a second view that decided nothing (warned about)


class ParallaxMatteEngine(PriorEngine):
    """Trimap, DIS flow with the unknown band filled from its certain neighbours, background-
    and foreground-aligned warps, two-observation alpha solve with a single-frame fallback."""

    version = ENGINE_VERSION
    prior_size = PRIOR_SIZE
    param_limits = {"trimap_band": (1, None), "flow_size": (64, None), "patch_size": (0, None)}

    def __init__(self, spec: Any, model: Any, model_file: Optional[Path], device: str,
                 params: Mapping[str, Any]):
        super().__init__(spec, model, model_file, device, params)
        band = self.params["trimap_band"]
        if isinstance(band, bool) or not isinstance(band, (int, float)) or band < 1:
            raise EngineError(f"{self.name}: trimap_band must be a number of pixels >= 1, "
                              f"not {band!r}")
        self.band = int(round(band))
        self.flow_size = int(self.params["flow_size"])
        self.motion_trimap = bool(self.params["motion_trimap"])
        self.patch_size = int(self.params["patch_size"])
        if self.patch_size != 0 and self.patch_size < 64:
            raise EngineError(f"{self.name}: patch_size must be 0 (whole frame) or at least "
                              f"64 pixels, not {self.patch_size}")

    def single_frame(self, src: np.ndarray, mask: Optional[np.ndarray] = None,
                     subject: Optional[np.ndarray] = None) -> tuple[SingleFrame, np.ndarray]:
        """The one-frame estimate (the fallback) and the trimap: from the mask when given, else
        from the RVM prior joined by ``subject`` (what moves unlike the background)."""
        if mask is not None:
            trimap = trimap_from_alpha(np.asarray(mask, np.float32), self.band)
            return single_frame_matte(src, trimap, None), trimap
        prior = self.prior.alpha(src)
        rough = prior if subject is None else np.maximum(prior, subject)
        trimap = trimap_from_alpha(rough, self.band)
        # the prior's own soft edge where it saw the subject; elsewhere a colour solve
        seen = trimap_from_alpha(prior, self.band) > 0.01
        return single_frame_matte(src, trimap, prior, seen), trimap

    def process(self, src: np.ndarray, inputs: Optional[Mapping[str, np.ndarray]] = None
                ) -> MatteResult:
        """Matte one frame; ``inputs`` must hold "reference" (the second view, same size) and
        may hold "mask"."""
        reference = None if not inputs else inputs.get("reference")
        if reference is None:
            raise EngineError("parallax-matte needs a second view: a Reference input "
                              "(--reference) or a plate sequence and --reference-offset")
        mask = inputs.get("mask") if inputs else None
        two_views = reference.shape == src.shape
        if not two_views:
            warnings.warn(f"the reference is {reference.shape[1]}x{reference.shape[0]}, the "
                          f"plate {src.shape[1]}x{src.shape[0]}: single-frame result",
                          InputWarning, stacklevel=2)
        elif float(np.max(np.abs(reference - src))) < IDENTICAL:
            two_views = False  # the same frame twice: no parallax, the single-frame result
        motion: Optional[DenseFlow] = (dense_flow(src, reference, self.flow_size) if two_views
                                       else None)
        subject = None
        if motion is not None and mask is None and self.motion_trimap:
            subject = motion_subject(motion, (src.shape[0], src.shape[1]))
        single, trimap = self.single_frame(src, mask, subject)
        matte = ParallaxMatte(single.alpha, single.foreground, np.zeros_like(single.alpha))
        if not np.any(trimap > 0.01):
            warnings.warn("no subject found: RVM sees no person"
                          + (" and nothing moves unlike the background" if two_views else "")
                          + "; connect a Mask (a rough roto of the subject)", InputWarning,
                          stacklevel=2)
        elif two_views:
            flows = (None if motion is None else
                     parallax_flows(src, reference, trimap, self.flow_size, motion))
            if flows is None:
                warnings.warn("no usable optical flow between the plate and its reference "
                              "(too small, or no consistent motion): single-frame result",
                              InputWarning, stacklevel=2)
            else:
                matte = two_view_matte(src, reference, trimap, flows, single,
                                       self.patch_size)
                if float(matte.confidence.max()) < NO_HELP:
                    warnings.warn("the second view adds nothing to this frame (no parallax "
                                  "between the views, or a textureless plate): single-frame "
                                  "result", InputWarning, stacklevel=2)
        return MatteResult(alpha=matte.alpha, foreground=matte.foreground,
                           layers={"confidence.Y": matte.confidence, "trimap.Y": trimap})
