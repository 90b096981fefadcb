"""The key region K of sparse 4K refinement: where full-resolution work is worth doing.

μMatting's observation: only the soft boundary band (coarse alpha strictly between 0 and 1)
loses detail when a low-resolution alpha is upsampled, so only there is the frame refined at
full resolution. K is that band found on the coarse alpha, dilated so the refinement sees both
sides of the edge, feathered so the fusion A = K·A_d + (1-K)·A_c has no seam, and upsampled.
The work is then cut into strips of tiles that intersect K (tile-sparse execution).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

TILE = 64  # full-resolution tile side: the unit of sparse work


@dataclass(frozen=True)
class Region:
    """A rectangle of the full-resolution frame, rows y0:y1, columns x0:x1."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def area(self) -> int:
        return (self.y1 - self.y0) * (self.x1 - self.x0)

    def grown(self, margin: int, shape: tuple[int, int]) -> "Region":
        """The rectangle grown by `margin` on every side, clipped to a frame of `shape`."""
        return Region(max(0, self.y0 - margin), min(shape[0], self.y1 + margin),
                      max(0, self.x0 - margin), min(shape[1], self.x1 + margin))

    def within(self, outer: "Region") -> tuple[slice, slice]:
        """Slices that cut this rectangle out of an array covering `outer`."""
        return (slice(self.y0 - outer.y0, self.y1 - outer.y0),
                slice(self.x0 - outer.x0, self.x1 - outer.x0))

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


def uncertain_band(coarse: np.ndarray, low: float, high: float) -> np.ndarray:
    """Pixels whose coarse alpha is strictly between `low` and `high` (bool).

    >>> uncertain_band(np.array([[0.0, 0.5, 1.0]]), 0.02, 0.98).tolist()
    [[False, True, False]]
    """
    return (coarse > low) & (coarse < high)


def disk(radius: int) -> np.ndarray:
    """A disk structuring element of `radius` pixels (radius 0: a single pixel)."""
    size = 2 * radius + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def feathered_key(coarse: np.ndarray, low: float, high: float, dilation: float,
                  feather: float) -> np.ndarray:
    """K on the coarse grid, float32 in 0..1: the uncertain band dilated by `dilation` pixels,
    ramping down to 0 over its outer `feather` pixels (distances in coarse pixels).

    The band itself (and `dilation - feather` pixels around it) stays at K = 1, so the fusion
    takes the refined alpha there unchanged; the ramp lies where the coarse alpha is flat.
    """
    band = uncertain_band(coarse, low, high).astype(np.uint8)
    if not band.any():
        return np.zeros(coarse.shape, np.float32)
    outside = 1 - band
    # distance of every pixel to the band (0 inside it)
    distance = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    inner = max(0.0, dilation - feather)
    if feather <= 0:
        return (distance <= dilation).astype(np.float32)
    key = 1.0 - (distance - inner) / feather
    return np.clip(key, 0.0, 1.0).astype(np.float32)


def active_tiles(key: np.ndarray, tile: int = TILE) -> np.ndarray:
    """(rows, cols) bool grid: the tiles of the full-resolution K that hold any K > 0."""
    height, width = key.shape
    rows, cols = -(-height // tile), -(-width // tile)
    padded = np.zeros((rows * tile, cols * tile), np.float32)
    padded[:height, :width] = key
    return padded.reshape(rows, tile, cols, tile).max(axis=(1, 3)) > 0


def tile_strips(active: np.ndarray, shape: tuple[int, int], tile: int = TILE) -> list[Region]:
    """Runs of consecutive active tiles along each tile row, as full-resolution rectangles
    (one region per run, so neighbouring tiles share their margins instead of repeating them).

    >>> [r.area for r in tile_strips(np.array([[True, True, False, True]]), (64, 256))]
    [8192, 4096]
    """
    regions: list[Region] = []
    for row, flags in enumerate(active):
        y0, y1 = row * tile, min(shape[0], (row + 1) * tile)
        col = 0
        while col < len(flags):
            if not flags[col]:
                col += 1
                continue
            start = col
            while col < len(flags) and flags[col]:
                col += 1
            regions.append(Region(y0, y1, start * tile, min(shape[1], col * tile)))
    return regions


def key_fraction(key: np.ndarray) -> float:
    """|K| / frame: the share of the frame whose refined alpha is used (K > 0)."""
    return float(np.count_nonzero(key > 0)) / key.size
