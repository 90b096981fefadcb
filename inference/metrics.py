"""Alpha-matte quality metrics as the matting papers report them: MAD, MSE, Grad, Conn, dtSSD.

One pure function per metric, on float alpha mattes in [0, 1] of shape ``(H, W)``. Every
function returns the metric's *raw* value in its natural unit; the tables of the papers print
it scaled, and ``METRICS`` keeps that scale next to each function (``Metric.report``), so
``mattekit eval`` prints the numbers of the RobustVideoMatting / VideoMatte240K tables:

=======  ======================================================  =========  ==================
name     raw value                                               reported   reference
=======  ======================================================  =========  ==================
MAD      mean |pred - gt|                                        x 1e3      RVM evaluate_lr.py
MSE      mean (pred - gt)^2                                      x 1e3      RVM evaluate_lr.py
Grad     sum (|grad pred| - |grad gt|)^2, Gaussian-derivative    / 1e3      Rhemann et al. 2009;
         filters sigma 1.4 on min-max-normalised mattes                     Adobe DIM MATLAB code
                                                                            (compute_gradient_
                                                                            loss.m); RVM
Conn     sum |phi(pred) - phi(gt)|, thresholds 0.1 .. 1.0,       / 1e3      same (compute_
         4-connected largest component, 0.15 cut-off                        connectivity_error.m)
dtSSD    sqrt(mean (d pred/dt - d gt/dt)^2) per frame pair,      x 1e2      Erofeev et al. 2015;
         averaged over the clip's frames (first frame = 0)                  RVM evaluate_lr.py
=======  ======================================================  =========  ==================

"RVM" is PeterL1n/RobustVideoMatting ``evaluation/evaluate_lr.py`` (the low-resolution script,
the one with Conn); its high-resolution twin skips the min-max normalisation in Grad, which
only matters for mattes that do not span 0..1.

A trimap restricts the spatial metrics as Adobe's Deep Image Matting evaluation code does:
``mask`` (True = counted, usually ``unknown_region(trimap)``) selects the pixels that MAD and MSE
average over and that Grad and Conn sum over; the gradients and the connectivity map are still
computed on the whole image, so the border of the unknown region sees real neighbours. dtSSD
takes no mask (RVM evaluates it on the whole frame).

Arithmetic is float64 whatever the input type, so 4K sums do not lose digits.

>>> gt = np.array([[0.0, 0.5], [1.0, 1.0]])
>>> pred = np.array([[0.0, 0.3], [1.0, 0.8]])
>>> round(mad(pred, gt), 6), round(mse(pred, gt), 6)
(0.1, 0.02)
>>> [(m.label, round(m.report(mad(pred, gt)), 3)) for m in METRICS if m.name == "mad"]
[('MAD', 100.0)]
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import cv2
import numpy as np

#: Reported value = raw value x scale (the units of the RVM / VideoMatte240K tables).
MAD_SCALE = 1e3
MSE_SCALE = 1e3
GRAD_SCALE = 1e-3
CONN_SCALE = 1e-3
DTSSD_SCALE = 1e2

#: Standard deviation of the Gaussian-derivative filters of Grad (Rhemann et al. 2009).
GRAD_SIGMA = 1.4
#: Filter support: the Gaussian is cut where it falls below this fraction of its peak value
#: times sqrt(2 pi) sigma (the reference's ``epsilon = 1e-2``); sigma 1.4 gives a 9x9 filter.
GRAD_EPSILON = 1e-2
#: Connectivity thresholds t_i = i / CONN_STEPS, i = 1 .. CONN_STEPS (0.1, 0.2, ..., 1.0).
CONN_STEPS = 10
#: A pixel counts as connected while alpha - l stays below this (phi's cut-off, ``theta``).
CONN_CUTOFF = 0.15


def _as_matte(array: np.ndarray, what: str) -> np.ndarray:
    matte = np.asarray(array, dtype=np.float64)
    if matte.ndim != 2:
        raise ValueError(f"{what} must be an (H, W) alpha matte, got shape {matte.shape}")
    return matte


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = _as_matte(pred, "pred"), _as_matte(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ in shape")
    return pred, gt


def _checked_mask(mask: Optional[np.ndarray], shape: tuple[int, ...]) -> Optional[np.ndarray]:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise ValueError(f"mask must be a boolean array (True = counted), got {mask.dtype}")
    if mask.shape != shape:
        raise ValueError(f"mask {mask.shape} and the mattes {shape} differ in shape")
    return mask


def _masked_mean(values: np.ndarray, mask: Optional[np.ndarray]) -> float:
    if mask is None:
        return float(values.mean())
    if not mask.any():
        raise ValueError("mask selects no pixels: a mean over an empty region is undefined")
    return float(values[mask].mean())


def _masked_sum(values: np.ndarray, mask: Optional[np.ndarray]) -> float:
    return float(values.sum() if mask is None else values[mask].sum())


def unknown_region(trimap: np.ndarray) -> np.ndarray:
    """The trimap's unknown region as a boolean mask: values strictly between 0 and 1.

    A trimap is 0 (background), 1 (foreground) and anything else unknown; the 8-bit
    convention 0 / 128 / 255 becomes 0 / 0.502 / 1 once divided by 255.

    >>> unknown_region(np.array([[0.0, 128 / 255], [1.0, 0.5]])).tolist()
    [[False, True], [False, True]]
    """
    trimap = _as_matte(trimap, "trimap")
    return (trimap > 0.0) & (trimap < 1.0)


def mad(pred: np.ndarray, gt: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Mean absolute difference, raw (a fraction of full alpha); reported x ``MAD_SCALE``.

    Symmetric; 0 only for identical mattes. With ``mask``, the mean over the masked pixels.

    >>> mad(np.array([[0.0, 1.0]]), np.array([[0.5, 1.0]]))
    0.25
    """
    pred, gt = _pair(pred, gt)
    return _masked_mean(np.abs(pred - gt), _checked_mask(mask, gt.shape))


