"""background-matte: the clean plate decides; registration, exposure, noise, shadows, bad input."""
from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from mattekit.inference import cleanplate
from mattekit.inference.cli import main
from mattekit.inference.exrio import read_exr, write_exr
from mattekit.inference.render import RenderJob, render

W, H = 160, 120


def textured_background(seed: int, width: int = W, height: int = H) -> np.ndarray:
    """A linear background with structure at several scales (features to register on)."""
    rng = np.random.default_rng(seed)
    layers = [cv2.resize(rng.random((height // s + 1, width // s + 1, 3)).astype(np.float32),
                         (width, height), interpolation=cv2.INTER_CUBIC) for s in (2, 6, 20)]
    image = 0.05 + 0.3 * sum(layers) / 3.0
    for _ in range(width * height // 400):  # sharp-cornered objects: features to match
        x, y = int(rng.integers(0, width - 8)), int(rng.integers(0, height - 8))
        w, h = int(rng.integers(4, 16)), int(rng.integers(4, 16))
        image[y:y + h, x:x + w] = rng.random(3) * 0.6 + 0.05
    return np.clip(image, 0.01, 1.0).astype(np.float32)


def subject(width: int = W, height: int = H) -> tuple[np.ndarray, np.ndarray]:
    """A soft-edged disc of a colour unlike the background, and its exact alpha."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    radius = np.hypot(xx - width * 0.45, yy - height * 0.5)
    alpha = np.clip((height * 0.3 - radius) / 3.0 + 0.5, 0.0, 1.0).astype(np.float32)
    fg = np.empty((height, width, 3), np.float32)
    fg[...] = (0.8, 0.15, 0.6)
    fg[..., 1] += 0.1 * np.sin(xx / 5.0)
    return fg, alpha


def composite(fg, alpha, bg):
    return (alpha[..., None] * fg + (1 - alpha[..., None]) * bg).astype(np.float32)


def mad(a, b) -> float:
    return float(np.mean(np.abs(a - b)))


def difference_key(plate, clean):
    return np.clip(np.max(np.abs(plate - clean), axis=2) / 0.1, 0, 1)


@pytest.fixture(scope="module")
def scene():
    fg, alpha = subject()
    bg = textured_background(1)
    return fg, alpha, bg, composite(fg, alpha, bg)


def test_when_the_clean_plate_is_exact_then_alpha_is_close_and_beats_a_difference_key(scene):
    fg, alpha, bg, plate = scene
    result = cleanplate.clean_plate_matte(plate, bg)
    assert mad(result.alpha, alpha) < 0.01
    assert mad(result.alpha, alpha) < 0.6 * mad(difference_key(plate, bg), alpha)
    solid = alpha > 0.999
    close = np.abs(result.foreground[solid] - fg[solid]).max(axis=1) < 5e-3
    assert float(np.mean(close)) > 0.995


def test_when_the_clean_plate_is_misregistered_then_registration_recovers_the_matte(scene):
    fg, alpha, _, _ = scene
    big = textured_background(2, int(W * 1.4), int(H * 1.4))
    y0, x0 = (big.shape[0] - H) // 2, (big.shape[1] - W) // 2
    centre = (big.shape[1] / 2, big.shape[0] / 2)
    matrix = cv2.getRotationMatrix2D(centre, 3.0, 1.06)
    warped = cv2.warpAffine(big, matrix, (big.shape[1], big.shape[0]),
                            borderMode=cv2.BORDER_REFLECT)
    plate_bg, clean = big[y0:y0 + H, x0:x0 + W], warped[y0:y0 + H, x0:x0 + W]
    plate = composite(fg, alpha, plate_bg)
    result = cleanplate.clean_plate_matte(plate, clean)
    assert result.registered
    assert mad(result.alpha, alpha) < 0.5 * mad(difference_key(plate, clean), alpha)
    assert mad(result.alpha, alpha) < 0.04
    # the plate's corners have no clean-plate pixels after alignment: not guessed
    assert result.confidence[0, 0] == 0.0 and result.alpha[0, 0] == 0.0
    assert float(np.mean(result.confidence[H // 2 - 5:H // 2 + 5, 5:15])) > 0.9


def _warp_error(found: np.ndarray, truth: np.ndarray, width: int, height: int,
                margin: int = 0) -> float:
    """Largest distance, in pixels, between where two warps send a grid of plate points."""
    grid = np.array([[x, y] for x in np.linspace(margin, width - margin, 5)
                     for y in np.linspace(margin, height - margin, 5)], np.float32)[None]
    return float(np.linalg.norm(cv2.perspectiveTransform(grid, found)
                                - cv2.perspectiveTransform(grid, truth), axis=2).max())


@pytest.mark.parametrize("seed", [2, 3])
def test_when_features_cluster_on_one_side_then_the_warp_still_fits_the_whole_frame(seed):
    # texture (features) on the left half only, a smooth low-contrast right half: a
    # homography fitted to the left extrapolates pixels off on the right; the affine fit
    # to the same matches does not, and the registration keeps the better of the two
    width, height = 320, 240
    big = textured_background(seed, int(width * 1.4), int(height * 1.4))
    rng = np.random.default_rng(seed)
    smooth = cv2.GaussianBlur(rng.random(big.shape).astype(np.float32), (0, 0), 3) * 0.3 + 0.2
    big[:, big.shape[1] // 2:] = smooth[:, big.shape[1] // 2:]
    y0, x0 = (big.shape[0] - height) // 2, (big.shape[1] - width) // 2
    matrix = cv2.getRotationMatrix2D((big.shape[1] / 2, big.shape[0] / 2), 4.0, 0.93)
    warped = cv2.warpAffine(big, matrix, (big.shape[1], big.shape[0]),
                            borderMode=cv2.BORDER_REFLECT)
    offset = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1.0]])
    truth = np.linalg.inv(offset) @ np.linalg.inv(np.vstack([matrix, [0, 0, 1]])) @ offset
    reg = cleanplate.register_clean_plate(big[y0:y0 + height, x0:x0 + width],
                                          warped[y0:y0 + height, x0:x0 + width])
    assert _warp_error(reg.homography, truth, width, height) < 0.4


def test_when_the_camera_pans_then_a_perspective_warp_is_kept():
    width, height = 320, 240
    plate = textured_background(1, width, height)
    corners = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    pan = cv2.getPerspectiveTransform(corners, corners + np.float32([[6, 4], [-5, 7], [-8, -6],
                                                                      [7, -3]]))
    clean = cv2.warpPerspective(plate, pan, (width, height), borderMode=cv2.BORDER_REFLECT)
    reg = cleanplate.register_clean_plate(plate, clean)
    assert not np.allclose(reg.homography[2, :2], 0.0)  # not an affine approximation
    assert _warp_error(reg.homography, np.linalg.inv(pan), width, height, margin=20) < 0.3


def test_when_the_clean_plate_already_lies_on_the_plate_then_no_features_are_matched(
        scene, monkeypatch):
    _, _, bg, plate = scene

    def no_matching(*_args):
        raise AssertionError("feature matching ran on an aligned clean plate")

    monkeypatch.setattr(cleanplate, "_candidate_warps", no_matching)
    reg = cleanplate.register_clean_plate(plate, bg)
    np.testing.assert_array_equal(reg.homography, np.eye(3))


@pytest.mark.parametrize("move", ["one pixel", "one degree"])
def test_when_the_clean_plate_has_moved_then_it_is_not_taken_as_aligned(scene, move):
    _, _, bg, plate = scene
    if move == "one pixel":
        clean = np.roll(bg, 1, axis=1)
    else:
        rotation = cv2.getRotationMatrix2D((W / 2, H / 2), 1.0, 1.0)
        clean = cv2.warpAffine(bg, rotation, (W, H), borderMode=cv2.BORDER_REFLECT)
    assert cleanplate._already_aligned(plate, bg)
    assert not cleanplate._already_aligned(plate, clean)


@pytest.mark.parametrize("seed", [3, 5])
def test_when_a_noisy_clean_plate_is_only_brighter_then_it_is_not_warped(seed):
    # an aligned clean plate shot 25 % brighter, heavy noise on both, faint texture: the few
    # noisy feature matches fit some near-identity warp, which must not win just because it
    # happens to fit the brightness mismatch (each candidate is judged with its gains undone)
    fg, alpha = subject(320, 240)
    rng = np.random.default_rng(seed)
    background = 0.15 + 0.25 * (textured_background(seed, 320, 240) - 0.05)
    plate = composite(fg, alpha, background) + rng.normal(0, 0.03, background.shape)
    clean = background * 1.25 + rng.normal(0, 0.03, background.shape)
    reg = cleanplate.register_clean_plate(plate.astype(np.float32), clean.astype(np.float32))
    np.testing.assert_array_equal(reg.homography, np.eye(3))


def test_when_a_held_clean_plate_serves_several_frames_then_its_features_are_found_once(
        scene, monkeypatch):
    fg, alpha, _, _ = scene
    big = textured_background(5, int(W * 1.4), int(H * 1.4))
    y0, x0 = (big.shape[0] - H) // 2, (big.shape[1] - W) // 2
    rotation = cv2.getRotationMatrix2D((big.shape[1] / 2, big.shape[0] / 2), 3.0, 1.04)
    clean = cv2.warpAffine(big, rotation, (big.shape[1], big.shape[0]),
                           borderMode=cv2.BORDER_REFLECT)[y0:y0 + H, x0:x0 + W]
    computed = []
    features = cleanplate._features
    monkeypatch.setattr(cleanplate, "_features", lambda grey: computed.append(1) or features(grey))
    cleanplate._clean_plate_features.clear()
    homographies = []
    for shift in (0, 2, 4):  # three frames: the subject moves, the clean plate is held
        plate = composite(np.roll(fg, shift, axis=1), np.roll(alpha, shift, axis=1),
                          big[y0:y0 + H, x0:x0 + W])
        homographies.append(cleanplate.register_clean_plate(plate, clean).homography)
    assert len(computed) == 3 + 1  # each frame's features, the clean plate's once
    cleanplate._clean_plate_features.clear()  # the same answer without the remembered features
    np.testing.assert_allclose(cleanplate.register_clean_plate(plate, clean).homography,
                               homographies[-1])


def test_when_the_subject_reaches_an_uncovered_border_then_its_matte_continues_into_it():
    # the clean plate is zoomed in: after alignment a border of the plate has no clean-plate
    # pixels; a subject that runs off the left edge must stay subject there, and the
    # background beside it background
    big = textured_background(3, int(W * 1.4), int(H * 1.4))
    y0, x0 = (big.shape[0] - H) // 2, (big.shape[1] - W) // 2
    centre = (big.shape[1] / 2, big.shape[0] / 2)
    warped = cv2.warpAffine(big, cv2.getRotationMatrix2D(centre, 0.0, 1.12),
                            (big.shape[1], big.shape[0]), borderMode=cv2.BORDER_REFLECT)
    plate_bg, clean = big[y0:y0 + H, x0:x0 + W], warped[y0:y0 + H, x0:x0 + W]
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    alpha = np.clip((W * 0.4 - xx) / 2.0, 0.0, 1.0) * (np.abs(yy - H / 2) < H * 0.25)
    alpha = cv2.GaussianBlur(alpha.astype(np.float32), (0, 0), 1.0)
    fg = np.empty((H, W, 3), np.float32)
    fg[...] = (0.8, 0.15, 0.6)
    plate = composite(fg, alpha, plate_bg)
    result = cleanplate.clean_plate_matte(plate, clean)
    uncovered = result.confidence == 0.0
    assert result.registered and uncovered.mean() > 0.05
    subject_border = uncovered & (alpha > 0.99)
    background_border = uncovered & (alpha < 0.01)
    assert subject_border.sum() > 50 and background_border.sum() > 50
    assert float(np.mean(result.alpha[subject_border] > 0.9)) > 0.95
    assert float(np.mean(result.alpha[background_border])) < 0.05


def test_when_the_clean_plate_is_brighter_then_the_exposure_change_is_undone(scene):
    fg, alpha, bg, plate = scene
    gains = cleanplate.exposure_gains(plate, bg * 1.25)
    np.testing.assert_allclose(gains, 0.8, atol=0.02)
    result = cleanplate.clean_plate_matte(plate, bg * 1.25)
    assert mad(result.alpha, alpha) < 0.02


def test_when_a_shadow_falls_on_the_background_then_it_stays_background(scene):
    fg, alpha, bg, _ = scene
    shade = np.ones((H, W), np.float32)
    shade[:, 110:] = 0.55  # a hard shadow band the subject does not touch
    plate = composite(fg, alpha, bg * shade[..., None])
    result = cleanplate.clean_plate_matte(plate, bg)
    assert float(np.mean(result.alpha[:, 115:])) < 0.02
    assert float(np.mean(difference_key(plate, bg)[:, 115:])) > 0.5  # a plain key fails there


def test_when_a_darker_subject_shares_the_background_hue_then_it_is_not_taken_for_shadow():
    # a subject that is a darker copy of the background's hue, with its own texture: per pixel
    # it looks like a shadow; the shading field, smooth by construction, does not fit it
    bg = textured_background(3)
    rng = np.random.default_rng(4)
    texture = cv2.GaussianBlur(rng.random((H, W)).astype(np.float32), (0, 0), 1.0)
    ratio = 0.45 + 0.5 * (texture - texture.min()) / np.ptp(texture)
    alpha = np.zeros((H, W), np.float32)
    alpha[30:90, 40:110] = 1.0
    plate = composite(bg * ratio[..., None], alpha, bg)
    result = cleanplate.clean_plate_matte(plate, bg, prior=None)
    # a per-pixel hue test called all of it shadow (alpha 0); most of it is found now
    assert float(np.mean(result.alpha[35:85, 45:105])) > 0.5


def test_when_a_shadow_is_soft_then_the_shading_field_follows_it():
    bg = textured_background(5)
    xx = np.mgrid[0:H, 0:W][1].astype(np.float32)
    shade = 1.0 - 0.5 * np.clip((xx - 60) / 40.0, 0, 1)  # a ramp from light to 50 % shadow
    shading = cleanplate.shadow_shading(bg * shade[..., None], bg, sigma=1e-4)
    np.testing.assert_allclose(shading[:, 10:50], 1.0, atol=0.01)
    np.testing.assert_allclose(shading[:, 110:150], 0.5, atol=0.02)


@pytest.mark.parametrize("sigma", [0.0, 0.005])
def test_when_a_warp_leaves_residue_on_texture_then_the_noise_read_is_the_sensor_noise(sigma):
    # a sub-pixel misalignment differs on every edge of the texture; it is not noise, and the
    # noise estimate (which sets how small a difference the subject may make) must not read it
    rng = np.random.default_rng(0)
    background = textured_background(4, 320, 240)
    residue = cv2.warpAffine(background, np.float32([[1, 0, 0.4], [0, 1, 0.3]]), (320, 240),
                             flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    plate = background + rng.normal(0, sigma, background.shape).astype(np.float32)
    clean = residue + rng.normal(0, sigma, background.shape).astype(np.float32)
    difference_noise = sigma * np.sqrt(2.0)  # both plates' noise, per channel
    assert cleanplate.noise_sigma(plate, clean) == pytest.approx(difference_noise, abs=5e-4)


def test_when_a_noise_level_is_given_then_it_replaces_the_measured_one(scene):
    # a faint subject, 0.06 brighter than the background it stands on, on noise-free plates:
    # measured, it is far above the noise; told the plates carry more and more grain, the same
    # difference sinks into it and less and less of the subject stands out
    _, alpha, bg, _ = scene
    faint = composite(bg + 0.06, alpha, bg)
    inside = alpha > 0.999
    measured = cleanplate.clean_plate_matte(faint, bg)
    assert float(measured.alpha[inside].mean()) > 0.95
    told = {level: cleanplate.clean_plate_matte(faint, bg, noise_level=level)
            for level in (0.02, 0.05, 0.1)}
    assert told[0.1].sigma == pytest.approx(0.1 * np.sqrt(2.0))  # both plates' grain
    assert float(told[0.1].alpha[inside].mean()) < 0.7
    covered = [float((told[level].alpha > 0.5).mean()) for level in (0.02, 0.05, 0.1)]
    assert covered[0] > covered[1] > covered[2]


def test_when_white_noise_is_blurred_then_its_deviation_drops_by_the_stated_factor():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, (400, 400)).astype(np.float32)
    measured = float(cv2.GaussianBlur(noise, (0, 0), 1.5)[20:-20, 20:-20].std())
    assert measured == pytest.approx(cleanplate.blurred_noise_factor(1.5), rel=0.05)


def test_when_an_enclosed_region_scores_above_the_open_background_then_it_is_called_subject():
    # per pixel every score below is under the threshold (2.5): the open background and an
    # enclosed gap score like noise, an enclosed patch of a subject close to the background
    # scores higher as a whole; only the patch is called subject
    rng = np.random.default_rng(8)
    score = np.abs(rng.normal(0, 0.8, (H, W))).clip(0, 2.4).astype(np.float32)
    score[20:100, 15:135] = 10.0  # the subject's distinct part
    score[45:75, 30:60] = rng.uniform(1.2, 2.4, (30, 30))  # patch: near-background subject
    score[45:75, 90:120] = np.abs(rng.normal(0, 0.8, (30, 30))).clip(0, 2.4)  # real gap
    regions = cleanplate._subject_like_regions(score)
    assert regions[50:70, 35:55].all()
    assert not regions[50:70, 95:115].any()
    assert not regions[:15].any()


def test_when_the_clean_plate_is_the_plate_itself_then_it_warns_and_is_not_black(scene):
    _, _, _, plate = scene
    prior = np.full((H, W), 0.7, np.float32)
    with pytest.warns(UserWarning, match="identical to the plate"):
        result = cleanplate.clean_plate_matte(plate, plate.copy(), prior=prior)
    np.testing.assert_array_equal(result.alpha, prior)


def test_when_a_mask_is_given_then_nothing_outside_it_is_foreground(scene):
    fg, alpha, bg, _ = scene
    intruder = bg.copy()
    intruder[10:40, 120:150] = (0.9, 0.9, 0.1)  # something else entering the shot
    plate = composite(fg, alpha, intruder)
    mask = (alpha > 0.5).astype(np.float32)
    unmasked = cleanplate.clean_plate_matte(plate, bg)
    masked = cleanplate.clean_plate_matte(plate, bg, mask=mask)
    assert float(np.mean(unmasked.alpha[10:40, 120:150])) > 0.9
    assert float(np.mean(masked.alpha[10:40, 120:150])) < 0.01


@pytest.fixture
def shot(tmp_path, scene) -> Path:
    _, _, bg, plate = scene
    for frame in (1, 2, 3):
        write_exr(tmp_path / f"plate.{frame:04d}.exr", plate, pixel_type="float")
    write_exr(tmp_path / "clean.exr", bg, pixel_type="float")
    return tmp_path


def run(shot: Path, *extra: str) -> int:
    return main(["render", "background-matte", "--plate", str(shot / "plate.####.exr"),
                 "--out", str(shot / "out" / "m.####.exr"), "--cache-dir", str(shot / "cache"),
                 "--colorspace", "lin_rec709", "--quiet", *extra])


def test_when_rendered_from_the_cli_then_alpha_fg_and_confidence_are_written(shot, scene):
    _, alpha, _, _ = scene
    assert run(shot, "--clean-plate", str(shot / "clean.exr")) == 0
    matte = read_exr(shot / "out" / "m.0002.exr")
    assert mad(matte.alpha, alpha) < 0.01
    assert "confidence.Y" in matte.layers
    assert matte.metadata["mattekit/engine"] == "cleanplate"


def test_when_the_clean_plate_is_smaller_with_the_same_aspect_then_it_is_resampled_with_a_warning(
        shot, scene, capsys):
    _, alpha, bg, _ = scene
    write_exr(shot / "half.exr", cv2.resize(bg, (W // 2, H // 2), interpolation=cv2.INTER_AREA),
              pixel_type="float")
    assert run(shot, "--clean-plate", str(shot / "half.exr"), "--frames", "1") == 0
    assert "resampled" in capsys.readouterr().err
    assert mad(read_exr(shot / "out" / "m.0001.exr").alpha, alpha) < 0.05


def test_when_the_clean_plate_has_another_aspect_then_the_error_names_file_and_frame(
        shot, scene, capsys):
    _, _, bg, _ = scene
    write_exr(shot / "square.exr", bg[:, :H], pixel_type="float")
    assert run(shot, "--clean-plate", str(shot / "square.exr"), "--frames", "2") == 1
    err = capsys.readouterr().err
    assert "square.exr" in err and "frame 2" in err and "aspect" in err
    assert not (shot / "out" / "m.0002.exr").exists()


def test_when_the_clean_plate_sequence_is_shorter_than_the_range_then_missing_frames_are_named(
        shot, scene, capsys):
    _, _, bg, _ = scene
    write_exr(shot / "cp.0001.exr", bg, pixel_type="float")
    assert run(shot, "--clean-plate", str(shot / "cp.####.exr"), "--frames", "1-3") == 1
    err = capsys.readouterr().err
    assert "cp.####.exr" in err and "2-3" in err


def test_when_the_clean_plate_is_missing_then_the_error_says_to_give_one(shot, capsys):
    assert run(shot) == 1
    assert "--clean-plate" in capsys.readouterr().err


def test_when_the_clean_plate_is_the_plate_itself_then_the_render_warns_and_uses_the_prior(
        shot, capsys):
    assert run(shot, "--clean-plate", str(shot / "plate.0001.exr"), "--frames", "1") == 0
    assert "identical to the plate" in capsys.readouterr().err
    matte = read_exr(shot / "out" / "m.0001.exr")
    assert np.isfinite(matte.alpha).all()


def test_when_the_engine_runs_then_warnings_are_not_raised_on_a_normal_plate(scene):
    _, _, bg, plate = scene
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cleanplate.clean_plate_matte(plate, bg)


def test_when_rendered_through_render_then_the_cache_serves_a_rerun(shot):
    job = RenderJob(node="background-matte", plate=str(shot / "plate.####.exr"),
                    clean_plate=str(shot / "clean.exr"), colorspace="lin_rec709",
                    cache_root=shot / "cache2")
    assert render(job).computed == [1, 2, 3]
    assert render(job).cached == [1, 2, 3]
    edited = RenderJob(node="background-matte", plate=str(shot / "plate.####.exr"),
                       clean_plate=str(shot / "clean.exr"), colorspace="lin_rec709",
                       cache_root=shot / "cache2", params={"shadow_tolerance": 0.3})
    assert render(edited).computed == [1, 2, 3]


def test_when_the_gizmo_knobs_are_read_then_they_are_exactly_the_engine_parameters():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugin"))
    from mattekit_host import knobs

    from mattekit.inference.engines.registry import default_engine, load_manifest

    manifest = load_manifest()
    for kind in knobs.NODE_TYPES.values():
        engine = manifest.default_engines.get(kind.worker_node)
        if engine is None:
            continue
        spec = default_engine(kind.worker_node, manifest)
        assert {p.name: p.default for p in kind.params} == dict(spec.defaults), kind.gizmo
