"""sparse-4k-refine: key region, tile-sparse refinement equal to the dense one on K, the exact
fusion, temporal context over clips, and the engine through the real CLI on real EXRs."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from mattekit.inference import keyregion, metrics
from mattekit.inference.cleanplate import resized_to
from mattekit.inference.cli import main
from mattekit.inference.engines.registry import create_engine, default_engine
from mattekit.inference.errors import EngineError
from mattekit.inference.exrio import read_exr, write_exr
from mattekit.inference.sparse_refine import (
    RefineSettings,
    TemporalContext,
    fused,
    refine_frame,
)

H, W = 160, 224
FACTOR = 8  # the coarse alpha's downsample, as 4K -> 512 (7.5x)
FG = np.array([0.85, 0.55, 0.25], np.float32)
BG = np.array([0.15, 0.3, 0.55], np.float32)


def hairy_disc(shift: float = 0.0) -> np.ndarray:
    """Ground-truth alpha: a disc with a wavy, one-pixel-soft edge (detail finer than 8 px)."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    angle = np.arctan2(yy - H / 2, xx - W / 2 - shift)
    radius = 50 + 5 * np.sin(angle * 23)
    return np.clip(radius - np.hypot(yy - H / 2, xx - W / 2 - shift) + 0.5, 0, 1)


def composite(alpha: np.ndarray, noise: float = 0.01, seed: int = 0) -> np.ndarray:
    """sRGB plate I = aF + (1-a)B with a little grain."""
    rng = np.random.default_rng(seed)
    image = alpha[..., None] * FG + (1 - alpha[..., None]) * BG
    return np.clip(image + rng.normal(0, noise, image.shape), 0, 1).astype(np.float32)


