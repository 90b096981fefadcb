"""Premultiplied foreground in the plate's own colour space from an engine's matte.

Engines see a display-referred copy of the plate (e.g. sRGB-encoded and clipped to 0..1), so
their foreground estimate cannot carry scene-linear values above 1. Where alpha is 1 the
foreground is the plate itself; only in the soft band (0 < alpha < 1) does the engine's
correction apply, and it is applied as a residual in the plate's space:
F = plate + (to_input(engine_fg) - to_input(engine_src)). Highlights therefore survive.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

# below 1e-3 the engine's correction changes alpha * F by less than half-float precision
SOFT_EPSILON = 1e-3


def soft_band(alpha: np.ndarray, epsilon: float = SOFT_EPSILON) -> np.ndarray:
    """Pixels whose alpha is fractional: epsilon < alpha < 1 - epsilon."""
    return (alpha > epsilon) & (alpha < 1.0 - epsilon)


def gather_pixels(rgb: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(N, 3) copy of the pixels at flat `index` of an (H, W, 3) array, without copying the
    whole frame when the array is a channel-planar view (as network outputs are)."""
    planar = rgb.transpose(2, 0, 1)
    if planar.flags.c_contiguous:
        return planar.reshape(3, -1)[:, index].T
    return np.ascontiguousarray(rgb).reshape(-1, 3)[index]


def premultiplied_foreground(
    plate: np.ndarray,
    engine_src: np.ndarray,
    engine_fg: np.ndarray,
    alpha: np.ndarray,
    to_input: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """alpha * F with F = plate outside the soft band and plate + engine residual inside it.

    plate: (H, W, 3) in the input space; engine_src / engine_fg: (H, W, 3) in the engine space;
    alpha: (H, W); to_input converts (N, 3) engine-space pixels to the input space.

    >>> p = np.full((1, 2, 3), 4.0, np.float32); a = np.array([[1.0, 0.0]], np.float32)
    >>> premultiplied_foreground(p, p, p, a, lambda x: x)[..., 0].tolist()
    [[4.0, 0.0]]
    """
    flat_alpha = alpha.reshape(-1)
    index = np.flatnonzero(soft_band(flat_alpha))
    corrected = None
    if index.size:
        n = index.size
        both = np.concatenate([gather_pixels(engine_fg, index),
                               gather_pixels(engine_src, index)]).astype(np.float32, copy=False)
        converted = to_input(both)
        corrected = gather_pixels(plate, index) + (converted[:n] - converted[n:])
    result = np.multiply(plate, alpha[..., None], dtype=np.float32)
    if corrected is not None:
        result.reshape(-1, 3)[index] = corrected * flat_alpha[index][:, None]
    return result
