"""Object guidance for video matting: keep the target, drop everything else the prior found.

The OAVM idea (memory of the first frame + the previous frame's mask, dilated and binarised, as
cross-frame guidance) done with classical maths on top of a matting prior's alpha:

- ``binarised`` / ``dilated``: the previous frame's target mask, grown by how far it may have
  moved, is the *guide* of the current frame;
- ``split_components``: the prior's foreground, cut into connected components, and which of them
  belong to the target (those overlapping the guide);
- ``territory``: the part of the frame that belongs to the kept components (nearer to them than
  to any rejected one, within reach), so soft edges and thin strands go with their component;
- ``appearance`` / ``similarity`` / ``best_match``: a colour histogram of the target from its
  key masks (the long-term memory), used to find the target again after it was lost.

All masks are (H, W) bool at the guidance resolution; images sRGB-encoded 0..1 (H, W, 3).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

#: Alpha above which a pixel belongs to a foreground component (soft parts stay connected).
COMPONENT_ALPHA = 0.1
#: A component is the target's when at least this fraction of it lies inside the guide (a
#: neighbour the guide only grazes is not).
MIN_OVERLAP = 0.1
#: Histogram bins of the appearance memory: L*, a*, b*.
APPEARANCE_BINS = (4, 8, 8)
APPEARANCE_SIZE = int(np.prod(APPEARANCE_BINS))


def binarised(alpha: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """alpha > threshold, as bool."""
    return np.asarray(alpha) > threshold


def dilated(mask: np.ndarray, radius: float) -> np.ndarray:
    """``mask`` grown by ``radius`` pixels (Euclidean distance), as bool."""
    if radius <= 0 or not mask.any():
        return mask.copy()
    distance = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    return distance <= radius


def downsized_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A full-resolution matte as a bool mask of ``shape``: area-averaged, then > 0.5; a mask
    too thin to survive that keeps every low-res pixel it touches (never lost by resampling)."""
    height, width = shape
    small = cv2.resize(np.asarray(mask, np.float32), (width, height), interpolation=cv2.INTER_AREA)
    result = small > 0.5
    if not result.any() and np.any(np.asarray(mask) > 0.5):
        result = small > 0.0
    return result


@dataclass
class Components:
    """The prior's foreground split into the target's components and the others."""

    kept: np.ndarray       # bool (H, W): pixels of components kept as the target
    rejected: np.ndarray   # bool (H, W): pixels of components dropped
    labels: np.ndarray     # int32 (H, W): component id per pixel, 0 = background
    kept_ids: list[int]


def split_components(alpha: np.ndarray, guide: np.ndarray,
                     min_overlap: float = MIN_OVERLAP) -> Components:
    """Connected components (8-neighbourhood) of ``alpha > COMPONENT_ALPHA``; those with at
    least ``min_overlap`` of their area inside ``guide`` are kept.

    >>> alpha = np.zeros((5, 9), np.float32); alpha[1:4, 1:3] = 1; alpha[1:4, 6:8] = 1
    >>> guide = np.zeros((5, 9), bool); guide[2, 2] = True
    >>> kept = split_components(alpha, guide).kept
    >>> int(kept[:, :4].sum()), int(kept[:, 5:].sum())
    (6, 0)
    """
    count, labels = cv2.connectedComponents((alpha > COMPONENT_ALPHA).astype(np.uint8),
                                            connectivity=8, ltype=cv2.CV_32S)
    areas = np.bincount(labels.ravel(), minlength=count)
    inside = np.bincount(labels[guide].ravel(), minlength=count)
    kept_ids = [i for i in range(1, count) if inside[i] >= min_overlap * areas[i]]
    return components_from(labels, kept_ids)


def components_from(labels: np.ndarray, kept_ids: list[int]) -> Components:
    """A ``Components`` for a label image and the ids kept."""
    kept = np.isin(labels, kept_ids) if kept_ids else np.zeros(labels.shape, bool)
    rejected = (labels > 0) & ~kept
    return Components(kept=kept, rejected=rejected, labels=labels, kept_ids=list(kept_ids))


