"""Matte metrics: hand-computed cases for each metric, and the properties every metric must keep.

Conventions under test (see ``inference/metrics.py``): RVM's ``evaluate_lr.py`` and Adobe's Deep
Image Matting MATLAB code; raw values here, table scales in ``METRICS``.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from mattekit.inference import metrics
from mattekit.inference.metrics import (
    METRICS,
    conn,
    dtssd,
    dtssd_pair,
    gaussian_derivative_filters,
    grad,
    mad,
    mse,
    unknown_region,
)

SPATIAL = [m for m in METRICS if not m.temporal]
TEMPORAL = [m for m in METRICS if m.temporal]


def random_matte(seed: int, shape: tuple[int, int] = (24, 32)) -> np.ndarray:
    """A soft blob with noise: a matte with edges, partial alpha, and a few islands."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:shape[0], :shape[1]]
    blob = 1.0 / (1.0 + np.exp(((x - shape[1] / 2) ** 2 + (y - shape[0] / 2) ** 2) ** 0.5 - 8))
    return np.clip(blob + rng.normal(0, 0.15, shape), 0, 1)


# --- the registry -----------------------------------------------------------------------------

def test_the_registry_lists_each_metric_once_with_the_scale_of_the_rvm_tables():
    table = {m.name: (m.label, m.scale, m.unit, m.temporal) for m in METRICS}
    assert table == {
        "mad": ("MAD", 1e3, "x1e3", False),
        "mse": ("MSE", 1e3, "x1e3", False),
        "grad": ("Grad", 1e-3, "/1e3", False),
        "conn": ("Conn", 1e-3, "/1e3", False),
        "dtssd": ("dtSSD", 1e2, "x1e2", True),
    }
    assert METRICS[0].report(0.0125) == pytest.approx(12.5)


@pytest.mark.parametrize("metric", SPATIAL, ids=lambda m: m.name)
def test_when_a_matte_is_compared_with_itself_then_every_spatial_metric_is_zero(metric):
    matte = random_matte(0)
    assert metric.function(matte, matte) == 0.0
    assert metric.function(matte, matte, np.ones(matte.shape, bool)) == 0.0


@pytest.mark.parametrize("metric", SPATIAL, ids=lambda m: m.name)
def test_when_inputs_are_swapped_then_every_spatial_metric_is_unchanged(metric):
    a, b = random_matte(1), random_matte(2)
    assert metric.function(a, b) > 0
    assert metric.function(a, b) == pytest.approx(metric.function(b, a), rel=1e-12)


@pytest.mark.parametrize("metric", SPATIAL, ids=lambda m: m.name)
def test_when_float32_or_float64_mattes_are_given_then_the_results_agree(metric):
    a, b = random_matte(3), random_matte(4)
    assert metric.function(a.astype(np.float32), b.astype(np.float32)) == pytest.approx(
        metric.function(a.astype(np.float32).astype(np.float64),
                        b.astype(np.float32).astype(np.float64)), rel=1e-12)


@pytest.mark.parametrize("metric", SPATIAL, ids=lambda m: m.name)
def test_when_shapes_or_masks_do_not_fit_then_a_value_error_says_so(metric):
    a = random_matte(5)
    with pytest.raises(ValueError, match="differ in shape"):
        metric.function(a, a[:, :-1])
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        metric.function(a[None], a[None])
    with pytest.raises(ValueError, match="boolean"):
        metric.function(a, a, np.ones(a.shape))
    with pytest.raises(ValueError, match="mask"):
        metric.function(a, a, np.ones((2, 2), bool))


@pytest.mark.parametrize("metric", SPATIAL, ids=lambda m: m.name)
def test_when_a_mask_splits_the_image_then_the_two_parts_add_up_to_the_whole(metric):
    # MAD and MSE average over the mask, Grad and Conn sum over it (Adobe DIM's convention).
    pred, gt = random_matte(6), random_matte(7)
    inside = np.zeros(gt.shape, bool)
    inside[5:15, 8:20] = True
    outside = ~inside
    if metric.name in ("mad", "mse"):
        parts = (metric.function(pred, gt, inside) * inside.sum()
                 + metric.function(pred, gt, outside) * outside.sum()) / gt.size
    else:
        parts = metric.function(pred, gt, inside) + metric.function(pred, gt, outside)
    assert parts == pytest.approx(metric.function(pred, gt), rel=1e-12)


@pytest.mark.parametrize("metric", [m for m in SPATIAL if m.name in ("mad", "mse")],
                         ids=lambda m: m.name)
