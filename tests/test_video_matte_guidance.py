"""video-matte guidance (issue #5): the target stays the target, flicker goes, motion stays sharp.

The engine's own steps are checked with a stand-in prior where that isolates them: a "prior"
that mattes every saturated object (what RVM does with people), so which object survives is up
to the guidance alone. No-mask equality and state resume run the real RVM.
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np
import pytest

from mattekit.inference import flicker, guidance, metrics, motion
from mattekit.inference.engines.registry import create_engine
from mattekit.inference.engines.rvm import MatteResult

H, W = 96, 160
RED, BLUE = (0.85, 0.12, 0.1), (0.1, 0.2, 0.9)


class ObjectPrior:
    """Stands in for RVM: alpha = every saturated (coloured) object, with soft edges."""

    def reset(self) -> None:
        pass

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, state) -> None:
        pass

    def process(self, src: np.ndarray, inputs=None) -> MatteResult:
        saturation = src.max(axis=2) - src.min(axis=2)
        alpha = cv2.GaussianBlur((saturation > 0.3).astype(np.float32), (0, 0), 1.0)
        return MatteResult(alpha=alpha, foreground=src)


def guided_with_stand_in_prior(**params):
    engine = create_engine("rvm-guided", "cpu", params)
    engine.rvm, engine.focus = ObjectPrior(), ObjectPrior()
    return engine


def background(seed: int = 3) -> np.ndarray:
    """A grey, textured (so optical flow has something to follow), unsaturated background."""
    rng = np.random.default_rng(seed)
    grey = cv2.GaussianBlur(rng.uniform(0.25, 0.55, (H, W)).astype(np.float32), (0, 0), 1.5)
    return np.repeat(grey[..., None], 3, axis=2)


def paint(frame: np.ndarray, x: int, y: int, colour, size: int = 20, seed: int = 0) -> None:
    """A textured square of `colour` with its top-left corner at (x, y), clipped to the frame."""
    rng = np.random.default_rng(seed)
    patch = np.clip(np.array(colour, np.float32) + rng.normal(0, 0.05, (size, size, 3)), 0, 1)
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + size, W), min(y + size, H)
    if x1 > x0 and y1 > y0:
        frame[y0:y1, x0:x1] = patch[y0 - y:y1 - y, x0 - x:x1 - x]


def square_mask(x: int, y: int, size: int = 20, grow: int = 3) -> np.ndarray:
    """A rough Roto of a square: a little larger than it."""
    mask = np.zeros((H, W), np.float32)
    mask[max(y - grow, 0):y + size + grow, max(x - grow, 0):x + size + grow] = 1.0
    return mask


def region(alpha: np.ndarray, x: int, y: int, size: int = 20) -> float:
    """Mean alpha over a square (its visible part)."""
    block = alpha[max(y, 0):min(y + size, H), max(x, 0):min(x + size, W)]
    return float(block.mean()) if block.size else 0.0


# -- the pure steps ------------------------------------------------------------------------------

def test_when_the_prior_finds_two_objects_then_only_the_one_touching_the_guide_is_kept():
    alpha = np.zeros((40, 60), np.float32)
    alpha[5:15, 5:15] = 1.0    # the target
    alpha[25:35, 40:55] = 1.0  # something else
    guide = np.zeros((40, 60), bool)
    guide[8:12, 12:20] = True  # the previous target, dilated: overlaps the first only
    parts = guidance.split_components(alpha, guide)
    assert parts.kept[5:15, 5:15].all() and not parts.kept[25:35, 40:55].any()
    assert parts.rejected[25:35, 40:55].all()
    zone = guidance.territory(parts.kept, parts.rejected, reach=3.0)
    assert zone[4, 10] and zone[16, 10]        # the soft halo goes with the target
    assert not zone[30, 47] and not zone[30, 30]  # neither the other object nor far away


def test_when_a_component_is_only_grazed_by_the_guide_then_it_is_not_the_target():
    alpha = np.zeros((40, 60), np.float32)
    alpha[0:40, 30:60] = 1.0
    guide = np.zeros((40, 60), bool)
    guide[0:2, 28:31] = True  # touches 2 of its 1200 pixels
    assert guidance.split_components(alpha, guide).kept_ids == []


def test_when_the_target_moves_faster_then_the_guide_grows_with_the_flow_not_a_constant():
    frame = background()[..., 0]
    grey = (frame * 255).astype(np.uint8)
    region_mask = np.zeros((H, W), bool)
    region_mask[30:70, 50:110] = True
    radii = []
    for shift in (0, 3, 8):
        moved = np.roll(grey, shift, axis=1)
        flow = motion.backward_flow(grey, moved)
        radii.append(motion.motion_radius(flow, region_mask, margin=2.0, limit=100.0))
    assert radii[0] < 3.5                       # still: about the margin
    assert radii[1] > 3 * 1.2 and radii[2] > 8 * 1.2  # moving: at least the motion
    assert radii[0] < radii[1] < radii[2]


def test_when_an_object_is_warped_by_its_flow_then_it_lands_where_it_moved():
    image = np.zeros((H, W), np.float32)
    image[40:60, 40:60] = 1.0
    flow = np.zeros((H, W, 2), np.float32)
    flow[..., 0] = -10.0  # each pixel came from 10 px to its left
    warped = motion.warp_backward(image, flow)
    assert warped[50, 55] == 1.0 and warped[50, 65] == 1.0 and warped[50, 45] == 0.0


def test_when_colours_match_then_the_memory_prefers_that_object():
    frame = background()
    paint(frame, 10, 10, RED, seed=1)
    paint(frame, 100, 50, BLUE, seed=2)
    labels = np.zeros((H, W), np.int32)
    labels[10:30, 10:30], labels[50:70, 100:120] = 1, 2
    key = np.zeros((H, W), bool)
    other = background(9)
    paint(other, 60, 40, RED, seed=5)
    key[40:60, 60:80] = True
    memory = guidance.appearance(other, key)[None]
    assert guidance.best_match(frame, labels, [1, 2], memory, 400.0, 0.6) == 1
    assert guidance.best_match(frame, labels, [2], memory, 400.0, 0.6) is None


# -- the engine: guidance ------------------------------------------------------------------------

def reentry_clip() -> tuple[list[np.ndarray], list[Optional[tuple[int, int]]]]:
    """14 frames: a red target moves right and leaves (frames 6-8 without it), then comes back
    from the other side; a red look-alike sits still top left all along; a blue object comes in
    with the target's return. Returns frames and the target's corner per frame (None: gone)."""
    frames, corners = [], []
    for i in range(14):
        frame = background()
        paint(frame, 10, 8, RED, seed=7)  # the look-alike distractor
        corner: Optional[tuple[int, int]] = None
        if i <= 5:
            corner = (80 + 14 * i, 60)
        elif i >= 9:
            corner = (-8 + 12 * (i - 9), 62)
            paint(frame, 150 - 6 * (i - 9), 30, BLUE, seed=8)
        if corner is not None:
            paint(frame, corner[0], corner[1], RED, seed=1)
        frames.append(frame)
        corners.append(corner)
    return frames, corners


def test_when_the_target_leaves_and_comes_back_then_the_memory_finds_it_not_the_others():
    frames, corners = reentry_clip()
    engine = guided_with_stand_in_prior()
    alphas = [engine.process(f, {"mask": square_mask(80, 60)} if i == 0 else None).alpha
              for i, f in enumerate(frames)]
    for i, (alpha, corner) in enumerate(zip(alphas, corners)):
        assert region(alpha, 10, 8) < 0.02, f"frame {i}: the look-alike was kept"
        if corner is not None and corner[0] + 20 <= W and corner[0] >= 0:
            assert region(alpha, *corner) > 0.9, f"frame {i}: the target was dropped"
    for i in (6, 7, 8):
        assert float(alphas[i].max()) < 0.1, f"frame {i}: something else became the target"
    for i in range(10, 14):
        assert region(alphas[i], 150 - 6 * (i - 9), 30) < 0.02, f"frame {i}: blue kept"


def test_when_no_key_mask_was_given_then_every_object_of_the_prior_stays():
    frames, _ = reentry_clip()
    engine = guided_with_stand_in_prior()
    prior = ObjectPrior()
    for frame in frames[:4]:
        np.testing.assert_array_equal(engine.process(frame).alpha, prior.process(frame).alpha)


def test_when_a_scene_cut_comes_then_the_target_is_forgotten():
    frames, _ = reentry_clip()
    engine = guided_with_stand_in_prior()
    engine.process(frames[0], {"mask": square_mask(80, 60)})
    assert region(engine.process(frames[1]).alpha, 10, 8) < 0.02
    other_shot = np.full((H, W, 3), 0.95, np.float32)
    paint(other_shot, 10, 8, RED, seed=7)
    after_cut = engine.process(other_shot).alpha
    assert engine.cuts_detected == 1 and not engine.guide.active
    assert region(after_cut, 10, 8) > 0.9  # unguided again: every object kept


def test_when_a_later_key_mask_names_another_object_then_that_one_is_followed():
    frames, _ = reentry_clip()
    engine = guided_with_stand_in_prior()
    engine.process(frames[0], {"mask": square_mask(80, 60)})
    switched = engine.process(frames[1], {"mask": square_mask(10, 8)}).alpha
    assert region(switched, 10, 8) > 0.9 and region(switched, 94, 60) < 0.02
    assert engine.guide.memory is not None and len(engine.guide.memory) == 2


def test_when_the_key_mask_is_empty_then_the_engine_refuses_it():
    from mattekit.inference.errors import EngineError

    engine = guided_with_stand_in_prior()
    with pytest.raises(EngineError, match="empty"):
        engine.process(background(), {"mask": np.zeros((H, W), np.float32)})


# -- flicker suppression -------------------------------------------------------------------------

def flickering_clip(count: int = 12) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """A still textured frame whose true matte is a soft ramp; the 'prior' wobbles in the band."""
    rng = np.random.default_rng(4)
    frame = background()
    truth = np.clip((np.arange(W, dtype=np.float32) - 60) / 40, 0, 1)[None].repeat(H, 0)
    band = (truth > 0) & (truth < 1)
    noisy = [np.clip(truth + band * rng.normal(0, 0.08, (H, W)).astype(np.float32), 0, 1)
             for _ in range(count)]
    return [frame] * count, noisy, truth


def steadied(frames: list[np.ndarray], alphas: list[np.ndarray]) -> list[np.ndarray]:
    """The engine's flicker step (flow on the frames, warp, blend) over a sequence."""
    out = [alphas[0]]
    previous_grey = motion.grey_8bit(frames[0])
    for frame, alpha in zip(frames[1:], alphas[1:]):
        grey = motion.grey_8bit(frame)
        flow = motion.backward_flow(previous_grey, grey)
        warped = motion.warp_backward(out[-1], flow)
        out.append(flicker.suppress_flicker(alpha, warped, motion.flow_magnitude(flow),
                                            strength=0.5, motion_limit=0.005 * W))
        previous_grey = grey
    return out


