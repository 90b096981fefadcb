"""Full-resolution refinement of a coarse alpha inside the key region K (sparse 4K refinement).

The detail alpha A_d comes from a confidence-weighted colour guided filter (He et al. 2013, the
local linear model alpha = a·I + b of closed-form matting, fitted per window): the full-resolution
plate is the guide, the upsampled coarse alpha the target, and each pixel's weight is how sure
the coarse alpha is there (near 0 or 1). The linear model is therefore fitted on the confident
pixels on both sides of an edge and carried across the blurred band, which is where the upsample
lost the detail. The fusion is exactly A = K·A_d + (1-K)·A_c.

Every function works on one rectangle of the frame (a strip of tiles plus its margin), so the
sparse path touches only the tiles that meet K and the dense path is the same code on one
rectangle covering the frame: both give the same alpha on K (tests check it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import cv2
import numpy as np

from mattekit.inference.cleanplate import resized_to
from mattekit.inference.keyregion import TILE, Region, active_tiles, tile_strips

CONFIDENCE_FLOOR = 0.05  # weight of a pixel whose coarse alpha is 0.5 (the guess is kept weakly)
CONFIDENCE_POWER = 6     # steep: only nearly-decided pixels fit the linear model (best Grad)


@dataclass(frozen=True)
class RefineSettings:
    """How the detail alpha is computed: guided-filter radius (full-resolution pixels) and
    regularisation, and the radius of the foreground colour estimate."""

    radius: int = 16
    epsilon: float = 1e-5
    foreground_radius: int = 16

    @property
    def margin(self) -> int:
        """Pixels of context a rectangle needs so its interior is exact (two box passes)."""
        return 2 * self.radius + 1


def box(image: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window, borders reflected (as the dense frame's edge)."""
    return cv2.boxFilter(image, -1, (2 * radius + 1, 2 * radius + 1),
                         borderType=cv2.BORDER_REFLECT)


def confidence(coarse: np.ndarray) -> np.ndarray:
    """How far the coarse alpha is from undecided: 1 at 0 or 1, CONFIDENCE_FLOOR at 0.5."""
    sure = np.abs(2.0 * coarse - 1.0) ** CONFIDENCE_POWER
    return (CONFIDENCE_FLOOR + (1.0 - CONFIDENCE_FLOOR) * sure).astype(np.float32)


def weighted_guided_filter(guide: np.ndarray, target: np.ndarray, weight: np.ndarray,
                           radius: int, epsilon: float) -> np.ndarray:
    """Colour guided filter whose per-window linear fit alpha = a·I + b is weighted by
    `weight`: guide (h, w, 3), target and weight (h, w); returns (h, w) float32."""
    w = weight.astype(np.float32)
    mean_w = box(w, radius) + 1e-6

    def wmean(x: np.ndarray) -> np.ndarray:
        return box(x * (w if x.ndim == 2 else w[..., None]), radius) / (
            mean_w if x.ndim == 2 else mean_w[..., None])

    mean_i = wmean(guide)
    mean_p = wmean(target)
    cov_ip = wmean(guide * target[..., None]) - mean_i * mean_p[..., None]
    # the weighted covariance of the guide, the 6 distinct entries of the 3x3 matrix
    pairs = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
    var = {(i, j): wmean(guide[..., i] * guide[..., j]) - mean_i[..., i] * mean_i[..., j]
           for i, j in pairs}
    sigma = np.empty(target.shape + (3, 3), np.float32)
    for i, j in pairs:
        sigma[..., i, j] = var[(i, j)]
        sigma[..., j, i] = var[(i, j)]
    sigma += epsilon * np.eye(3, dtype=np.float32)
    a = np.linalg.solve(sigma, cov_ip[..., None])[..., 0]
    b = mean_p - np.einsum("...c,...c->...", a, mean_i)
    return (np.einsum("...c,...c->...", box(a, radius), guide) + box(b, radius)).astype(
        np.float32)


def detail_alpha(guide: np.ndarray, coarse_up: np.ndarray, settings: RefineSettings
                 ) -> np.ndarray:
    """A_d on one rectangle: the guided refinement of the upsampled coarse alpha, in 0..1."""
    refined = weighted_guided_filter(guide, coarse_up, confidence(coarse_up),
                                     settings.radius, settings.epsilon)
    return np.clip(refined, 0.0, 1.0)


def fused(key: np.ndarray, detail: np.ndarray, coarse_up: np.ndarray) -> np.ndarray:
    """A = K·A_d + (1-K)·A_c.

    >>> fused(np.array([0.0, 0.5, 1.0]), np.ones(3), np.zeros(3)).tolist()
    [0.0, 0.5, 1.0]
    """
    return (key * detail + (1.0 - key) * coarse_up).astype(np.float32)


def blur_fusion_foreground(image: np.ndarray, alpha: np.ndarray, radius: int) -> np.ndarray:
    """Foreground colour F from I = aF + (1-a)B by blur fusion (Germer et al. 2021): local
    alpha-weighted means of foreground and background, then one correction step; two levels
    (coarse radius, then 3 px)."""
    fg = image.copy()
    bg = image.copy()
    a = alpha[..., None]
    for r in (radius, 3):
        blurred_a = box(alpha, r)[..., None]
        fg_blur = box(fg * a, r) / (blurred_a + 1e-5)
        bg_blur = box(bg * (1.0 - a), r) / (1.0 - blurred_a + 1e-5)
        residual = image - a * fg_blur - (1.0 - a) * bg_blur
        fg = np.clip(fg_blur + a * residual, 0.0, 1.0)
        bg = np.clip(bg_blur + (1.0 - a) * residual, 0.0, 1.0)
    return fg.astype(np.float32)


