"""Parallax pairs with noisy motion: the second view moves subject and background by different
whole-pixel shifts, the ground truth follows the subject, and the motion estimate is the true
displacement made noisy. Numpy only, milliseconds."""
from __future__ import annotations

import numpy as np
import pytest

from mattekit.inference.training.parallax_pairs import parallax_pair, shifted

H, W = 48, 64


def scene(seed: int = 0):
    rng = np.random.default_rng(seed)
    background = rng.random((H, W, 3)).astype(np.float32)
    alpha = np.zeros((H, W), np.float32)
    alpha[16:32, 24:40] = 1.0
    foreground = np.broadcast_to(np.float32([0.9, 0.1, 0.1]), (H, W, 3)).copy()
    return foreground, alpha, background


def test_when_a_plane_is_shifted_then_it_moves_by_whole_pixels_and_layers_bring_in_nothing():
    plane = np.arange(12, dtype=np.float32).reshape(3, 4)
    moved = shifted(plane, 1, 2, reflect=False)
    np.testing.assert_array_equal(moved[1:, 2:], plane[:2, :2])
    assert moved[0].sum() == 0 and moved[:, :2].sum() == 0
    np.testing.assert_array_equal(shifted(plane, 0, -1, reflect=True)[:, :3], plane[:, 1:])


def test_when_a_pair_is_drawn_then_subject_and_background_move_apart_and_the_truth_follows():
    foreground, alpha, background = scene()
    for seed in range(5):
        pair = parallax_pair(foreground, alpha, background, np.random.default_rng(seed))
        (sy, sx), (by, bx) = pair.subject_shift, pair.background_shift
        assert (sy, sx) != (by, bx)  # parallax: near and far move by different amounts
        np.testing.assert_array_equal(pair.second_alpha, shifted(alpha, sy, sx, False))
        np.testing.assert_allclose(pair.frame, foreground * alpha[..., None]
                                   + background * (1 - alpha[..., None]), atol=1e-6)
        # far from the subject in both views, the second view is the background moved
        clear = (shifted(alpha, sy, sx, False) == 0) & (alpha == 0)
        clear[:abs(by) + 1], clear[H - abs(by) - 1:] = False, False
        clear[:, :abs(bx) + 1], clear[:, W - abs(bx) - 1:] = False, False
        ys, xs = np.nonzero(clear)
        np.testing.assert_array_equal(pair.second_view[ys, xs], background[ys - by, xs - bx])


def test_when_the_motion_is_estimated_then_it_is_the_true_shift_plus_bounded_bias_and_noise():
    foreground, alpha, background = scene()
    pair = parallax_pair(foreground, alpha, background, np.random.default_rng(3),
                         motion_bias=1.0, motion_noise=0.5)
    np.testing.assert_array_equal(pair.true_motion[20, 30], np.float32(pair.subject_shift))
    np.testing.assert_array_equal(pair.true_motion[2, 2], np.float32(pair.background_shift))
    error = pair.motion - pair.true_motion
    bias = error.reshape(-1, 2).mean(axis=0)
    assert np.all(np.abs(bias) <= 1.0 + 0.05)
    assert 0.4 < float((error - bias).std()) < 0.6
    exact = parallax_pair(foreground, alpha, background, np.random.default_rng(3),
                          motion_bias=0.0, motion_noise=0.0)
    np.testing.assert_array_equal(exact.motion, exact.true_motion)


def test_when_the_same_seed_is_drawn_twice_then_the_pair_is_the_same():
    foreground, alpha, background = scene()
    a = parallax_pair(foreground, alpha, background, np.random.default_rng(7))
    b = parallax_pair(foreground, alpha, background, np.random.default_rng(7))
    np.testing.assert_array_equal(a.second_view, b.second_view)
    np.testing.assert_array_equal(a.motion, b.motion)


def test_when_the_layers_differ_in_size_then_the_error_names_the_sizes():
    foreground, alpha, background = scene()
    with pytest.raises(ValueError, match=r"background \(40, 64\)"):
        parallax_pair(foreground, alpha, background[:40], np.random.default_rng(0))