def test_when_the_soft_band_flickers_on_a_still_shot_then_dtssd_goes_down():
    frames, noisy, truth = flickering_clip()
    before = metrics.dtssd(noisy, [truth] * len(noisy))
    after = metrics.dtssd(steadied(frames, noisy), [truth] * len(noisy))
    assert after < 0.75 * before, (before, after)


def test_when_an_edge_moves_fast_then_the_flicker_step_does_not_smear_it():
    frames, alphas = [], []
    for i in range(6):
        frame = background()
        paint(frame, 20 + 16 * i, 30, RED, size=30, seed=1)
        alpha = np.zeros((H, W), np.float32)
        alpha[30:60, 20 + 16 * i:50 + 16 * i] = 1.0
        alphas.append(cv2.GaussianBlur(alpha, (0, 0), 1.0))  # a soft edge: inside the band
        frames.append(frame)
    out = steadied(frames, alphas)
    for i in range(1, 6):
        np.testing.assert_allclose(out[i][25:65], alphas[i][25:65], atol=0.02)
    # the same blend without motion compensation and without the motion gate would smear
    smeared = alphas[3] + 0.5 * (alphas[2] - alphas[3])
    assert float(np.abs(smeared - alphas[3]).max()) > 0.3


# -- with the real prior ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def portrait(srgb_clip):
    return srgb_clip(8, 192, 144)


