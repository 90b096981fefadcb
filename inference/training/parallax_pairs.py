"""Parallax pairs with noisy motion: two views of one composite for ParallaxMatte training.

Parallax Portrait Matting learns from a frame and a second view where the camera moved: the
subject (near) and the background (far) shift by different amounts, and the network is given
a motion estimate (optical flow) that is never exact. This makes such a pair from one
foreground layer and one background, with exact ground truth for both views:

    second view = foreground shifted by `subject_shift` over background shifted by
                  `background_shift` (the two differ: that difference is the parallax)
    motion      = the true per-pixel displacement from the frame to the second view (the
                  subject's shift where the frame's alpha > 0.5, the background's elsewhere),
                  plus a random global bias and Gaussian noise: what a flow estimate gives

Shifts are whole pixels, so background pixels of the second view are exactly the frame's
background pixels moved (reflected at the borders): no resampling blur to learn from.

    pair = parallax_pair(fg, alpha, background, np.random.default_rng(0))
    pair.frame, pair.second_view, pair.alpha, pair.second_alpha, pair.motion (H, W, 2: dy, dx)
"""
from __future__ import annotations

import dataclasses

import numpy as np

from mattekit.inference.models.augment import composite


@dataclasses.dataclass
class ParallaxPair:
    frame: np.ndarray         # (H, W, 3): the view to matte
    second_view: np.ndarray   # (H, W, 3): the same scene from the moved camera
    alpha: np.ndarray         # (H, W): the subject in the frame
    second_alpha: np.ndarray  # (H, W): the subject in the second view
    true_motion: np.ndarray   # (H, W, 2): exact displacement frame -> second view (dy, dx)
    motion: np.ndarray        # (H, W, 2): true_motion + bias + noise, the network's input
    subject_shift: tuple[int, int]     # (dy, dx)
    background_shift: tuple[int, int]  # (dy, dx)


def shifted(plane: np.ndarray, dy: int, dx: int, reflect: bool) -> np.ndarray:
    """`plane` moved by whole pixels (dy down, dx right): what enters is reflected from the
    border (`reflect`, a background extends past the frame) or zero (a layer does not)."""
    height, width = plane.shape[:2]
    pad = ((abs(dy), abs(dy)), (abs(dx), abs(dx))) + ((0, 0),) * (plane.ndim - 2)
    padded = np.pad(plane, pad, mode="symmetric" if reflect else "constant")
    top, left = abs(dy) - dy, abs(dx) - dx
    return padded[top:top + height, left:left + width]


def parallax_pair(foreground: np.ndarray, alpha: np.ndarray, background: np.ndarray,
                  rng: np.random.Generator, max_shift: int = 16, min_parallax: int = 2,
                  motion_bias: float = 1.0, motion_noise: float = 1.0) -> ParallaxPair:
    """A frame and its second view (see the module docstring); all planes the background's
    size. The background moves by up to `max_shift` px per axis; the subject by the
    background's shift plus a parallax of `min_parallax`..`max_shift` / 2 px in a random
    direction. The motion estimate is off by a bias drawn within +-`motion_bias` px and
    Gaussian noise of sigma `motion_noise` px."""
    height, width = alpha.shape
    if background.shape[:2] != (height, width) or foreground.shape[:2] != (height, width):
        raise ValueError(f"foreground {foreground.shape[:2]}, alpha {alpha.shape} and "
                         f"background {background.shape[:2]} must be one size")
    drawn = rng.integers(-max_shift, max_shift + 1, size=2)
    back = (int(drawn[0]), int(drawn[1]))
    magnitude = float(rng.uniform(min_parallax, max(min_parallax, max_shift / 2)))
    angle = float(rng.uniform(0.0, 2.0 * np.pi))
    parallax = (int(round(magnitude * np.sin(angle))), int(round(magnitude * np.cos(angle))))
    if parallax == (0, 0):
        parallax = (0, min_parallax)
    subject = (back[0] + parallax[0], back[1] + parallax[1])
    frame = composite(foreground, alpha, background)
    second_alpha = shifted(alpha, *subject, reflect=False)
    second = composite(shifted(foreground, *subject, reflect=False), second_alpha,
                       shifted(background, *back, reflect=True))
    true_motion = np.where((alpha > 0.5)[..., None], np.array(subject, np.float32),
                           np.array(back, np.float32)).astype(np.float32)
    noise = rng.normal(0.0, motion_noise, true_motion.shape) if motion_noise > 0 else 0.0
    bias = rng.uniform(-motion_bias, motion_bias, size=2) if motion_bias > 0 else 0.0
    motion = (true_motion + bias + noise).astype(np.float32)
    return ParallaxPair(frame=frame, second_view=second.astype(np.float32),
                        alpha=alpha.astype(np.float32), second_alpha=second_alpha,
                        true_motion=true_motion, motion=motion, subject_shift=subject,
                        background_shift=back)