@dataclass
class Refined:
    """One frame refined: alpha, foreground (engine space), K at full resolution, the
    rectangles that were computed and the share of the frame they cover."""

    alpha: np.ndarray
    foreground: np.ndarray
    key: np.ndarray
    regions: list[Region]
    detail: dict[Region, np.ndarray]


def refine_frame(src: np.ndarray, coarse_up: np.ndarray, key: np.ndarray,
                 settings: RefineSettings, dense: bool = False,
                 temporal: Optional["TemporalContext"] = None) -> Refined:
    """Refine a full-resolution frame: src (H, W, 3) guide in 0..1, coarse_up and key (H, W).

    Sparse (default): only the strips of tiles that meet K are computed, each with the margin
    its filters need, so time and memory follow |K|. Dense: the same refinement on the whole
    frame (the benchmark's reference). `temporal` blends in the previous frame's detail alpha.
    """
    shape = (src.shape[0], src.shape[1])
    alpha = coarse_up.copy()
    foreground = src.copy()
    regions = ([Region(0, shape[0], 0, shape[1])] if dense
               else tile_strips(active_tiles(key), shape))
    details: dict[Region, np.ndarray] = {}
    for region in regions:
        outer = region.grown(settings.margin, shape)
        guide = src[outer.slices]
        detail_outer = detail_alpha(guide, coarse_up[outer.slices], settings)
        inner = region.within(outer)
        if temporal is not None:
            detail_outer[inner] = temporal.blend(region, guide[inner], detail_outer[inner],
                                                 key[region.slices])
        details[region] = detail_outer[inner]
        combined_outer = fused(key[outer.slices], detail_outer, coarse_up[outer.slices])
        alpha[region.slices] = combined_outer[inner]
        fg = blur_fusion_foreground(guide, combined_outer, settings.foreground_radius)
        foreground[region.slices] = fg[inner]
    return Refined(alpha=alpha, foreground=foreground, key=key, regions=regions,
                   detail=details)


def refine(src: np.ndarray, coarse: np.ndarray, key_coarse: np.ndarray,
           settings: RefineSettings, dense: bool = False) -> Refined:
    """Upsample the coarse alpha and K to the frame, then refine (see `refine_frame`)."""
    shape = (src.shape[0], src.shape[1])
    return refine_frame(src, resized_to(coarse, shape), resized_to(key_coarse, shape), settings,
                        dense=dense)


Memory = dict[tuple[int, int], tuple[np.ndarray, ...]]


class TemporalContext:
    """Temporal context over clips of `clip_length` frames (μMatting's 4-frame clips): within a
    clip, where a pixel is in the key region of both the previous and the current frame
    (K ∩ K_next of the pair) and the plate there has not changed beyond the noise, the detail
    alpha is the running mean of the clip's detail alphas; elsewhere it is the frame's own.
    Only the tiles of K are remembered, so the state stays sparse."""

    def __init__(self, clip_length: int = 4, tolerance: float = 0.03, tile: int = TILE):
        self.clip_length = clip_length
        self.tolerance = tolerance
        self.tile = tile
        self.position = 0  # index of the current frame in its clip
        self.previous: Memory = {}
        self.current: Memory = {}

    def reset(self) -> None:
        self.position = 0
        self.previous = {}
        self.current = {}

    def next_frame(self) -> None:
        """Advance to the next frame: what this frame computed becomes the previous frame's
        memory; at a clip boundary the memory is dropped."""
        self.position = (self.position + 1) % self.clip_length
        self.previous = {} if self.position == 0 else self.current
        self.current = {}

    def blend(self, region: Region, guide: np.ndarray, detail: np.ndarray, key: np.ndarray
              ) -> np.ndarray:
        """The detail alpha of `region` (a strip of whole tiles) with the clip's earlier frames
        averaged in where the context holds; remembers this frame's tiles for the next one."""
        out = detail.copy()
        row = region.y0 // self.tile
        for x in range(0, region.x1 - region.x0, self.tile):
            cols = slice(x, x + self.tile)
            index = (row, (region.x0 + x) // self.tile)
            g, d, k = guide[:, cols], detail[:, cols], key[:, cols]
            count = np.ones(d.shape, np.float32)
            memory = self.previous.get(index)
            if memory is not None and memory[0].shape == g.shape:
                prev_guide, prev_detail, prev_key, prev_count = memory
                same = np.max(np.abs(g - prev_guide), axis=-1) < self.tolerance
                context = same & (prev_key > 0) & (k > 0)
                count = np.where(context, prev_count + 1.0, 1.0).astype(np.float32)
                d = np.where(context, prev_detail + (d - prev_detail) / count, d)
                out[:, cols] = d
            self.current[index] = (g.copy(), d.astype(np.float32), k.copy(), count)
        return out

    def state(self) -> dict[str, np.ndarray]:
        """The memory for the next frame, as plain arrays (the render cache stores it beside
        each frame); call after `next_frame`."""
        state = {"position": np.array(self.position, np.int64)}
        for n, (index, (g, d, k, c)) in enumerate(sorted(self.previous.items())):
            state[f"tile{n}"] = np.array(index, np.int64)
            state[f"tile{n}_guide"], state[f"tile{n}_detail"] = g, d
            state[f"tile{n}_key"], state[f"tile{n}_count"] = k, c
        return state

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Resume after the frame whose `state()` this is."""
        self.position = int(state["position"])
        self.previous = {}
        n = 0
        while f"tile{n}" in state:
            index = tuple(int(v) for v in state[f"tile{n}"])
            self.previous[(index[0], index[1])] = tuple(
                np.asarray(state[f"tile{n}_{part}"], np.float32)
                for part in ("guide", "detail", "key", "count"))
            n += 1
        self.current = {}
