"""parallax-matte: a second view with camera parallax decides the edge; the maths, the engine,
the patch tiler on it, and the CLI with real EXR sequences (--reference / --reference-offset)."""
from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from mattekit.inference import parallax
from mattekit.inference.cli import main
from mattekit.inference.engines.registry import create_engine
from mattekit.inference.exrio import read_exr, write_exr
from mattekit.inference.render import RenderJob, render

W, H = 160, 120
MARGIN = 16


def textured(seed: int, width: int, height: int) -> np.ndarray:
    """A linear background with structure at several scales (what flow and the solve need)."""
    rng = np.random.default_rng(seed)
    layers = [cv2.resize(rng.random((height // s + 1, width // s + 1, 3)).astype(np.float32),
                         (width, height), interpolation=cv2.INTER_CUBIC) for s in (2, 5, 14)]
    return np.clip(0.05 + 0.5 * sum(layers) / 3.0, 0.01, 1.0).astype(np.float32)


def subject(shift: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """A disc with a wide semi-transparent fringe (alpha 0.2..0.6, like hair), its colour
    close to the background's; moved by ``shift`` (x, y) pixels."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    radius = np.hypot(xx - W * 0.45 - shift[0], yy - H * 0.5 - shift[1])
    core = np.clip(H * 0.25 - radius + 0.5, 0.0, 1.0)
    fringe = np.where(radius < H * 0.25 + 10, 0.2 + 0.4 * (0.5 + 0.5 * np.sin(xx / 2.0)), 0.0)
    alpha = np.maximum(core, fringe).astype(np.float32)
    fg = np.empty((H, W, 3), np.float32)
    fg[...] = (0.35, 0.3, 0.25)
    fg[..., 1] += 0.1 * np.sin((xx - shift[0]) / 5.0)
    return fg, alpha


def composite(fg, alpha, bg):
    return (alpha[..., None] * fg + (1 - alpha[..., None]) * bg).astype(np.float32)


def view(big: np.ndarray, camera: int, subject_shift: float) -> np.ndarray:
    """The scene seen with the background shifted by ``camera`` px and the subject by
    ``subject_shift`` px (both along x)."""
    fg, alpha = subject((subject_shift, 0.0))
    background = big[MARGIN:MARGIN + H, MARGIN + camera:MARGIN + camera + W]
    return composite(fg, alpha, background)


def rough_mask(alpha: np.ndarray, grow: int = 4) -> np.ndarray:
    kernel = np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)
    return cv2.dilate((alpha > 0.5).astype(np.uint8), kernel).astype(np.float32)


def mad(a, b) -> float:
    return float(np.mean(np.abs(a - b)))


@pytest.fixture(scope="module")
def scene():
    big = textured(3, W + 2 * MARGIN, H + 2 * MARGIN)
    fg, alpha = subject()
    plate = view(big, 0, 0.0)
    reference = view(big, 2, 11.0)  # camera moved: background 2 px, subject 11 px
    return fg, alpha, plate, reference, big


@pytest.fixture(scope="module")
def engine():
    return create_engine("parallax", "cpu")


# -- the maths -------------------------------------------------------------------------------

def test_when_the_band_is_filled_then_each_pixel_takes_its_nearest_source_value():
    rng = np.random.default_rng(0)
    source = rng.random((30, 40)) < 0.05
    values = rng.random((30, 40, 2)).astype(np.float32)
    filled = parallax.nearest_fill(values, source)
    assert filled is not None
    ys, xs = np.nonzero(source)
    for y, x in [(0, 0), (15, 20), (29, 39), (7, 33)]:
        distances = np.hypot(ys - y, xs - x)
        match = np.nonzero((values[ys, xs] == filled[y, x]).all(axis=1))[0]
        assert match.size and distances[match].min() <= distances.min() + 0.5
    assert np.array_equal(filled[source], values[source])
    assert parallax.nearest_fill(values, np.zeros((30, 40), bool)) is None


def test_when_both_backgrounds_are_known_then_two_observations_give_alpha_exactly():
    rng = np.random.default_rng(1)
    alpha = rng.random((8, 8)).astype(np.float32)
    fg, b1, b0 = (rng.random((8, 8, 3)).astype(np.float32) for _ in range(3))
    solved, reliability = parallax.solve_two_observations(
        composite(fg, alpha, b1), composite(fg, alpha, b0), b1, b0)
    assert np.abs(solved - alpha).max() < 1e-4
    assert (reliability > 0).all()


def test_when_a_trimap_is_made_then_the_band_has_the_asked_width():
    alpha = np.zeros((60, 60), np.float32)
    alpha[:, 30:] = 1.0
    trimap = parallax.trimap_from_alpha(alpha, band=5)
    row = trimap[30]
    assert (row[:25] == 0).all() and (row[36:] == 1).all()
    assert (row[25:35] == parallax.UNKNOWN).all()


def test_when_a_subject_moves_unlike_the_background_then_motion_finds_it(scene):
    _, alpha, plate, reference, _ = scene
    motion = parallax.dense_flow(plate, reference)
    assert motion is not None
    subject = parallax.motion_subject(motion, (H, W))
    core = alpha > 0.99
    assert float(subject[core].mean()) > 0.9
    assert float(subject[alpha == 0].mean()) < 0.1


def test_when_only_the_camera_moves_over_a_flat_scene_then_no_subject_is_invented(scene):
    big = scene[4]
    plate = big[MARGIN:MARGIN + H, MARGIN:MARGIN + W]
    reference = big[MARGIN + 1:MARGIN + 1 + H, MARGIN + 3:MARGIN + 3 + W]
    motion = parallax.dense_flow(plate, reference)
    assert motion is not None
    assert float(parallax.motion_subject(motion, (H, W)).max()) == 0.0


# -- the engine ------------------------------------------------------------------------------

def test_when_a_second_view_has_parallax_then_alpha_and_foreground_beat_the_same_frame_twice(
        scene, engine):
    fg, alpha, plate, reference, _ = scene
    mask = rough_mask(alpha)
    two = engine.process(plate, {"reference": reference, "mask": mask})
    same = engine.process(plate, {"reference": plate, "mask": mask})
    assert mad(two.alpha, alpha) < 0.75 * mad(same.alpha, alpha)
    truth = fg * alpha[..., None]
    fg_error = [float(np.mean((r.foreground * r.alpha[..., None] - truth) ** 2))
                for r in (two, same)]
    assert fg_error[0] < fg_error[1]
    assert float(two.layers["confidence.Y"].max()) > 0.5
    assert float(same.layers["confidence.Y"].max()) == 0.0


def test_when_the_same_frame_is_given_twice_then_the_result_is_the_single_frame_one(
        scene, engine):
    _, alpha, plate, _, _ = scene
    mask = rough_mask(alpha)
    single, _ = engine.single_frame(plate, mask)
    same = engine.process(plate, {"reference": plate.copy(), "mask": mask})
    assert np.array_equal(same.alpha, single.alpha)
    assert np.array_equal(same.foreground, single.foreground)


def test_when_the_second_view_barely_moves_then_the_result_stays_the_single_frame_one(
        scene, engine):
    """No parallax (a sub-half-pixel camera move) means nothing for the second view to add."""
    _, alpha, plate, _, big = scene
    mask = rough_mask(alpha)
    shifted = cv2.warpAffine(plate, np.float32([[1, 0, 0.2], [0, 1, 0]]), (W, H),
                             borderMode=cv2.BORDER_REPLICATE)
    single, _ = engine.single_frame(plate, mask)
    with pytest.warns(UserWarning, match="adds nothing"):
        result = engine.process(plate, {"reference": shifted, "mask": mask})
    assert mad(result.alpha, single.alpha) < 0.01


def test_when_the_foreground_flow_is_wrong_by_4_px_then_it_still_beats_the_single_frame(
        scene, engine):
    _, alpha, plate, reference, _ = scene
    mask = rough_mask(alpha)
    single, trimap = engine.single_frame(plate, mask)
    flows = parallax.parallax_flows(plate, reference, trimap)
    assert flows is not None
    flows.foreground = flows.foreground + np.float32([4.0 * np.cos(1.0), 4.0 * np.sin(1.0)])
    noisy = parallax.two_view_matte(plate, reference, trimap, flows, single)
    assert mad(noisy.alpha, alpha) < mad(single.alpha, alpha)


def test_when_the_plate_is_textureless_then_it_warns_and_gives_the_single_frame_result(engine):
    plate = np.full((H, W, 3), 0.18, np.float32)
    reference = np.full((H, W, 3), 0.18, np.float32)
    reference[0, 0] = 0.2  # not literally the same frame
    mask = np.zeros((H, W), np.float32)
    mask[40:80, 50:110] = 1.0
    single, _ = engine.single_frame(plate, mask)
    with pytest.warns(UserWarning, match="adds nothing.*single-frame result"):
        result = engine.process(plate, {"reference": reference, "mask": mask})
    assert np.isfinite(result.alpha).all() and np.isfinite(result.foreground).all()
    assert mad(result.alpha, single.alpha) < 1e-3


def test_when_the_reference_has_another_size_then_it_warns_and_gives_the_single_frame(
        scene, engine):
    _, alpha, plate, reference, _ = scene
    mask = rough_mask(alpha)
    with pytest.warns(UserWarning, match="single-frame result"):
        result = engine.process(plate, {"reference": reference[:, :100], "mask": mask})
    single, _ = engine.single_frame(plate, mask)
    assert np.array_equal(result.alpha, single.alpha)


def test_when_no_second_view_reaches_the_engine_then_it_says_how_to_give_one(scene, engine):
    from mattekit.inference.errors import EngineError

    with pytest.raises(EngineError, match="--reference"):
        engine.process(scene[2], {})


def test_when_solved_in_patches_then_the_result_equals_the_whole_frame_solve(scene, engine):
    _, alpha, plate, reference, _ = scene
    single, trimap = engine.single_frame(plate, rough_mask(alpha))
    flows = parallax.parallax_flows(plate, reference, trimap)
    assert flows is not None
    whole = parallax.two_view_matte(plate, reference, trimap, flows, single, patch_size=0)
    tiled = parallax.two_view_matte(plate, reference, trimap, flows, single, patch_size=64)
    assert np.abs(tiled.alpha - whole.alpha).max() < 1e-5
    assert np.abs(tiled.foreground - whole.foreground).max() < 1e-4


def test_when_no_mask_is_given_then_the_subject_the_parallax_finds_is_matted(scene, engine):
    """RVM knows people; this disc is found by its motion against the background."""
    _, alpha, plate, reference, _ = scene
    found = engine.process(plate, {"reference": reference})
    with pytest.warns(UserWarning, match="no subject found.*connect a Mask"):
        blind = create_engine("parallax", "cpu", {"motion_trimap": False}).process(
            plate, {"reference": reference})
    assert mad(found.alpha, alpha) < 0.5 * mad(blind.alpha, alpha)
    assert mad(found.alpha, alpha) < 0.1


def test_when_the_engine_runs_on_a_normal_pair_then_it_raises_no_warning(scene, engine):
    _, alpha, plate, reference, _ = scene
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine.process(plate, {"reference": reference, "mask": rough_mask(alpha)})


# -- the CLI on real EXR sequences -----------------------------------------------------------

@pytest.fixture
def shot(tmp_path, scene) -> Path:
    """plate.0001-0004: the camera moves 1 px and the subject 5.5 px per frame; a rough mask
    still and the truth of frame 1."""
    _, alpha, _, _, big = scene
    for frame in range(1, 5):
        write_exr(tmp_path / f"plate.{frame:04d}.exr", view(big, frame - 1, 5.5 * (frame - 1)),
                  pixel_type="float")
    write_exr(tmp_path / "mask.exr", np.repeat(rough_mask(alpha)[..., None], 3, axis=2),
              pixel_type="float")
    return tmp_path


def run(shot: Path, *extra: str) -> int:
    return main(["render", "parallax-matte", "--plate", str(shot / "plate.####.exr"),
                 "--out", str(shot / "out" / "m.####.exr"), "--cache-dir", str(shot / "cache"),
                 "--colorspace", "lin_rec709", "--mask", str(shot / "mask.exr"), "--quiet",
                 *extra])


def test_when_rendered_with_an_offset_then_frame_n_plus_2_is_the_second_view(shot, scene, capsys):
    _, alpha, plate, _, _ = scene
    assert run(shot, "--frames", "1", "--reference-offset", "2") == 0
    matte = read_exr(shot / "out" / "m.0001.exr")
    assert matte.metadata["mattekit/engine"] == "parallax"
    assert "confidence.Y" in matte.layers and "trimap.Y" in matte.layers
    assert float(matte.layers["confidence.Y"].max()) > 0.5
    engine = create_engine("parallax", "cpu")
    same = engine.process(plate, {"reference": plate, "mask": rough_mask(alpha)})
    assert mad(matte.alpha, alpha) < 0.8 * mad(same.alpha, alpha)


def test_when_the_offset_runs_past_the_shot_then_the_other_side_is_used_with_a_warning(
        shot, capsys):
    assert run(shot, "--frames", "3-4", "--reference-offset", "2") == 0
    assert "3-4 have no frame +2" in capsys.readouterr().err
    assert (shot / "out" / "m.0004.exr").exists()


def test_when_no_reference_frame_exists_then_the_error_names_the_file_and_frame(shot, capsys):
    assert run(shot, "--frames", "2", "--reference-offset", "5") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "plate.0007.exr, frame 7" in err[0] and "frame 2" in err[0]
    assert not (shot / "out").exists() or not any((shot / "out").iterdir())


def test_when_a_reference_clip_is_given_then_it_is_the_second_view(shot, scene):
    _, alpha, _, _, big = scene
    write_exr(shot / "ref.0001.exr", view(big, 2, 11.0), pixel_type="float")
    assert run(shot, "--frames", "1", "--reference", str(shot / "ref.####.exr")) == 0
    matte = read_exr(shot / "out" / "m.0001.exr")
    assert float(matte.layers["confidence.Y"].max()) > 0.5


def test_when_the_reference_is_smaller_with_the_same_aspect_then_it_is_resampled_with_a_warning(
        shot, scene, capsys):
    _, _, _, reference, _ = scene
    write_exr(shot / "half.exr", cv2.resize(reference, (W // 2, H // 2),
                                            interpolation=cv2.INTER_AREA), pixel_type="float")
    assert run(shot, "--frames", "1", "--reference", str(shot / "half.exr")) == 0
    assert "resampled" in capsys.readouterr().err
    assert (shot / "out" / "m.0001.exr").exists()


def test_when_the_reference_has_another_aspect_then_the_error_names_file_and_frame(
        shot, scene, capsys):
    write_exr(shot / "square.exr", scene[3][:, :H], pixel_type="float")
    assert run(shot, "--frames", "2", "--reference", str(shot / "square.exr")) == 1
    err = capsys.readouterr().err
    assert "square.exr" in err and "frame 2" in err and "aspect" in err
    assert not (shot / "out" / "m.0002.exr").exists()


def test_when_the_reference_clip_lacks_frames_then_they_are_named(shot, capsys):
    write_exr(shot / "ref.0001.exr", np.zeros((H, W, 3), np.float32), pixel_type="float")
    assert run(shot, "--frames", "1-3", "--reference", str(shot / "ref.####.exr")) == 1
    err = capsys.readouterr().err
    assert "ref.####.exr" in err and "2-3" in err


def test_when_the_plate_is_a_still_without_a_reference_then_it_says_to_give_one(shot, capsys):
    code = main(["render", "parallax-matte", "--plate", str(shot / "plate.0001.exr"),
                 "--out", str(shot / "o.exr"), "--no-cache", "--quiet"])
    assert code == 1
    assert "--reference" in capsys.readouterr().err


def test_when_another_node_is_given_a_reference_then_it_is_refused(shot, capsys):
    code = main(["render", "video-matte", "--plate", str(shot / "plate.####.exr"),
                 "--reference", str(shot / "plate.0001.exr"), "--quiet"])
    assert code == 1
    assert "--reference is not an input of video-matte" in capsys.readouterr().err


def test_when_the_offset_changes_then_the_cache_recomputes(shot):
    job = RenderJob(node="parallax-matte", plate=str(shot / "plate.####.exr"), frames="1",
                    mask=str(shot / "mask.exr"), colorspace="lin_rec709",
                    cache_root=shot / "cache2", params={"reference_offset": 2})
    assert render(job).computed == [1]
    assert render(job).cached == [1]
    other = RenderJob(node="parallax-matte", plate=str(shot / "plate.####.exr"), frames="1",
                      mask=str(shot / "mask.exr"), colorspace="lin_rec709",
                      cache_root=shot / "cache2", params={"reference_offset": 1})
    assert render(other).computed == [1]


# -- the Nuke side ---------------------------------------------------------------------------

def host_knobs():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugin"))
    from mattekit_host import knobs

    return knobs


def parallax_state(knobs, connected, values=None, plate_range=(1001, 1010)):
    return knobs.NodeState(kind="ParallaxMatte", name="ParallaxMatte1",
                           full_name="ParallaxMatte1", script="/shots/a/comp_v001.nk",
                           values=dict(values or {}), connected=tuple(connected),
                           plate_range=plate_range)


def test_when_the_reference_input_is_connected_then_the_job_carries_it():
    knobs = host_knobs()
    plan = knobs.build_job(parallax_state(knobs, ("Plate", "Reference", "Mask")), "/cache",
                           1001, 1003)
    assert plan.job["reference"] == f"{plan.work}/inputs/Reference.####.exr"
    assert plan.job["mask"] == f"{plan.work}/inputs/Mask.####.exr"
    assert ("Write_Reference", plan.job["reference"]) in plan.writes
    assert plan.write_frames.get("Write_Plate") is None  # the processed frames only
    assert plan.job["params"] == {"reference_offset": 2, "trimap_band": 16, "flow_size": 1024,
                                  "motion_trimap": True, "patch_size": 0}
    assert not plan.warnings


def test_when_the_plate_is_its_own_reference_then_its_write_renders_the_offset_frames():
    knobs = host_knobs()
    plan = knobs.build_job(parallax_state(knobs, ("Plate", "Mask"), {"reference_offset": 3}),
                           "/cache", 1006, 1009)
    assert "reference" not in plan.job and plan.job["params"]["reference_offset"] == 3
    # 1008 + 3 and 1009 + 3 are past the plate's last frame (1010): the worker then uses
    # 1005 and 1006, as here
    assert plan.write_frames["Write_Plate"] == [1005, 1006, 1007, 1008, 1009, 1010]
