"""video-matte target fill (issue #5): where the prior misses the target the mask names, the
engine mattes it itself (closed-form matting of the mask's band), and only there.

The engine is driven by a stand-in prior that sees nothing (what RVM does with a wicker ball),
so whatever alpha comes out is the fill's own work.
"""
from __future__ import annotations

import doctest

import cv2
import numpy as np
import pytest
from test_video_matte_guidance import BLUE, RED, H, ObjectPrior, W, background

from mattekit.inference import closed_form, motion, target_fill
from mattekit.inference.engines.registry import create_engine
from mattekit.inference.engines.rvm import MatteResult


class BlindPrior(ObjectPrior):
    """Stands in for RVM on an object it was not trained for: alpha 0 everywhere."""

    def process(self, src: np.ndarray, inputs=None) -> MatteResult:
        return MatteResult(alpha=np.zeros(src.shape[:2], np.float32), foreground=src)


def blind_engine():
    engine = create_engine("rvm-guided", "cpu")
    engine.rvm, engine.focus = BlindPrior(), BlindPrior()
    return engine


def disc(x: float, y: float, radius: float = 14.0) -> np.ndarray:
    """The alpha of an anti-aliased disc centred at (x, y)."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    return np.clip(radius + 0.5 - np.hypot(xx - x, yy - y), 0.0, 1.0)


def composite(objects, seed: int = 3) -> np.ndarray:
    """Textured coloured objects (alpha, colour[, shift]) over the background, in order; an
    object's texture moves with it (``shift`` pixels to the right)."""
    frame = background(seed)
    rng = np.random.default_rng(11)
    for alpha, colour, *shift in objects:
        noise = cv2.GaussianBlur(rng.normal(0, 0.08, (H, W + 256, 3)).astype(np.float32),
                                 (0, 0), 1.0)
        dx = int(shift[0]) if shift else 0
        texture = np.clip(np.array(colour, np.float32) + noise[:, 128 - dx:128 - dx + W], 0, 1)
        frame = alpha[..., None] * texture + (1 - alpha[..., None]) * frame
    return frame.astype(np.float32)


def rough_roto(alpha: np.ndarray, grow: float = 3.0) -> np.ndarray:
    """The object's outline grown by ``grow`` pixels (within the engine's default key
    tolerance at this size: 3 % of the diagonal, 5.6 px)."""
    outside = (alpha <= 0.5).astype(np.uint8)
    return (cv2.distanceTransform(outside, cv2.DIST_L2, 5) <= grow).astype(np.float32)


def moving_target_clip(count: int = 8):
    """A red disc moving right by 3 px a frame, a blue one still on the right."""
    frames, truths = [], []
    for i in range(count):
        target = disc(40 + 3 * i, 50)
        frames.append(composite([(disc(125, 45), BLUE), (target, RED, 3 * i)]))
        truths.append(target)
    return frames, truths


# -- the pure steps ------------------------------------------------------------------------------

def test_when_the_module_examples_run_then_they_hold():
    assert doctest.testmod(target_fill).failed == 0
    assert doctest.testmod(closed_form).failed == 0
    assert doctest.testmod(motion).failed == 0


def test_when_the_flow_drags_background_behind_a_target_then_its_motion_ignores_that():
    previous = disc(60, 48, 16) > 0.5
    flow = np.zeros((H, W, 2), np.float32)
    current = disc(66, 48, 17.6) > 0.5        # moved 6 px right, grown by 10 %
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    flow[..., 0] = np.where(current, (xx - 66) / 1.1 + 60 - xx, 0)
    flow[..., 1] = np.where(current, (yy - 48) / 1.1 + 48 - yy, 0)
    behind = (disc(54, 48, 16) > 0.5) & ~current  # uncovered: DIS drags it along
    flow[..., 0][behind] = 6.0
    transform = motion.region_motion(flow, previous)
    assert transform is not None
    np.testing.assert_allclose(transform[:, :2], [[1.1, 0.0], [0.0, 1.1]], atol=0.02)
    moved = motion.moved_mask(previous, transform)
    assert float(np.mean(moved != current)) < 0.005
    assert motion.region_motion(flow, np.zeros((H, W), bool)) is None


def test_when_the_band_is_solved_then_the_object_edge_is_found_without_any_prior():
    truth = disc(80, 48, 20)
    image = composite([(truth, RED)])
    trimap = target_fill.shape_trimap(rough_roto(truth) > 0.5, 7.0)
    assert trimap.unknown.sum() > 1000  # a wide band, to be solved
    alpha = closed_form.closed_form_with_prior(image, trimap, np.zeros((H, W), np.float32),
                                               np.zeros((H, W), np.float32))
    band = trimap.unknown
    assert float(np.abs(alpha - truth)[band].mean()) < 0.05
    # the band's guess from the trimap alone (half) is far off: the image decided
    assert float(np.abs(0.5 - truth)[band].mean()) > 0.4
    assert np.all(alpha[trimap.fg] == 1.0) and np.all(alpha[trimap.bg] == 0.0)


