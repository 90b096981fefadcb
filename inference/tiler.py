"""Run an engine on overlapping square patches that cover only the uncertain band of a frame,
and merge the patches with a Gaussian window: memory bounded at any resolution, no seams, and
no work where the answer is already certain.

The Parallax Portrait Matting recipe: 448 px patches overlapping by 224 px. A patch is handed to
the engine with ``context`` pixels of its surroundings (clipped at the frame), so that an
operation reaching that far sees what it would see on the whole frame; only the patch itself
is merged. Pixels no patch covers keep the ``base`` values (the certain regions).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

PATCH_SIZE = 448
PATCH_OVERLAP = 224

Arrays = Mapping[str, np.ndarray]
BatchFunction = Callable[[Sequence[Arrays]], Sequence[Arrays]]


@dataclass(frozen=True)
class Patch:
    """A patch (y, x, size) and the window it is cut from with its context."""

    y: int
    x: int
    height: int
    width: int
    context_y: int  # the patch's offset inside the window
    context_x: int
    window: tuple[slice, slice]

    @property
    def area(self) -> tuple[slice, slice]:
        return slice(self.y, self.y + self.height), slice(self.x, self.x + self.width)

    @property
    def inner(self) -> tuple[slice, slice]:
        """The patch inside its window."""
        return (slice(self.context_y, self.context_y + self.height),
                slice(self.context_x, self.context_x + self.width))


def patch_starts(length: int, size: int, stride: int) -> list[int]:
    """Start offsets of patches of ``size`` every ``stride`` covering 0..length, the last one
    flush with the end.

    >>> patch_starts(1000, 448, 224)
    [0, 224, 448, 552]
    >>> patch_starts(300, 448, 224)
    [0]
    """
    if length <= size:
        return [0]
    starts = list(range(0, length - size, stride))
    return starts + [length - size]


def band_patches(region: np.ndarray, size: int = PATCH_SIZE, overlap: int = PATCH_OVERLAP,
                 context: int = 0) -> list[Patch]:
    """The patches of the grid that hold at least one pixel of ``region`` (bool (H, W))."""
    if not 0 <= overlap < size:
        raise ValueError(f"patch overlap {overlap} must be in 0..{size - 1}")
    height, width = region.shape
    patches = []
    for y in patch_starts(height, size, size - overlap):
        for x in patch_starts(width, size, size - overlap):
            h, w = min(size, height), min(size, width)
            if not region[y:y + h, x:x + w].any():
                continue
            y0, x0 = max(0, y - context), max(0, x - context)
            y1, x1 = min(height, y + h + context), min(width, x + w + context)
            patches.append(Patch(y, x, h, w, y - y0, x - x0,
                                 (slice(y0, y1), slice(x0, x1))))
    return patches


def gaussian_window(height: int, width: int, sigma_fraction: float = 0.25) -> np.ndarray:
    """A separable Gaussian weight (H, W), highest in the middle, never zero at the border."""
    def axis(n: int) -> np.ndarray:
        t = (np.arange(n, dtype=np.float64) - (n - 1) / 2.0) / max(n * sigma_fraction, 1e-6)
        return np.exp(-0.5 * t * t)

    return np.outer(axis(height), axis(width)).astype(np.float64)


def tiled(function: BatchFunction, inputs: Arrays, region: np.ndarray, base: Arrays,
          size: int = PATCH_SIZE, overlap: int = PATCH_OVERLAP, context: int = 0,
          batch_size: int = 4) -> dict[str, np.ndarray]:
    """``function`` run on batches of patches (dicts of input windows) over ``region``; each
    returns a dict of output windows the size of its input windows. Outputs are merged with a
    Gaussian window; pixels outside every patch keep ``base`` (a dict of full-frame arrays
    with every output's name)."""
    patches = band_patches(region, size, overlap, context)
    merged = {name: np.array(array) for name, array in base.items()}
    if not patches:
        return merged
    # accumulate over the patches' bounding box only (float64: weights far from a patch's
    # centre are small, and the normalised sum must stay exact)
    top, left = min(p.y for p in patches), min(p.x for p in patches)
    bottom = max(p.y + p.height for p in patches)
    right = max(p.x + p.width for p in patches)
    sums = {name: np.zeros((bottom - top, right - left, *array.shape[2:]), np.float64)
            for name, array in base.items()}
    weight = np.zeros((bottom - top, right - left), np.float64)
    for start in range(0, len(patches), max(1, batch_size)):
        batch = patches[start:start + max(1, batch_size)]
        windows = [{name: array[p.window] for name, array in inputs.items()} for p in batch]
        results = function(windows)
        for patch, result in zip(batch, results):
            window = gaussian_window(patch.height, patch.width)
            area = (slice(patch.y - top, patch.y - top + patch.height),
                    slice(patch.x - left, patch.x - left + patch.width))
            weight[area] += window
            for name in sums:
                values = np.asarray(result[name])[patch.inner]
                sums[name][area] += (window if values.ndim == 2 else window[..., None]) * values
    covered = weight > 0
    for name, total in sums.items():
        norm = weight[covered] if total.ndim == 2 else weight[covered][:, None]
        merged[name][top:bottom, left:right][covered] = total[covered] / norm
    return merged


def tiled_or_whole(function: BatchFunction, inputs: Arrays, region: np.ndarray, base: Arrays,
                   size: Optional[int], context: int = 0) -> dict[str, np.ndarray]:
    """``tiled`` with half-overlapping patches of ``size``; the whole frame in one call when
    ``size`` is 0/None or the frame fits one patch."""
    height, width = region.shape
    if not size or (height <= size and width <= size):
        result = function([inputs])[0]
        return {name: np.asarray(result[name]) for name in base}
    return tiled(function, inputs, region, base, size, size // 2, context)