def test_when_pixels_outside_the_mask_change_then_mad_and_mse_do_not(metric):
    pred, gt = random_matte(6), random_matte(7)
    inside = np.zeros(gt.shape, bool)
    inside[5:15, 8:20] = True
    changed = pred.copy()
    changed[~inside] = 1.0 - changed[~inside]
    assert metric.function(changed, gt, inside) == metric.function(pred, gt, inside)


# --- MAD and MSE ------------------------------------------------------------------------------

GT_4X4 = np.array([[0.0, 0.0, 1.0, 1.0],
                   [0.0, 0.5, 1.0, 1.0],
                   [0.0, 0.5, 1.0, 1.0],
                   [0.0, 0.0, 0.0, 1.0]])
# Differences: four pixels off by 0.25, two by 0.5, one by 1.0, nine exact.
PRED_4X4 = np.array([[0.25, 0.0, 1.0, 0.75],
                     [0.0, 0.0, 1.0, 1.0],
                     [0.0, 1.0, 0.75, 1.0],
                     [0.0, 0.25, 1.0, 1.0]])


def test_mad_of_a_4x4_case_is_the_hand_computed_mean():
    # (4 * 0.25 + 2 * 0.5 + 1.0) / 16 = 3 / 16
    assert mad(PRED_4X4, GT_4X4) == pytest.approx(3 / 16, abs=1e-15)


def test_mse_of_a_4x4_case_is_the_hand_computed_mean():
    # (4 * 0.0625 + 2 * 0.25 + 1.0) / 16 = 1.75 / 16
    assert mse(PRED_4X4, GT_4X4) == pytest.approx(1.75 / 16, abs=1e-15)


def test_when_a_mask_selects_pixels_then_mad_and_mse_average_over_them_only():
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1] = True  # the two 0.5 pixels: one off by 0.5, one off by 0.5
    assert mad(PRED_4X4, GT_4X4, mask) == pytest.approx(0.5)
    assert mse(PRED_4X4, GT_4X4, mask) == pytest.approx(0.25)


def test_when_a_mask_selects_nothing_then_mad_and_mse_refuse_an_undefined_mean():
    empty = np.zeros((4, 4), bool)
    for function in (mad, mse):
        with pytest.raises(ValueError, match="no pixels"):
            function(PRED_4X4, GT_4X4, empty)
    assert grad(PRED_4X4, GT_4X4, empty) == 0.0  # a sum over nothing is 0


@pytest.mark.parametrize("k", [0.25, 0.5, 1.0])
def test_when_an_error_is_scaled_by_k_then_mad_scales_by_k_and_mse_by_k_squared(k):
    gt = np.full((8, 8), 0.5)
    error = random_matte(8, (8, 8)) - 0.5
    assert mad(gt + k * error, gt) == pytest.approx(k * mad(gt + error, gt))
    assert mse(gt + k * error, gt) == pytest.approx(k * k * mse(gt + error, gt))


# --- Grad -------------------------------------------------------------------------------------

def reference_kernel_x(sigma: float = 1.4, epsilon: float = 1e-2) -> np.ndarray:
    """The reference's 2-D x-filter built entry by entry: g(row) * g'(column), unit L2 norm."""
    half = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * epsilon)))
    size = 2 * half + 1

    def gauss(x: float) -> float:
        return math.exp(-x * x / (2 * sigma * sigma)) / (sigma * math.sqrt(2 * math.pi))

    kernel = np.empty((size, size))
    for i in range(size):
        for j in range(size):
            kernel[i, j] = gauss(i - half) * (-(j - half) * gauss(j - half) / sigma ** 2)
    return kernel / math.sqrt((kernel ** 2).sum())


def direct_gradient_magnitude(image: np.ndarray) -> np.ndarray:
    """|grad| by a plain double loop over the 2-D filters, borders replicated."""
    kx = reference_kernel_x()
    ky = kx.T
    half = kx.shape[0] // 2
    padded = np.pad(image, half, mode="edge")
    gx = np.zeros_like(image)
    gy = np.zeros_like(image)
    for y in range(image.shape[0]):
        for x in range(image.shape[1]):
            window = padded[y:y + kx.shape[0], x:x + kx.shape[1]]
            gx[y, x] = (window * kx).sum()
            gy[y, x] = (window * ky).sum()
    return np.sqrt(gx ** 2 + gy ** 2)


def test_the_gradient_filter_is_the_reference_9x9_unit_norm_filter():
    derivative, smoothing = gaussian_derivative_filters()
    kernel = np.outer(smoothing, derivative)
    assert kernel.shape == (9, 9)
    np.testing.assert_allclose(kernel, reference_kernel_x(), atol=1e-15)
    assert np.linalg.norm(kernel) == pytest.approx(1.0)