def test_when_the_image_says_nothing_then_a_trusted_prior_decides():
    flat = np.full((H, W, 3), 0.4, np.float32)
    truth = disc(80, 48, 20)
    trimap = target_fill.shape_trimap(rough_roto(truth) > 0.5, 7.0)
    prior = np.full((H, W), 0.3, np.float32)
    trusted = closed_form.closed_form_with_prior(flat, trimap, prior,
                                                 np.full((H, W), 10.0, np.float32))
    ignored = closed_form.closed_form_with_prior(flat, trimap, prior,
                                                 np.zeros((H, W), np.float32))
    inner = trimap.unknown & ~cv2.dilate((trimap.fg | trimap.bg).astype(np.uint8),
                                         np.ones((5, 5), np.uint8)).astype(bool)
    assert float(np.abs(trusted - 0.3)[inner].mean()) < 0.05
    assert float(np.abs(ignored - 0.3)[inner].mean()) > 0.1


def test_when_the_prior_misses_half_the_core_then_its_background_counts_a_quarter():
    prior = np.array([1.0, 0.0, 1.0, 0.0], np.float32)
    core = np.array([True, True, False, False])
    coverage = target_fill.prior_coverage(prior, core)
    assert coverage == 0.5
    assert target_fill.prior_reliability(prior, coverage).tolist() == [1.0, 0.25, 1.0, 0.25]


# -- the engine ----------------------------------------------------------------------------------

def test_when_the_prior_sees_nothing_then_the_masked_target_is_matted_and_followed():
    frames, truths = moving_target_clip()
    engine = blind_engine()
    for i, (frame, truth) in enumerate(zip(frames, truths)):
        alpha = engine.process(frame, {"mask": rough_roto(truths[0])} if i == 0 else None).alpha
        assert float(np.abs(alpha - truth).mean()) < 0.01, f"frame {i}"
        assert float(alpha[truth > 0.99].mean()) > 0.95, f"frame {i}: target not filled"
        assert float(alpha[disc(125, 45, 16) > 0].max()) < 0.05, f"frame {i}: blue kept"


def test_when_the_roto_is_looser_than_the_tolerance_then_a_larger_key_tolerance_recovers():
    truth = disc(60, 50)
    frame = composite([(truth, RED)])
    loose = {"mask": rough_roto(truth, grow=9.0)}
    errors = []
    for tolerance in (0.03, 0.06):
        engine = create_engine("rvm-guided", "cpu", {"key_tolerance": tolerance})
        engine.rvm, engine.focus = BlindPrior(), BlindPrior()
        errors.append(float(np.abs(engine.process(frame, loose).alpha - truth).mean()))
    assert errors[1] < 0.01 < errors[0]


def test_when_the_prior_sees_the_target_then_the_fill_leaves_its_matte_alone():
    engine = blind_engine()
    truth = disc(80, 48, 20)
    image = composite([(truth, RED)])
    small = cv2.resize(image, (W, H))
    trimap = target_fill.shape_trimap(rough_roto(truth) > 0.5, 7.0)
    seen = np.where(truth > 0.5, 0.97, 0.0).astype(np.float32)  # a prior's own, rough edge
    assert engine._filled(small, seen, trimap) is seen
    missed = np.where(truth > 0.5, 0.2, 0.0).astype(np.float32)
    filled = engine._filled(small, missed, trimap)
    assert float(np.abs(filled - truth).mean()) < float(np.abs(missed - truth).mean()) / 4


def test_when_the_target_leaves_the_frame_then_the_fill_does_not_paint_it_back():
    engine = blind_engine()
    positions = [120, 132, 144, 158, 175, 190, 205]  # out of the frame from the fifth on
    for i, x in enumerate(positions):
        target = disc(x, 50)
        frame = composite([(target, RED, x - positions[0])])
        alpha = engine.process(frame, {"mask": rough_roto(target)} if i == 0 else None).alpha
        if x - 14 >= W:
            assert float(alpha.max()) < 0.05, f"frame {i}: a target that left was painted"


@pytest.mark.parametrize("split", [3, 5])
def test_when_the_state_is_saved_mid_fill_then_the_run_continues_exactly(split):
    frames, truths = moving_target_clip()
    key = {"mask": rough_roto(truths[0])}
    engine = blind_engine()
    continuous = [engine.process(f, key if i == 0 else None).alpha for i, f in enumerate(frames)]
    engine.reset()
    for i, frame in enumerate(frames[:split]):
        engine.process(frame, key if i == 0 else None)
    saved = {k: np.array(v) for k, v in engine.state().items()}
    other = blind_engine()
    other.load_state(saved)
    for frame, expected in zip(frames[split:], continuous[split:]):
        np.testing.assert_array_equal(other.process(frame).alpha, expected)
