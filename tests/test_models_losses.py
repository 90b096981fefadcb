"""Training losses (known/unknown L1, Laplacian, gradient penalty) on hand-made cases, and the
distractor augmentation: a foreground that belongs to the background lands in plate AND clean
plate at one place, and the ground-truth alpha ignores it.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mattekit.inference.models.augment import (  # noqa: E402
    Distractor,
    compose_sample,
    random_distractors,
)
from mattekit.inference.models.losses import (  # noqa: E402
    LossWeights,
    gradient_penalty,
    known_unknown_l1,
    laplacian_loss,
    matting_loss,
    trimap_regions,
)


def as_map(rows) -> "torch.Tensor":
    return torch.tensor(rows, dtype=torch.float32)[None, None]


def step_edge(size: int = 8) -> "torch.Tensor":
    """0 on the left half, 1 on the right half."""
    image = torch.zeros(1, 1, size, size)
    image[..., size // 2:] = 1.0
    return image


@pytest.mark.parametrize("values", [(0.0, 128.0, 255.0), (0.0, 0.5, 1.0)])
def test_when_the_trimap_splits_pixels_then_known_and_unknown_l1_are_measured_apart(values):
    bg, unknown, fg = values
    trimap = as_map([[bg, unknown, fg], [bg, unknown, fg]])
    true = as_map([[0.0, 0.5, 1.0], [0.0, 0.5, 1.0]])
    pred = true + as_map([[0.1, 0.5, -0.1], [-0.1, -0.5, 0.1]])  # known off by .1, band by .5
    known_l1, unknown_l1 = known_unknown_l1(pred, true, trimap)
    assert float(known_l1) == pytest.approx(0.1)
    assert float(unknown_l1) == pytest.approx(0.5)
    known, band = trimap_regions(trimap)
    assert band.sum() == 2 and known.sum() == 4


def test_when_the_trimap_has_no_unknown_band_then_its_l1_is_zero_not_nan():
    trimap = as_map([[0.0, 1.0]])
    known_l1, unknown_l1 = known_unknown_l1(as_map([[0.2, 0.8]]), trimap, trimap)
    assert float(unknown_l1) == 0.0
    assert float(known_l1) == pytest.approx(0.2)


def test_when_prediction_equals_truth_then_laplacian_loss_is_zero_and_positive_otherwise():
    true = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert float(laplacian_loss(true, true)) == 0.0
    assert float(laplacian_loss(true.flip(-1), true)) > 0.0
    assert float(laplacian_loss(true + 1e-3, true)) > 0.0


def test_when_the_error_is_a_constant_offset_then_only_the_coarsest_level_counts_weighted_2_pow_i():
    # 32 px: band levels at 32, 16, 8 px are unchanged by an offset; the 4 px low-pass residual
    # (level 3, weight 2**3) carries all of it
    true = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    assert float(laplacian_loss(true + 0.1, true)) == pytest.approx(0.8, rel=1e-4)


def test_when_a_step_edge_is_predicted_flat_then_the_gradient_penalty_is_the_missing_edge():
    true = step_edge()
    # Sobel / 8 of a unit step: 0.5 in the two columns beside the edge, 0 elsewhere -> mean 1/8
    assert float(gradient_penalty(torch.zeros_like(true), true, smoothness=0.0)) == \
        pytest.approx(0.125)
    assert float(gradient_penalty(true, true, smoothness=0.0)) == 0.0
    # the smoothness term charges the prediction's own edges: 0.1 * 1/8
    assert float(gradient_penalty(true, true, smoothness=0.1)) == pytest.approx(0.0125)
    flat = torch.full_like(true, 0.5)
    assert float(gradient_penalty(flat, flat, smoothness=0.1)) == 0.0


def test_when_the_prediction_is_noisy_then_the_gradient_penalty_grows():
    true = step_edge(16)
    noise = 0.05 * torch.randn(true.shape, generator=torch.Generator().manual_seed(2))
    assert float(gradient_penalty(true + noise, true)) > float(gradient_penalty(true, true)) > 0


def test_when_all_terms_are_combined_then_the_total_is_their_weighted_sum():
    true = step_edge(16)
    pred = (true * 0.8 + 0.1).requires_grad_(True)
    trimap = torch.where(true > 0, 255.0, 0.0)
    trimap[..., 7:9] = 128.0
    weights = LossWeights(known=1.0, unknown=3.0, laplacian=0.5, gradient=2.0)
    terms = matting_loss(pred, true, trimap, weights)
    expected = (terms["known"] + 3.0 * terms["unknown"] + 0.5 * terms["laplacian"]
                + 2.0 * terms["gradient"])
    assert float(terms["total"].detach()) == pytest.approx(float(expected.detach()))
    assert all(float(terms[k].detach()) > 0 for k in ("known", "unknown", "laplacian", "gradient"))
    terms["total"].backward()
    assert pred.grad is not None and float(pred.grad.abs().sum()) > 0


def scene(size: int = 32):
    """A subject (solid square, alpha 1 with a soft rim) over a noisy background, and a
    distractor (a green 6x6 block)."""
    rng = np.random.default_rng(3)
    alpha = np.zeros((size, size), np.float32)
    alpha[4:12, 4:12] = 1.0
    alpha[3, 4:12] = 0.5
    fg = np.broadcast_to(np.float32([0.9, 0.2, 0.1]), (size, size, 3)).copy()
    background = rng.random((size, size, 3)).astype(np.float32)
    distractor = Distractor(np.broadcast_to(np.float32([0.1, 0.8, 0.1]), (6, 6, 3)).copy(),
                            np.ones((6, 6), np.float32), top=20, left=18)
    return fg, alpha, background, distractor


def test_when_a_distractor_is_added_then_it_is_in_plate_and_clean_plate_at_the_same_place():
    fg, alpha, background, distractor = scene()
    plain = compose_sample(fg, alpha, background)
    sample = compose_sample(fg, alpha, background, distractors=[distractor])
    changed_frame = np.any(sample.frame != plain.frame, axis=-1)
    changed_plate = np.any(sample.clean_plate != plain.clean_plate, axis=-1)
    expected = np.zeros_like(changed_frame)
    expected[20:26, 18:24] = True
    np.testing.assert_array_equal(changed_frame, expected)
    np.testing.assert_array_equal(changed_plate, expected)
    np.testing.assert_allclose(sample.clean_plate[20:26, 18:24], distractor.foreground)
    np.testing.assert_allclose(sample.frame[20:26, 18:24], sample.clean_plate[20:26, 18:24])
    np.testing.assert_array_equal(sample.alpha, alpha)  # the distractor is background
    np.testing.assert_array_equal(sample.distractor_alpha > 0, expected)


def test_when_the_subject_overlaps_a_distractor_then_the_subject_stays_in_front():
    fg, alpha, background, _ = scene()
    over = Distractor(np.zeros((10, 10, 3), np.float32), np.ones((10, 10), np.float32), 0, 0)
    clean = background * 0.9  # a separately captured clean plate (darker exposure)
    sample = compose_sample(fg, alpha, background, distractors=[over], clean_background=clean)
    np.testing.assert_allclose(sample.frame[4:10, 4:10], fg[4:10, 4:10])  # subject opaque
    np.testing.assert_allclose(sample.frame[3, 4:10], 0.5 * fg[3, 4:10])  # rim over black
    np.testing.assert_allclose(sample.clean_plate[:10, :10], 0.0)
    np.testing.assert_allclose(sample.clean_plate[20:], clean[20:])
    np.testing.assert_array_equal(sample.alpha, alpha)


def test_when_a_distractor_hangs_over_the_edge_then_only_its_visible_part_is_pasted():
    fg, alpha, background, distractor = scene()
    edge = Distractor(distractor.foreground, distractor.alpha, top=-3, left=29)
    sample = compose_sample(fg, alpha, background, distractors=[edge])
    assert int((sample.distractor_alpha > 0).sum()) == 3 * 3
    assert sample.distractor_alpha[:3, 29:].min() == 1.0


def test_when_a_distractor_is_only_in_the_clean_plate_then_the_frame_and_alpha_lack_it():
    fg, alpha, background, distractor = scene()
    gone = Distractor(distractor.foreground, distractor.alpha, distractor.top, distractor.left,
                      in_frame=False)
    plain = compose_sample(fg, alpha, background)
    sample = compose_sample(fg, alpha, background, distractors=[gone])
    np.testing.assert_array_equal(sample.frame, plain.frame)
    np.testing.assert_allclose(sample.clean_plate[20:26, 18:24], distractor.foreground)
    changed = np.any(sample.clean_plate != plain.clean_plate, axis=-1)
    assert int(changed.sum()) == 36 and bool(changed[20:26, 18:24].all())
    np.testing.assert_array_equal(sample.alpha, alpha)


def test_when_distractors_are_drawn_at_random_then_probability_and_count_are_honoured():
    fg, alpha, _, _ = scene()
    pool = [(fg[:8, :8], alpha[:8, :8])]
    rng = np.random.default_rng(0)
    assert random_distractors(pool, 32, 32, rng, probability=0.0) == []
    drawn = [random_distractors(pool, 32, 32, rng, probability=1.0, max_count=3)
             for _ in range(20)]
    assert all(1 <= len(d) <= 3 for d in drawn)
    assert all(-4 <= d.top < 32 and -4 <= d.left < 32 for ds in drawn for d in ds)
    assert all(d.in_frame for ds in drawn for d in ds)
    plate_only = random_distractors(pool, 32, 32, rng, probability=1.0, max_count=3,
                                    plate_only=1.0)
    assert plate_only and not any(d.in_frame for d in plate_only)


def test_when_an_odd_sized_distractor_is_drawn_then_at_least_half_of_it_stays_on_the_canvas():
    fg, alpha, _, _ = scene()
    pool = [(fg[:7, :9], alpha[:7, :9])]
    rng = np.random.default_rng(1)
    drawn = [d for _ in range(200) for d in random_distractors(pool, 20, 20, rng, 1.0, 3)]
    for d in drawn:
        rows = min(d.top + 7, 20) - max(d.top, 0)
        cols = min(d.left + 9, 20) - max(d.left, 0)
        assert rows >= 3.5 and cols >= 4.5, (d.top, d.left)
    assert min(d.top for d in drawn) == -3 and min(d.left for d in drawn) == -4
