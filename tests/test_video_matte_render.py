"""video-matte end to end: the colour path, the recurrent state and the chained cache."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from mattekit import ocio
from mattekit.inference.engines.registry import load_manifest, model_path
from mattekit.inference.exrio import read_exr
from mattekit.inference.render import RenderJob, render

WIDTH, HEIGHT, FRAMES = 1280, 720, 20


def run_rvm_directly(frames_srgb: list[np.ndarray], ratio: float) -> list[np.ndarray]:
    """The reference: the RVM ONNX fed the sRGB frames in order, state carried by hand."""
    model = load_manifest().models["rvm-mobilenetv3-fp32"]
    session = ort.InferenceSession(str(model_path(model)), providers=["CPUExecutionProvider"])
    rec = [np.zeros((1, 1, 1, 1), np.float32)] * 4
    alphas = []
    for frame in frames_srgb:
        src = frame.transpose(2, 0, 1)[None].astype(np.float32)
        fgr, pha, *rec = session.run(None, {
            "src": src, "r1i": rec[0], "r2i": rec[1], "r3i": rec[2], "r4i": rec[3],
            "downsample_ratio": np.array([ratio], np.float32)})
        alphas.append(pha[0, 0])
    return alphas


@pytest.fixture(scope="module")
def clip(srgb_clip):
    return srgb_clip(FRAMES, WIDTH, HEIGHT)


@pytest.fixture
def shot(tmp_path, clip, write_linear_sequence):
    plate = write_linear_sequence(tmp_path / "plate", clip)
    return tmp_path, plate


def job_for(root: Path, plate: str, **overrides) -> RenderJob:
    settings = {"out": str(root / "out" / "matte.####.exr"), "frames": f"1-{FRAMES}",
                "cache_root": root / "cache", "pixel_type": "float", **overrides}
    return RenderJob(node="video-matte", plate=plate, **settings)


def alphas_of(report) -> list[np.ndarray]:
    return [read_exr(r.path).alpha for r in report.frames]


@pytest.mark.slow
def test_when_a_linear_exr_sequence_is_rendered_then_alpha_matches_rvm_run_directly_on_srgb(
        shot, clip):
    root, plate = shot
    report = render(job_for(root, plate))
    assert [r.frame for r in report.frames] == list(range(1, FRAMES + 1))
    assert report.colorspace == "ACEScg"
    reference = run_rvm_directly(clip, ratio=512 / WIDTH)
    worst = max(float(np.max(np.abs(a - r))) for a, r in zip(alphas_of(report), reference))
    assert worst < 1e-4, f"alpha differs from direct RVM by {worst}"
    # the matte is not trivial: a person fills part of the frame, not all of it
    coverage = float(np.mean(reference[-1] > 0.5))
    assert 0.1 < coverage < 0.9


@pytest.mark.slow
def test_when_the_same_render_runs_again_then_every_frame_comes_from_the_cache(shot):
    root, plate = shot
    first = render(job_for(root, plate))
    second = render(job_for(root, plate))
    assert first.computed == list(range(1, FRAMES + 1))
    assert second.computed == []
    assert second.cached == list(range(1, FRAMES + 1))
    for a, b in zip(alphas_of(first), alphas_of(second)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_when_frame_10_of_the_plate_is_edited_then_only_frames_10_to_20_are_recomputed(
        shot, clip, write_linear_sequence):
    root, plate = shot
    render(job_for(root, plate))
    edited = list(clip)
    edited[9] = np.clip(clip[9] * 0.8 + 0.1, 0, 1).astype(np.float32)  # frame 10 (1-based)
    write_linear_sequence(root / "plate", edited[9:10], first=10)
    report = render(job_for(root, plate))
    assert report.computed == list(range(10, FRAMES + 1))
    assert report.cached == list(range(1, 10))
    # resuming from the cached recurrent state gives exactly what a fresh render gives
    fresh = render(job_for(root, plate, out=None, use_cache=True,
                           cache_root=root / "fresh-cache"))
    for resumed, clean in zip(alphas_of(report), alphas_of(fresh)):
        np.testing.assert_allclose(resumed, clean, atol=1e-6)


def test_when_the_plate_has_values_above_one_then_the_foreground_keeps_them(
        tmp_path, srgb_clip, pinned_config):
    from mattekit.inference.exrio import write_exr

    frame = srgb_clip(1, 320, 240)[0]
    linear = ocio.Converter(pinned_config, ocio.ENGINE_SRGB, "ACEScg").apply(frame)
    linear[100:140, 150:170] = 37.5  # a specular highlight on the subject
    write_exr(tmp_path / "hot.exr", linear, pixel_type="float")
    report = render(RenderJob(node="video-matte", plate=str(tmp_path / "hot.exr"),
                              out=str(tmp_path / "matte.exr"), cache_root=tmp_path / "cache",
                              pixel_type="float"))
    matte = read_exr(report.frames[0].path)
    solid = matte.alpha[100:140, 150:170] > 0.999
    assert solid.any(), "the highlight should sit inside the matte"
    fg = matte.rgb[100:140, 150:170][solid]
    expected = 37.5 * matte.alpha[100:140, 150:170][solid]
    np.testing.assert_allclose(fg, np.repeat(expected[:, None], 3, axis=1), rtol=1e-3)
    assert matte.metadata["mattekit/engine"] == "rvm-guided"  # the default; no mask = RVM
    assert matte.metadata["mattekit/modelSha256"].startswith("88d4531297")