def mse(pred: np.ndarray, gt: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Mean squared difference, raw; reported x ``MSE_SCALE``.

    Symmetric; 0 only for identical mattes. With ``mask``, the mean over the masked pixels.

    >>> mse(np.array([[0.0, 1.0]]), np.array([[0.5, 1.0]]))
    0.125
    """
    pred, gt = _pair(pred, gt)
    return _masked_mean((pred - gt) ** 2, _checked_mask(mask, gt.shape))


def gaussian_derivative_filters(sigma: float = GRAD_SIGMA,
                                epsilon: float = GRAD_EPSILON) -> tuple[np.ndarray, np.ndarray]:
    """The 1-D factors ``(derivative, smoothing)`` of the reference's separable x-gradient filter.

    The reference builds the 2-D filter ``h[i, j] = g(i - r) * g'(j - r)`` (rows smooth, columns
    differentiate) over ``r = ceil(sigma * sqrt(-2 ln(sqrt(2 pi) sigma epsilon)))`` and scales
    it to unit L2 norm; the y filter is its transpose. The outer product of the two factors
    returned here is exactly that filter (each factor has unit norm).

    >>> derivative, smoothing = gaussian_derivative_filters()
    >>> len(derivative), round(float(np.outer(smoothing, derivative)[4, 3]), 4)
    (9, 0.3154)
    """
    radius = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * epsilon)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    smoothing = np.exp(-x ** 2 / (2 * sigma ** 2)) / (sigma * math.sqrt(2 * math.pi))
    derivative = -x * smoothing / sigma ** 2
    return derivative / np.linalg.norm(derivative), smoothing / np.linalg.norm(smoothing)


def _normalised(matte: np.ndarray) -> np.ndarray:
    """Min-max normalised to 0..1 (MATLAB ``mat2gray``); a constant matte becomes 0."""
    low, high = float(matte.min()), float(matte.max())
    if high <= low:
        return np.zeros_like(matte)
    return (matte - low) / (high - low)


def gradient_magnitude(matte: np.ndarray, sigma: float = GRAD_SIGMA) -> np.ndarray:
    """|grad| of a matte through the Gaussian-derivative filters, borders replicated.

    This is the reference's ``gaussgradient`` magnitude, without normalising ``matte`` first.
    """
    derivative, smoothing = gaussian_derivative_filters(sigma)
    matte = _as_matte(matte, "matte")
    grad_x = cv2.sepFilter2D(matte, cv2.CV_64F, derivative, smoothing,
                             borderType=cv2.BORDER_REPLICATE)
    grad_y = cv2.sepFilter2D(matte, cv2.CV_64F, smoothing, derivative,
                             borderType=cv2.BORDER_REPLICATE)
    return np.hypot(grad_x, grad_y)


def grad(pred: np.ndarray, gt: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Gradient error, raw: sum of squared differences of gradient magnitudes; reported / 1e3.

    Each matte is min-max normalised to 0..1, then filtered with first derivatives of a
    Gaussian (sigma ``GRAD_SIGMA``, see ``gaussian_derivative_filters``). Symmetric; invariant
    to ``a * matte + b`` (a > 0) of either input, through the normalisation. With ``mask``, the
    sum over the masked pixels.

    >>> step = np.zeros((5, 8)); step[:, 4:] = 1
    >>> grad(step, step), round(grad(np.zeros((5, 8)), step), 4)   # sum over all 40 pixels
    (0.0, 97.9536)
    """
    pred, gt = _pair(pred, gt)
    mask = _checked_mask(mask, gt.shape)
    error = (gradient_magnitude(_normalised(pred)) - gradient_magnitude(_normalised(gt))) ** 2
    return _masked_sum(error, mask)


