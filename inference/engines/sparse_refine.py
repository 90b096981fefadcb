"""The sparse-4k-refine default engine: full-resolution alpha, computed only where it is soft.

A coarse alpha (RVM at `coarse_size` px, or any node's alpha fed to the Coarse input) is
upsampled bilinearly to A_c; the key region K (coarse alpha strictly between the thresholds,
dilated, feathered, upsampled) marks where the upsample lost detail; only the tiles that meet K
are refined at full resolution against the plate (inference/sparse_refine.py), with temporal
context over 4-frame clips; then A = K·A_d + (1-K)·A_c. Outputs alpha, the foreground and the
`keyregion.Y` layer (K at full resolution).

Temporal: the RVM coarse pass is recurrent and the clip memory carries the previous frame's
detail tiles, so frames are fed in order and the state is cached beside each frame.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from mattekit.inference.cleanplate import downsized, resized_to
from mattekit.inference.engines.rvm import MatteResult, RvmEngine
from mattekit.inference.errors import EngineError
from mattekit.inference.keyregion import feathered_key
from mattekit.inference.sparse_refine import RefineSettings, TemporalContext, refine_frame

ENGINE_VERSION = "sparse-refine-2"  # bump when a change alters the output (invalidates caches)
KEY_LAYER = "keyregion.Y"
TEMPORAL_PREFIX = "clip_"
MASK_COVERAGE = 0.5  # share of a Mask's area RVM must find for its alpha to be the coarse one


def _number(params: Mapping[str, Any], name: str, minimum: float,
            maximum: Optional[float] = None) -> float:
    """A numeric parameter, checked: an EngineError naming it when out of range."""
    value = params[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum \
            or (maximum is not None and value > maximum):
        bound = f"between {minimum:g} and {maximum:g}" if maximum is not None \
            else f"at least {minimum:g}"
        raise EngineError(f"sparse-4k-refine: parameter {name} is {value!r}; it must be {bound}")
    return float(value)


def mask_guided_coarse(rvm_alpha: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The coarse alpha with a Mask: RVM's alpha inside the mask when RVM finds the target
    there (at least MASK_COVERAGE of the mask's area), else the mask itself (RVM knows people
    only; a prop's rough Roto is then the coarse alpha the refinement sharpens)."""
    inside = float(np.sum(np.minimum(rvm_alpha, mask)))
    if inside >= MASK_COVERAGE * float(np.sum(mask)) and inside > 0:
        return np.minimum(rvm_alpha, mask)
    return mask


class SparseRefineEngine:
    """Coarse alpha -> key region -> tile-sparse full-resolution refinement -> fusion."""

    temporal = True
    param_limits = {"coarse_size": (64, None), "low_threshold": (0.0, 1.0),
                    "high_threshold": (0.0, 1.0), "band_width": (0, None), "feather": (0, None),
                    "radius": (1, None), "clip_length": (1, None)}

    def __init__(self, spec: Any, model: Any, model_file: Optional[Path], device: str,
                 params: Mapping[str, Any]):
        self.name = spec.name
        self.input_space = spec.input_space
        self.version = ENGINE_VERSION
        self.coarse_size = int(_number(params, "coarse_size", 64))
        self.low = _number(params, "low_threshold", 0.0, 1.0)
        self.high = _number(params, "high_threshold", 0.0, 1.0)
        if self.low >= self.high:
            raise EngineError(f"sparse-4k-refine: low_threshold ({self.low:g}) must be below "
                              f"high_threshold ({self.high:g})")
        self.band_width = _number(params, "band_width", 0.0)
        self.feather = min(_number(params, "feather", 0.0), self.band_width)
        self.settings = RefineSettings(radius=int(_number(params, "radius", 1)))
        self.temporal_context = TemporalContext(int(_number(params, "clip_length", 1, 255)))
        rvm_params = {"downsample_target": self.coarse_size, "cut_threshold": 0.25}
        self.rvm = RvmEngine(spec, model, model_file, device, rvm_params)
        self.model_hash = self.rvm.model_hash
        self.cuts_detected = 0

    def reset(self) -> None:
        """Forget everything: RVM's state and the clip memory (start of a shot)."""
        self.rvm.reset()
        self.temporal_context.reset()

    def discontinuity(self) -> None:
        """The next frame does not follow the last one: start a new clip and a fresh RVM."""
        self.reset()

    def state(self) -> dict[str, np.ndarray]:
        state = dict(self.rvm.state())
        state.update({TEMPORAL_PREFIX + k: v for k, v in self.temporal_context.state().items()})
        return state

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.rvm.load_state(state)
        self.temporal_context.load_state({k[len(TEMPORAL_PREFIX):]: v for k, v in state.items()
                                          if k.startswith(TEMPORAL_PREFIX)})

    def coarse_alpha(self, src: np.ndarray, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The coarse alpha at whatever resolution it comes: the Coarse input, else RVM at
        `coarse_size` (inside the Mask when one is given)."""
        given = inputs.get("coarse")
        if given is not None:
            return np.clip(given, 0.0, 1.0).astype(np.float32, copy=False)
        before = self.rvm.cuts_detected
        alpha = self.rvm.process(downsized(src, self.coarse_size)).alpha
        self.cuts_detected += self.rvm.cuts_detected - before
        mask = inputs.get("mask")
        if mask is not None:
            alpha = mask_guided_coarse(alpha, downsized(mask, self.coarse_size))
        return alpha

    def key_region(self, coarse: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """K at full resolution, from the coarse alpha seen at `coarse_size`."""
        small = downsized(coarse, self.coarse_size)
        scale = max(small.shape) / max(shape)  # coarse pixels per full-resolution pixel
        key = feathered_key(small, self.low, self.high, self.band_width * scale,
                            self.feather * scale)
        return np.clip(resized_to(key, shape), 0.0, 1.0)

    def process(self, src: np.ndarray, inputs: Optional[Mapping[str, np.ndarray]] = None
                ) -> MatteResult:
        """Matte one frame in order. `src`: (H, W, 3) sRGB-encoded 0..1 at full resolution;
        `inputs` may hold "coarse" (h, w) alpha of the plate's aspect at any resolution, and
        "mask" (H, W)."""
        inputs = inputs or {}
        shape = (src.shape[0], src.shape[1])
        coarse = self.coarse_alpha(src, inputs)
        coarse_up = resized_to(coarse, shape)
        key = self.key_region(coarse, shape)
        refined = refine_frame(src, coarse_up, key, self.settings,
                               temporal=self.temporal_context)
        self.temporal_context.next_frame()
        return MatteResult(alpha=refined.alpha, foreground=refined.foreground,
                           layers={KEY_LAYER: key})
