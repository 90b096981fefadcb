"""Training-sample composition for background matting, with the distractor augmentation.

Numpy only (H, W, 3) float32 images and (H, W) alphas in 0..1, so a data loader can run it in
worker processes without torch.

The distractor augmentation (CineMatte, capture-stage matting): another foreground, one that
belongs to the background (a stand, a crew member, a prop on set), is composited into the
background of the frame AND into the clean plate, at the same place. The subject is composited
over that, and the ground-truth alpha stays the subject's own: the network must learn that
whatever the clean plate also shows is background, however much it looks like a subject.
A distractor built with ``in_frame=False`` goes into the clean plate only (something that stood
there when the plate was shot and left before the take): the frame differs from the plate
there, and it is still background, so a difference alone must not make foreground.

    sample = compose_sample(fg, alpha, background,
                            distractors=[Distractor(fg2, alpha2, top=10, left=40)])
    sample.frame        alpha*fg + (1-alpha)*(background with the distractor)
    sample.clean_plate  the clean background with the distractor at the same place
    sample.alpha        = alpha (the distractor is not in it)
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Distractor:
    """A foreground layer (fg (h, w, 3), alpha (h, w)) placed with its top-left at (top, left);
    it may hang over the canvas edges (the part outside is cropped). `in_frame`: also in the
    frame's background (True), or in the clean plate only (False)."""

    foreground: np.ndarray
    alpha: np.ndarray
    top: int
    left: int
    in_frame: bool = True


@dataclasses.dataclass
class TrainingSample:
    frame: np.ndarray          # (H, W, 3): the plate to matte
    clean_plate: np.ndarray    # (H, W, 3): the captured background
    alpha: np.ndarray          # (H, W): ground truth, the subject only
    foreground: np.ndarray     # (H, W, 3): ground-truth foreground colour
    distractor_alpha: np.ndarray  # (H, W): where distractors are in the clean plate


def composite(foreground: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    """alpha * F + (1 - alpha) * B, the compositing equation (float32)."""
    a = alpha[..., None].astype(np.float32)
    return (a * foreground + (1.0 - a) * background).astype(np.float32)


def place_layer(layer: Distractor, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The layer on an (height, width) canvas: (foreground (H, W, 3), alpha (H, W)), 0 outside."""
    fg = np.zeros((height, width, 3), np.float32)
    alpha = np.zeros((height, width), np.float32)
    lh, lw = layer.alpha.shape[:2]
    top, left = max(layer.top, 0), max(layer.left, 0)
    bottom, right = min(layer.top + lh, height), min(layer.left + lw, width)
    if bottom <= top or right <= left:
        return fg, alpha
    src = (slice(top - layer.top, bottom - layer.top), slice(left - layer.left, right - layer.left))
    fg[top:bottom, left:right] = layer.foreground[src]
    alpha[top:bottom, left:right] = layer.alpha[src]
    return fg, alpha


def add_distractors(background: np.ndarray, distractors: Sequence[Distractor]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The background with every distractor composited in, in order, and their combined alpha."""
    height, width = background.shape[:2]
    result = background.astype(np.float32, copy=True)
    coverage: np.ndarray = np.zeros((height, width), np.float32)
    for layer in distractors:
        fg, alpha = place_layer(layer, height, width)
        result = composite(fg, alpha, result)
        coverage = (alpha + (1.0 - alpha) * coverage).astype(np.float32)
    return result, coverage


def compose_sample(foreground: np.ndarray, alpha: np.ndarray, background: np.ndarray,
                   distractors: Sequence[Distractor] = (),
                   clean_background: Optional[np.ndarray] = None) -> TrainingSample:
    """A training sample; `clean_background` is the plate as captured separately (exposure,
    noise, a misregistration: whatever a real capture adds), by default the same background.
    Distractors go into both backgrounds at the same place (into the clean plate only when not
    `in_frame`); the alpha is the subject's."""
    if foreground.shape[:2] != alpha.shape or background.shape[:2] != alpha.shape:
        raise ValueError(f"foreground {foreground.shape}, alpha {alpha.shape} and background "
                         f"{background.shape} must share one height and width")
    clean = background if clean_background is None else clean_background
    if clean.shape != background.shape:
        raise ValueError(f"clean background {clean.shape} differs from background "
                         f"{background.shape}")
    plate_bg, _ = add_distractors(background, [d for d in distractors if d.in_frame])
    clean_plate, coverage = add_distractors(clean, distractors)
    return TrainingSample(frame=composite(foreground, alpha, plate_bg), clean_plate=clean_plate,
                          alpha=alpha.astype(np.float32, copy=True),
                          foreground=foreground.astype(np.float32, copy=True),
                          distractor_alpha=coverage)


def random_distractors(pool: Sequence[tuple[np.ndarray, np.ndarray]], height: int, width: int,
                       rng: np.random.Generator, probability: float = 0.5,
                       max_count: int = 2, plate_only: float = 0.0) -> list[Distractor]:
    """With `probability`, 1..max_count layers drawn from `pool` ((fg, alpha) pairs, e.g. other
    training foregrounds), each at a random place that keeps at least half of its height and
    width on the canvas, each in the clean plate only with probability `plate_only`."""
    if not pool or rng.random() >= probability:
        return []
    chosen: list[Distractor] = []
    for _ in range(int(rng.integers(1, max_count + 1))):
        fg, alpha = pool[int(rng.integers(len(pool)))]
        lh, lw = alpha.shape[:2]
        top = int(rng.integers(-(lh // 2), max(height - lh // 2, -(lh // 2) + 1)))
        left = int(rng.integers(-(lw // 2), max(width - lw // 2, -(lw // 2) + 1)))
        chosen.append(Distractor(fg, alpha, top, left, in_frame=bool(rng.random() >= plate_only)))
    return chosen