def test_when_no_mask_is_given_then_the_default_engine_is_exactly_rvm(portrait):
    guided, plain = create_engine("rvm-guided", "cpu"), create_engine("rvm", "cpu")
    cut = np.ascontiguousarray(1.0 - portrait[0][::-1])  # a cut: both reset at the same frame
    for frame in [*portrait[:4], cut, *portrait[4:]]:
        a, b = guided.process(frame), plain.process(frame)
        np.testing.assert_array_equal(a.alpha, b.alpha)
        np.testing.assert_array_equal(a.foreground, b.foreground)
    assert guided.cuts_detected == plain.cuts_detected == 2  # into the other shot and back


def test_when_the_guided_state_is_saved_and_loaded_then_the_run_continues_exactly(portrait):
    engine = create_engine("rvm-guided", "cpu")
    first = engine.process(portrait[0]).alpha
    mask = cv2.dilate((first > 0.5).astype(np.uint8), np.ones((7, 7), np.uint8))
    engine.reset()
    continuous = [engine.process(f, {"mask": mask.astype(np.float32)} if i == 0 else None).alpha
                  for i, f in enumerate(portrait)]
    engine.reset()
    for i, frame in enumerate(portrait[:4]):
        engine.process(frame, {"mask": mask.astype(np.float32)} if i == 0 else None)
    saved = {k: np.array(v) for k, v in engine.state().items()}
    assert all(isinstance(v, np.ndarray) for v in saved.values())
    assert {"guide_memory", "guide_target", "guide_alpha", "focus_r1"} <= set(saved)
    other = create_engine("rvm-guided", "cpu")
    other.load_state(saved)
    for frame, expected in zip(portrait[4:], continuous[4:]):
        np.testing.assert_array_equal(other.process(frame).alpha, expected)


def test_when_the_manifest_is_read_then_video_matte_defaults_to_the_guided_engine():
    from mattekit.inference.engines.registry import default_engine, engine_spec

    spec = default_engine("video-matte")
    assert spec.name == "rvm-guided" and spec.temporal and spec.key_inputs == ("mask",)
    assert engine_spec("rvm").node == "video-matte"  # plain RVM stays available
