"""Flicker suppression: motion-compensated blending of a matte's soft band with the previous one.

A frame-by-frame prior wobbles in its soft band (hair, motion-blurred and semi-transparent
edges) even where nothing moves: the dtSSD of the video-matting papers measures exactly that.
Here the previous output alpha, warped onto the current frame by optical flow, is blended into
the current alpha where (1) the matte is soft, (2) the motion is small, and (3) the two agree
roughly; where the motion is large (fast edges) or the two disagree (occlusion, a new object,
a warp error), the current alpha is kept as it is, so nothing is smeared.

    alpha' = alpha + w * (warped_previous - alpha),
    w = strength * soft * max(0, 1 - motion / motion_limit) * max(0, 1 - |diff| / diff_limit)
"""
from __future__ import annotations

import numpy as np

#: A pixel is in the soft band when min(alpha, 1 - alpha) exceeds this (in either frame).
SOFT_EPSILON = 0.01
#: Differences of alpha above this are real changes, not flicker (no blending at all).
DIFF_LIMIT = 0.3


def soft_band(alpha: np.ndarray, warped_previous: np.ndarray) -> np.ndarray:
    """Where either matte is neither 0 nor 1, as float32 0/1."""
    soft_now = np.minimum(alpha, 1.0 - alpha) > SOFT_EPSILON
    soft_before = np.minimum(warped_previous, 1.0 - warped_previous) > SOFT_EPSILON
    return (soft_now | soft_before).astype(np.float32)


def blend_weight(alpha: np.ndarray, warped_previous: np.ndarray, motion: np.ndarray,
                 strength: float, motion_limit: float) -> np.ndarray:
    """Per-pixel weight of the warped previous alpha (float32 in 0..strength); ``motion`` is
    the flow magnitude in pixels, ``motion_limit`` where the blending has faded to zero."""
    if strength <= 0 or motion_limit <= 0:
        return np.zeros(alpha.shape, np.float32)
    still = np.clip(1.0 - motion / motion_limit, 0.0, 1.0)
    agree = np.clip(1.0 - np.abs(alpha - warped_previous) / DIFF_LIMIT, 0.0, 1.0)
    return (strength * soft_band(alpha, warped_previous) * still * agree).astype(np.float32)


def suppress_flicker(alpha: np.ndarray, warped_previous: np.ndarray, motion: np.ndarray,
                     strength: float, motion_limit: float) -> np.ndarray:
    """The current alpha with its soft band blended toward the motion-compensated previous
    alpha (see the module docstring); float32 in 0..1.

    >>> a = np.full((1, 2), 0.45, np.float32); prev = np.full((1, 2), 0.55, np.float32)
    >>> out = suppress_flicker(a, prev, np.array([[0.0, 9.0]], np.float32), 0.6, 4.0)
    >>> [round(float(v), 3) for v in out[0]]   # still: 0.6 * (1 - 0.1 / 0.3) of the way; fast: kept
    [0.49, 0.45]
    """
    weight = blend_weight(alpha, warped_previous, motion, strength, motion_limit)
    out = alpha + weight * (warped_previous - alpha)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