def test_grad_of_a_step_edge_against_a_flat_matte_matches_a_direct_convolution():
    step = np.zeros((12, 16))
    step[:, 7:] = 1.0
    flat = np.zeros_like(step)  # constant: min-max normalises to 0, gradient 0
    expected = (direct_gradient_magnitude(step) ** 2).sum()
    assert grad(flat, step) == pytest.approx(expected, rel=1e-12)


def test_grad_of_a_step_edge_matches_the_closed_form_of_a_1d_edge():
    # Rows are identical, so the y-derivative vanishes and the x-response at column c is the
    # sum of the derivative taps that land on the bright side (borders replicated), times the
    # sum of the smoothing taps.
    height, width, edge = 6, 20, 9
    step = np.zeros((height, width))
    step[:, edge:] = 1.0
    derivative, smoothing = gaussian_derivative_filters()
    half = len(derivative) // 2
    responses = [sum(tap for k, tap in enumerate(derivative)
                     if min(max(c + k - half, 0), width - 1) >= edge) * smoothing.sum()
                 for c in range(width)]
    expected = height * sum(r * r for r in responses)
    assert grad(np.zeros_like(step), step) == pytest.approx(expected, rel=1e-12)


def test_grad_of_two_soft_mattes_matches_a_direct_convolution():
    pred, gt = random_matte(9, (10, 13)), random_matte(10, (10, 13))

    def normalised(m: np.ndarray) -> np.ndarray:
        return (m - m.min()) / (m.max() - m.min())

    expected = ((direct_gradient_magnitude(normalised(pred))
                 - direct_gradient_magnitude(normalised(gt))) ** 2).sum()
    assert grad(pred, gt) == pytest.approx(expected, rel=1e-10)


def test_when_a_matte_is_rescaled_then_grad_is_unchanged_by_the_min_max_normalisation():
    pred, gt = random_matte(11), random_matte(12)
    assert grad(0.5 * pred + 0.2, gt) == pytest.approx(grad(pred, gt), rel=1e-10)
    assert grad(0.5 * gt, gt) == pytest.approx(0.0, abs=1e-12)


# --- Conn -------------------------------------------------------------------------------------

def blob_case() -> np.ndarray:
    """A 2x3 block (the main blob) in a 5x6 frame of zeros."""
    matte = np.zeros((5, 6))
    matte[1:3, 1:4] = 1.0
    return matte


def test_when_a_binary_speck_is_missing_from_the_prediction_then_conn_counts_it_once():
    gt = blob_case()
    gt[4, 5] = 1.0  # an island: never in the largest component, so its level is 0
    pred = blob_case()
    # gt: d = 1 - 0 >= 0.15 -> phi 0; pred: d = 0 -> phi 1
    assert conn(pred, gt) == pytest.approx(1.0)


def test_when_a_faint_speck_stays_under_the_cutoff_then_conn_ignores_it_and_counts_the_other():
    gt = blob_case()
    gt[4, 5] = 0.1   # island at level 0: d = 0.1 < 0.15, phi 1 (counts as connected)
    pred = blob_case()
    pred[4, 5] = 1.0  # d = 1.0, phi 0
    assert conn(pred, gt) == pytest.approx(1.0)  # while |pred - gt| there is only 0.9
    pred[4, 5] = 0.2  # d = 0.2 >= 0.15: phi 0.8
    assert conn(pred, gt) == pytest.approx(0.2)


def test_when_a_pixel_touches_the_blob_then_its_level_is_the_last_threshold_it_passed():
    gt = blob_case()
    gt[2, 4] = 0.5    # 4-connected to the blob; in the intersection up to t = 0.5, so l = 0.5
    pred = gt.copy()
    pred[2, 4] = 0.7  # d = 0.2 -> phi 0.8; gt d = 0 -> phi 1
    assert conn(pred, gt) == pytest.approx(0.2)
    pred[2, 4] = 0.6  # d = 0.1 < 0.15 -> phi 1: no error, though MAD sees 0.1
    assert conn(pred, gt) == pytest.approx(0.0)


def test_when_a_pixel_only_touches_diagonally_then_it_is_not_connected():
    gt = blob_case()
    gt[3, 4] = 0.5     # diagonal to (2, 3): a component of its own, so its level is 0
    pred = gt.copy()
    pred[3, 4] = 0.4
    # 4-connected: gt phi 1 - 0.5, pred phi 1 - 0.4 -> error 0.1. Were diagonals connected,
    # the level would be 0.4 and both d (0.1 and 0) would fall under the cut-off: error 0.
    assert conn(pred, gt) == pytest.approx(0.1)