def coarse_of(alpha: np.ndarray) -> np.ndarray:
    return cv2.resize(alpha, (W // FACTOR, H // FACTOR), interpolation=cv2.INTER_AREA)


def key_for(coarse: np.ndarray) -> np.ndarray:
    small = keyregion.feathered_key(coarse, 0.02, 0.98, 16 / FACTOR, 8 / FACTOR)
    return np.clip(resized_to(small, (H, W)), 0, 1)


# -- key region ----------------------------------------------------------------------------

def test_when_the_band_is_dilated_and_feathered_then_k_is_one_on_it_and_ramps_to_zero():
    coarse = np.zeros((40, 40), np.float32)
    coarse[:, 20:] = 1.0
    coarse[:, 20] = 0.5  # a one-pixel soft band
    key = keyregion.feathered_key(coarse, 0.02, 0.98, dilation=6, feather=3)
    assert key[:, 17:24].min() == 1.0            # band + 3 px stays fully refined
    assert 0 < key[5, 25] < 1 and 0 < key[5, 15] < 1  # the feather ramp
    assert key[:, :13].max() == 0 and key[:, 28:].max() == 0  # beyond the dilation: coarse
    assert not keyregion.feathered_key(np.ones((8, 8), np.float32), 0.02, 0.98, 4, 2).any()


def test_when_k_covers_few_tiles_then_only_their_strips_are_computed():
    key = np.zeros((256, 512), np.float32)
    key[70:80, 100:140] = 1.0  # inside tile row 1, columns 1-2
    key[200, 500] = 0.3
    strips = keyregion.tile_strips(keyregion.active_tiles(key), key.shape)
    assert strips == [keyregion.Region(64, 128, 64, 192), keyregion.Region(192, 256, 448, 512)]


# -- refinement ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scene():
    alpha = hairy_disc()
    src = composite(alpha)
    coarse = coarse_of(alpha)
    return alpha, src, resized_to(coarse, (H, W)), key_for(coarse)


def test_when_refined_sparsely_then_alpha_on_k_equals_the_dense_refinement(scene):
    _, src, coarse_up, key = scene
    sparse = refine_frame(src, coarse_up, key, RefineSettings())
    dense = refine_frame(src, coarse_up, key, RefineSettings(), dense=True)
    inside = key > 0
    assert 0.05 < inside.mean() < 0.6
    assert sum(r.area for r in sparse.regions) < H * W
    np.testing.assert_allclose(sparse.alpha[inside], dense.alpha[inside], atol=1e-5)
    np.testing.assert_array_equal(sparse.alpha[~inside], coarse_up[~inside])  # A_c off K


def test_when_fused_then_alpha_is_exactly_k_detail_plus_one_minus_k_coarse(scene):
    _, src, coarse_up, key = scene
    result = refine_frame(src, coarse_up, key, RefineSettings())
    for region, detail in result.detail.items():
        y, x = region.slices
        expected = key[y, x] * detail + (1 - key[y, x]) * coarse_up[y, x]
        np.testing.assert_allclose(result.alpha[y, x], expected, atol=1e-6)
    assert fused(np.float32(0.25), np.float32(1.0), np.float32(0.0)) == 0.25


def test_when_a_coarse_alpha_is_refined_then_grad_and_mad_drop_well_below_the_upsample(scene):
    alpha, src, coarse_up, key = scene
    refined = refine_frame(src, coarse_up, key, RefineSettings()).alpha
    assert metrics.grad(refined, alpha) < 0.7 * metrics.grad(coarse_up, alpha)
    assert metrics.mad(refined, alpha) < metrics.mad(coarse_up, alpha)


def test_when_a_static_edge_has_grain_then_clip_context_steadies_its_alpha(scene):
    alpha, _, coarse_up, key = scene
    frames = [composite(alpha, noise=0.01, seed=s) for s in range(4)]
    context = TemporalContext(clip_length=4)
    alone, steadied = [], []
    for frame in frames:
        alone.append(refine_frame(frame, coarse_up, key, RefineSettings()).alpha)
        steadied.append(refine_frame(frame, coarse_up, key, RefineSettings(),
                                     temporal=context).alpha)
        context.next_frame()
    assert context.position == 0 and context.previous == {}  # a new clip starts afresh
    flicker = [float(np.abs(np.diff(np.stack(a), axis=0)).mean()) for a in (alone, steadied)]
    assert flicker[1] < 0.6 * flicker[0]
    np.testing.assert_array_equal(steadied[0], alone[0])  # the clip's first frame: its own


def test_when_the_clip_memory_is_saved_and_loaded_then_the_next_frame_is_unchanged(scene):
    alpha, _, coarse_up, key = scene
    frames = [composite(alpha, seed=s) for s in range(3)]
    continuous, resumed = TemporalContext(), TemporalContext()
    for frame in frames[:2]:
        refine_frame(frame, coarse_up, key, RefineSettings(), temporal=continuous)
        continuous.next_frame()
    resumed.load_state({k: np.array(v) for k, v in continuous.state().items()})
    a = refine_frame(frames[2], coarse_up, key, RefineSettings(), temporal=continuous).alpha
    b = refine_frame(frames[2], coarse_up, key, RefineSettings(), temporal=resumed).alpha
    np.testing.assert_array_equal(a, b)


# -- the engine ----------------------------------------------------------------------------

def test_when_the_node_is_rendered_without_an_engine_name_then_sparse_refine_runs():
    assert default_engine("sparse-4k-refine").name == "sparse-refine"


def test_when_thresholds_are_inverted_then_the_engine_refuses_naming_both():
    with pytest.raises(EngineError, match="low_threshold.*high_threshold"):
        create_engine("sparse-refine", "cpu", {"low_threshold": 0.9, "high_threshold": 0.1})


@pytest.fixture
def shot(tmp_path, write_linear_sequence):
    """Three plate frames (EXR, scene-linear) and their coarse alphas at 1/8 resolution."""
    alphas = [hairy_disc(shift=2.0 * i) for i in range(3)]
    write_linear_sequence(tmp_path, [composite(a, seed=i) for i, a in enumerate(alphas)])
    (tmp_path / "coarse").mkdir()
    for i, a in enumerate(alphas):
        small = coarse_of(a)
        write_exr(tmp_path / "coarse" / f"c.{i + 1:04d}.exr", np.repeat(small[..., None], 3, 2),
                  small, pixel_type="float")
    return tmp_path, alphas


def render(shot_dir: Path, *extra: str) -> int:
    return main(["render", "sparse-4k-refine", "--plate", str(shot_dir / "plate.####.exr"),
                 "--out", str(shot_dir / "out" / "a.####.exr"), "--colorspace", "ACEScg",
                 "--cache-dir", str(shot_dir / "cache"), "--quiet", *extra])


def test_when_rendered_with_a_coarse_input_then_alpha_is_refined_and_keyregion_is_written(shot):
    shot_dir, alphas = shot
    assert render(shot_dir, "--coarse", str(shot_dir / "coarse" / "c.####.exr")) == 0
    for frame, truth in enumerate(alphas, start=1):
        matte = read_exr(shot_dir / "out" / f"a.{frame:04d}.exr")
        coarse_up = resized_to(coarse_of(truth), (H, W))
        assert metrics.grad(matte.alpha, truth) < 0.7 * metrics.grad(coarse_up, truth)
        key = matte.layers["keyregion.Y"]
        assert key.shape == (H, W) and 0.05 < float((key > 0).mean()) < 0.6
        assert float(key[0, 0]) == 0.0 and float(key[H // 2, W // 2]) == 0.0  # flat: not in K
        assert matte.metadata["mattekit/engine"] == "sparse-refine"


def test_when_a_coarse_frame_is_missing_then_the_error_names_the_file_and_frame(shot, capsys):
    shot_dir, _ = shot
    (shot_dir / "coarse" / "c.0002.exr").unlink()
    assert render(shot_dir, "--coarse", str(shot_dir / "coarse" / "c.####.exr")) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("mattekit: error:") and "c.####.exr" in line
    assert line.endswith("1 of 3 frames missing: 2")
    assert not (shot_dir / "out").exists() or not any((shot_dir / "out").iterdir())


def test_when_the_coarse_alpha_has_another_aspect_then_the_error_names_file_and_frame(
        shot, capsys):
    shot_dir, _ = shot
    wrong = shot_dir / "coarse" / "c.0001.exr"
    write_exr(wrong, np.zeros((20, 20, 3), np.float32), np.zeros((20, 20), np.float32))
    assert render(shot_dir, "--coarse", str(shot_dir / "coarse" / "c.####.exr"),
                  "--frames", "1") == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{wrong}, frame 1: is 20x20 but the plate is {W}x{H}" in line
    assert not (shot_dir / "out").exists() or not any((shot_dir / "out").iterdir())


def test_when_no_coarse_is_given_then_a_rough_mask_of_a_prop_becomes_the_coarse_alpha(shot):
    """RVM knows people only: for a prop its alpha is empty, so the rough Roto is refined."""
    shot_dir, alphas = shot
    rough = cv2.GaussianBlur(coarse_of(alphas[0]), (0, 0), 1.0)
    roto = resized_to(rough, (H, W))
    write_exr(shot_dir / "roto.exr", np.repeat(roto[..., None], 3, 2), roto)
    assert render(shot_dir, "--mask", str(shot_dir / "roto.exr"), "--frames", "1") == 0
    matte = read_exr(shot_dir / "out" / "a.0001.exr")
    assert metrics.grad(matte.alpha, alphas[0]) < 0.7 * metrics.grad(roto, alphas[0])
    assert matte.alpha[H // 2, W // 2] > 0.95 and matte.alpha[2, 2] < 0.05


def test_when_the_edge_is_soft_then_the_foreground_is_unmixed_from_the_background(scene):
    alpha, src, coarse_up, key = scene
    refined = refine_frame(src, coarse_up, key, RefineSettings())
    soft = (alpha > 0.2) & (alpha < 0.8)
    unmixed = np.abs(refined.foreground[soft] - FG).mean()
    mixed = np.abs(src[soft] - FG).mean()  # the plate itself carries the background
    assert unmixed < 0.05 < mixed
    untouched = np.ones((H, W), bool)
    for region in refined.regions:
        untouched[region.slices] = False
    assert untouched.any()
    np.testing.assert_array_equal(refined.foreground[untouched], src[untouched])


def test_when_a_mid_shot_frame_is_rendered_alone_or_resumed_then_it_equals_the_sequential_one(
        shot):
    """warmup_frames=-1 replays the clip from the shot's first frame; a render after a cached
    one resumes from the clip memory stored beside the last cached frame."""
    shot_dir, _ = shot
    coarse = ["--coarse", str(shot_dir / "coarse" / "c.####.exr")]
    assert render(shot_dir, *coarse) == 0

    def render_frames(frames: str, out: str, cache: str) -> Path:
        assert main(["render", "sparse-4k-refine", "--plate", str(shot_dir / "plate.####.exr"),
                     *coarse, "--frames", frames, "--out", str(shot_dir / out / "a.####.exr"),
                     "--colorspace", "ACEScg", "--cache-dir", str(shot_dir / cache),
                     "--quiet"]) == 0
        return shot_dir / out / "a.0003.exr"

    alone = read_exr(render_frames("3", "alone", "fresh-cache"))
    render_frames("1-2", "first", "resume-cache")
    resumed = read_exr(render_frames("3", "resumed", "resume-cache"))
    sequential = read_exr(shot_dir / "out" / "a.0003.exr")
    assert float((sequential.layers["keyregion.Y"] > 0).mean()) > 0.05
    for other in (alone, resumed):
        np.testing.assert_array_equal(other.alpha, sequential.alpha)
        np.testing.assert_array_equal(other.rgb, sequential.rgb)
    coarse += ["--param", "clip_length=1"]  # no clip memory: frame 3 is not the same
    assert not np.array_equal(read_exr(render_frames("3", "no-clip", "x-cache")).alpha,
                              sequential.alpha)


def test_when_coarse_is_given_to_another_node_then_the_cli_says_it_is_not_its_input(
        shot, capsys):
    shot_dir, _ = shot
    code = main(["render", "video-matte", "--plate", str(shot_dir / "plate.####.exr"),
                 "--coarse", str(shot_dir / "coarse" / "c.####.exr"), "--quiet",
                 "--cache-dir", str(shot_dir / "cache")])
    assert code == 1
    assert capsys.readouterr().err.strip().endswith(
        "--coarse is not an input of video-matte (engine 'rvm-guided')")