def territory(kept: np.ndarray, rejected: np.ndarray, reach: float) -> np.ndarray:
    """Pixels that belong to the kept components: within ``reach`` of them and at least as
    near to them as to any rejected component (a Voronoi split between target and others)."""
    if not kept.any():
        return np.zeros(kept.shape, bool)
    to_kept = cv2.distanceTransform((~kept).astype(np.uint8), cv2.DIST_L2, 5)
    zone = to_kept <= reach
    if rejected.any():
        to_rejected = cv2.distanceTransform((~rejected).astype(np.uint8), cv2.DIST_L2, 5)
        zone &= to_kept <= to_rejected
    return zone


def _lab(srgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(srgb, dtype=np.float32), cv2.COLOR_RGB2Lab)


def appearance(srgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A normalised L*a*b* colour histogram (``APPEARANCE_SIZE`` bins, float32) of the pixels
    of ``mask``: what the target looks like, independent of its shape and position."""
    lab = _lab(srgb)[mask]
    if lab.size == 0:
        return np.zeros(APPEARANCE_SIZE, np.float32)
    ranges = ((0.0, 100.0), (-100.0, 100.0), (-100.0, 100.0))
    histogram, _ = np.histogramdd(lab, bins=APPEARANCE_BINS, range=ranges)
    flat = histogram.ravel().astype(np.float32)
    return flat / max(float(flat.sum()), 1.0)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Histogram intersection of two normalised histograms: 1 = same colours, 0 = none shared.

    >>> similarity(np.array([0.5, 0.5, 0.0]), np.array([0.0, 0.5, 0.5]))
    0.5
    """
    return float(np.minimum(a, b).sum())


def best_match(srgb: np.ndarray, labels: np.ndarray, candidates: list[int],
               memory: np.ndarray, memory_area: float, threshold: float,
               min_area_ratio: float = 0.2) -> Optional[int]:
    """The candidate component that looks most like the memory (a (K, bins) bank of key-mask
    histograms; the best key counts), if its similarity reaches ``threshold`` and its area is at
    least ``min_area_ratio`` of the remembered target's area; else None."""
    best: Optional[int] = None
    best_score = threshold
    for label in candidates:
        mask = labels == label
        if mask.sum() < min_area_ratio * memory_area:
            continue
        descriptor = appearance(srgb, mask)
        score = max(similarity(descriptor, key) for key in memory)
        if score >= best_score:
            best, best_score = label, score
    return best



#: What the prior sees outside the view while a target is tracked: a neutral mid grey.
NEUTRAL = 0.5


def masked_view(src: np.ndarray, view: np.ndarray, feather: float) -> np.ndarray:
    """The frame with everything outside ``view`` (bool, any lower resolution) faded to
    neutral grey over about ``feather`` view pixels: a second object elsewhere cannot draw the
    prior's attention (the role of OAVM's masked attention).

    >>> src = np.ones((4, 8, 3), np.float32); view = np.zeros((2, 4), bool); view[:, :2] = True
    >>> out = masked_view(src, view, 0.0)
    >>> float(out[0, 0, 0]), float(out[0, 7, 0])
    (1.0, 0.5)
    """
    soft: np.ndarray = view.astype(np.float32)
    if feather > 0:
        soft = cv2.GaussianBlur(soft, (0, 0), feather)
    height, width = src.shape[:2]
    soft = cv2.resize(soft, (width, height), interpolation=cv2.INTER_LINEAR)[..., None]
    return (src * soft + NEUTRAL * (1.0 - soft)).astype(np.float32)


def overlap_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks (1.0 when both are empty).

    >>> a = np.array([True, True, False]); overlap_iou(a, np.array([True, False, False]))
    0.5
    """
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union