def test_when_two_blobs_differ_in_size_then_only_the_larger_is_the_source_region():
    gt = np.zeros((4, 7))
    gt[1:3, 0:2] = 1.0   # 4 pixels: the source region
    gt[1, 4:6] = 1.0     # 2 pixels: cut off at level 0
    pred = gt.copy()
    pred[1, 4:6] = 0.5   # pred d = 0.5 -> phi 0.5; gt d = 1 -> phi 0 (each of 2 pixels)
    pred[1, 0] = 0.5     # in the source region up to t = 0.5: l = 0.5; pred phi 1, gt d 0.5 -> 0.5
    assert conn(pred, gt) == pytest.approx(2 * 0.5 + 0.5)


def test_when_the_mattes_share_no_pixel_then_every_level_is_zero_and_conn_is_their_mass():
    gt = np.zeros((3, 3))
    gt[0, 0] = 1.0
    pred = np.zeros((3, 3))
    pred[2, 2] = 1.0
    assert conn(pred, gt) == pytest.approx(2.0)


def test_when_both_mattes_are_fully_opaque_then_every_level_is_one_and_conn_is_zero():
    ones = np.ones((3, 4))
    assert conn(ones, ones) == 0.0
    assert conn(np.full((3, 4), 0.95), ones) == 0.0  # d <= 0 everywhere: phi 1


# --- dtSSD ------------------------------------------------------------------------------------

def test_dtssd_of_three_frames_is_the_hand_computed_rvm_mean():
    gts = [np.zeros((2, 2))] * 3
    preds = [np.zeros((2, 2)),
             np.array([[0.2, 0.0], [0.0, 0.0]]),   # pair 1: sqrt(0.04 / 4) = 0.1
             np.array([[0.2, 0.0], [0.0, 0.4]])]   # pair 2: sqrt(0.16 / 4) = 0.2
    assert dtssd_pair(preds[1], preds[0], gts[1], gts[0]) == pytest.approx(0.1)
    assert dtssd_pair(preds[2], preds[1], gts[2], gts[1]) == pytest.approx(0.2)
    # RVM counts frame 0 as 0 and averages all frames: (0 + 0.1 + 0.2) / 3
    assert dtssd(preds, gts) == pytest.approx(0.1)
    assert metrics.METRICS[-1].report(dtssd(preds, gts)) == pytest.approx(10.0)


def test_when_prediction_and_truth_change_alike_then_dtssd_is_zero():
    gts = [random_matte(seed, (6, 7)) for seed in range(4)]
    assert dtssd(gts, gts) == 0.0
    assert dtssd([np.clip(g + 0.1, 0, 2) for g in gts], gts) == pytest.approx(0.0, abs=1e-12)
    still = [np.full((6, 7), 0.3)] * 4
    assert dtssd(still, [np.full((6, 7), 0.8)] * 4) == 0.0  # constant error: no flicker


def test_dtssd_is_symmetric_and_accepts_generators():
    a = [random_matte(seed, (6, 7)) for seed in range(5)]
    b = [random_matte(seed + 10, (6, 7)) for seed in range(5)]
    assert dtssd(a, b) == pytest.approx(dtssd(b, a))
    assert dtssd(iter(a), (m for m in b)) == pytest.approx(dtssd(a, b))


def test_when_flicker_is_scaled_by_k_then_dtssd_scales_by_k():
    gts = [np.zeros((4, 4))] * 3
    flicker = [np.zeros((4, 4)), np.full((4, 4), 0.1), np.zeros((4, 4))]
    assert dtssd([3 * f for f in flicker], gts) == pytest.approx(3 * dtssd(flicker, gts))


def test_when_dtssd_gets_too_few_or_uneven_frames_then_a_value_error_says_so():
    frame = np.zeros((2, 2))
    with pytest.raises(ValueError, match="at least 2 frames"):
        dtssd([frame], [frame])
    with pytest.raises(ValueError, match="different numbers"):
        dtssd([frame] * 3, [frame] * 2)
    with pytest.raises(ValueError, match="differ in shape"):
        dtssd([frame, np.zeros((3, 2))], [frame, np.zeros((3, 2))])


# --- trimaps ----------------------------------------------------------------------------------

def test_the_unknown_region_is_every_value_strictly_between_zero_and_one():
    trimap = np.array([[0.0, 128 / 255, 1.0, 0.5, 1e-3]], dtype=np.float32)
    assert unknown_region(trimap).tolist() == [[False, True, False, True, True]]
