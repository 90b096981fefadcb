"""The RVM engine: recurrent state in order, resets on cuts and resolution changes, resumable."""
from __future__ import annotations

import numpy as np
import pytest

from mattekit.inference.engines.registry import create_engine
from mattekit.inference.engines.rvm import downsample_ratio, is_scene_cut, scene_thumbnail


@pytest.fixture(scope="module")
def frames(srgb_clip):
    return srgb_clip(6, 192, 144)


@pytest.fixture
def engine():
    return create_engine("rvm", "cpu")


def test_when_resolution_grows_then_the_ratio_keeps_the_coarse_pass_near_512():
    assert downsample_ratio(2160, 3840) * 3840 == pytest.approx(512)
    assert downsample_ratio(1080, 1920) * 1920 == pytest.approx(512)
    assert downsample_ratio(200, 300) == 1.0


def test_when_state_is_saved_and_loaded_then_the_next_frame_matches_a_continuous_run(
        engine, frames):
    continuous = [engine.process(f).alpha for f in frames]
    engine.reset()
    for f in frames[:3]:
        engine.process(f)
    saved = {k: np.array(v) for k, v in engine.state().items()}
    other = create_engine("rvm", "cpu")
    other.load_state(saved)
    resumed = [other.process(f).alpha for f in frames[3:]]
    for a, b in zip(resumed, continuous[3:]):
        np.testing.assert_array_equal(a, b)


def test_when_the_state_carries_over_then_results_differ_from_a_fresh_start(engine, frames):
    for f in frames[:4]:
        engine.process(f)
    warm = engine.process(frames[4]).alpha
    engine.reset()
    cold = engine.process(frames[4]).alpha
    assert float(np.max(np.abs(warm - cold))) > 1e-3


def test_when_a_scene_cut_comes_then_the_state_is_reset(engine, frames):
    for f in frames[:4]:
        engine.process(f)
    other_shot = np.ascontiguousarray(1.0 - frames[0][::-1])
    after_cut = engine.process(other_shot).alpha
    assert engine.cuts_detected == 1
    engine.reset()
    fresh = engine.process(other_shot).alpha
    np.testing.assert_array_equal(after_cut, fresh)


def test_when_the_resolution_changes_then_the_state_is_reset(engine, frames, srgb_clip):
    for f in frames[:3]:
        engine.process(f)
    bigger = srgb_clip(1, 256, 192)[0]
    changed = engine.process(bigger).alpha
    engine.reset()
    np.testing.assert_array_equal(changed, engine.process(bigger).alpha)


def test_when_consecutive_frames_of_one_shot_are_compared_then_no_cut_is_seen(frames):
    thumbs = [scene_thumbnail(f) for f in frames]
    assert not any(is_scene_cut(a, b, 0.25) for a, b in zip(thumbs, thumbs[1:]))
    assert is_scene_cut(thumbs[0], scene_thumbnail(1.0 - frames[0]), 0.25)


def test_when_rendering_then_alpha_is_in_range_and_deterministic(engine, frames):
    first = engine.process(frames[0])
    engine.reset()
    again = engine.process(frames[0])
    assert first.alpha.shape == frames[0].shape[:2]
    assert first.foreground.shape == frames[0].shape
    assert 0.0 <= first.alpha.min() and first.alpha.max() <= 1.0
    np.testing.assert_array_equal(first.alpha, again.alpha)