def _connectivity_levels(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """The level l of each pixel: the last threshold at which it was still connected.

    For t_i = i / CONN_STEPS, the source region at t_i is the largest 4-connected component of
    ``(pred >= t_i) & (gt >= t_i)``; a pixel first missing from it at t_i gets l = t_{i-1}, a
    pixel in every source region gets l = 1. Equal-sized largest components: the one OpenCV
    labels first (the first met in row-major order), as in RVM's code.
    """
    levels = np.full(gt.shape, -1.0)
    for i in range(1, CONN_STEPS + 1):
        threshold = i / CONN_STEPS
        both = ((pred >= threshold) & (gt >= threshold)).astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(both, connectivity=4,
                                                                   ltype=cv2.CV_32S)
        if count > 1:
            largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            newly_lost = (levels == -1.0) & (labels != largest)
        else:
            newly_lost = levels == -1.0
        levels[newly_lost] = (i - 1) / CONN_STEPS
    levels[levels == -1.0] = 1.0
    return levels


def _phi(matte: np.ndarray, levels: np.ndarray) -> np.ndarray:
    distance = matte - levels
    return 1.0 - distance * (distance >= CONN_CUTOFF)


def conn(pred: np.ndarray, gt: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Connectivity error, raw: sum of |phi(pred) - phi(gt)|; reported / 1e3.

    phi(a) = 1 - d * [d >= 0.15] with d = a - l, where l is the pixel's connectivity level
    from ``(pred >= t) & (gt >= t)`` over t = 0.1 .. 1.0 (see ``_connectivity_levels``). A pixel
    whose alpha stays within 0.15 of the level where it lost touch with the main blob counts as
    connected (phi = 1). Symmetric; with ``mask``, the sum over the masked pixels.

    >>> gt = np.zeros((3, 5)); gt[:, 0:2] = 1.0
    >>> pred = gt.copy(); pred[1, 3] = 0.5   # a detached speck, cut off at level 0
    >>> conn(pred, gt), conn(gt, gt)
    (0.5, 0.0)
    """
    pred, gt = _pair(pred, gt)
    mask = _checked_mask(mask, gt.shape)
    levels = _connectivity_levels(pred, gt)
    return _masked_sum(np.abs(_phi(pred, levels) - _phi(gt, levels)), mask)


def dtssd_pair(pred: np.ndarray, pred_previous: np.ndarray, gt: np.ndarray,
               gt_previous: np.ndarray) -> float:
    """dtSSD of one frame against the one before, raw: sqrt(mean((dpred - dgt)^2)).

    dpred = pred - pred_previous, dgt = gt - gt_previous; reported x ``DTSSD_SCALE``.

    >>> dtssd_pair(np.full((2, 2), 0.5), np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 2)))
    0.5
    """
    pred, gt = _pair(pred, gt)
    pred_previous, gt_previous = _pair(pred_previous, gt_previous)
    if pred_previous.shape != gt.shape:
        raise ValueError(f"previous frame {pred_previous.shape} and this frame {gt.shape} "
                         "differ in shape")
    change = (pred - pred_previous) - (gt - gt_previous)
    return math.sqrt(float(np.mean(change ** 2)))


def dtssd(preds: Iterable[np.ndarray], gts: Iterable[np.ndarray]) -> float:
    """dtSSD of a clip, raw: the mean over its T frames of ``dtssd_pair``, the first counting 0.

    That is RVM's evaluation convention (it appends 0 for frame 0 and averages every frame), so
    the value is (T - 1) / T times the mean over the T - 1 frame pairs. Needs at least 2 frames
    of equal shape; frames are consumed one at a time (generators welcome). Symmetric under
    swapping ``preds`` and ``gts``; a constant offset or a still clip gives 0.

    >>> still, moving = [np.zeros((2, 2))] * 3, [np.zeros((2, 2)), np.ones((2, 2)), np.ones((2, 2))]
    >>> round(dtssd(moving, still), 6)   # (0 + 1 + 0) / 3
    0.333333
    """
    total, count = 0.0, 0
    previous: Optional[tuple[np.ndarray, np.ndarray]] = None
    for pred, gt in itertools.zip_longest(preds, gts):
        if pred is None or gt is None:
            raise ValueError("preds and gts hold different numbers of frames")
        if previous is not None:
            total += dtssd_pair(pred, previous[0], gt, previous[1])
        previous = (pred, gt)
        count += 1
    if count < 2:
        raise ValueError(f"dtSSD needs at least 2 frames, got {count}")
    return total / count


@dataclass(frozen=True)
class Metric:
    """A registered metric: ``function`` gives the raw value, ``report`` the table's number.

    Spatial metrics are ``function(pred, gt, mask=None) -> float``; the temporal one
    (``temporal=True``) is ``function(preds, gts) -> float`` over a clip.
    """

    name: str
    label: str
    function: Callable[..., float]
    scale: float
    unit: str
    temporal: bool = False

    def report(self, raw: float) -> float:
        """The value as the papers' tables print it (raw x ``scale``)."""
        return raw * self.scale


#: Every metric, in table order; the eval command and the tests loop over this list.
METRICS: list[Metric] = [
    Metric("mad", "MAD", mad, MAD_SCALE, "x1e3"),
    Metric("mse", "MSE", mse, MSE_SCALE, "x1e3"),
    Metric("grad", "Grad", grad, GRAD_SCALE, "/1e3"),
    Metric("conn", "Conn", conn, CONN_SCALE, "/1e3"),
    Metric("dtssd", "dtSSD", dtssd, DTSSD_SCALE, "x1e2", temporal=True),
]

__all__ = [
    "METRICS",
    "Metric",
    "conn",
    "dtssd",
    "dtssd_pair",
    "gaussian_derivative_filters",
    "grad",
    "gradient_magnitude",
    "mad",
    "mse",
    "unknown_region",
]
