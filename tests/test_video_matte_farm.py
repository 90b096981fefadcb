"""video-matte renders with a mask, in chunks and from mid-shot (issue #5): `mattekit render`.

Farm chunks are separate `mattekit render --frames a-b` calls (fresh engine, no shared cache),
compared with one sequential render of the same shot.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from mattekit.inference.cli import main
from mattekit.inference.engines.registry import create_engine
from mattekit.inference.exrio import read_exr, write_exr
from mattekit.inference.render import RenderJob, render

W, H, FRAMES = 320, 180, 16


@pytest.fixture(scope="module")
def clip(srgb_clip):
    return srgb_clip(FRAMES, W, H)


@pytest.fixture(scope="module")
def roto(clip) -> np.ndarray:
    """A rough Roto of frame 1: the person as RVM sees them, grown by 4 px."""
    alpha = create_engine("rvm", "cpu").process(clip[0]).alpha
    return cv2.dilate((alpha > 0.5).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(
        np.float32)


def write_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_exr(path, np.repeat(mask[..., None], 3, axis=2), mask, pixel_type="float")


@pytest.fixture
def shot(tmp_path, clip, roto, write_linear_sequence) -> tuple[Path, str, str]:
    """A 16-frame plate and a mask sequence holding frame 1 only (a key frame)."""
    plate = write_linear_sequence(tmp_path / "plate", clip)
    write_mask(tmp_path / "mask" / "roto.0001.exr", roto)
    return tmp_path, plate, str(tmp_path / "mask" / "roto.####.exr")


def cli(plate: str, mask: str | None, frames: str, out: Path, *extra: str) -> int:
    args = ["render", "video-matte", "--plate", plate, "--frames", frames, "--out",
            str(out / "matte.####.exr"), "--quiet", "--pixel-type", "float", *extra]
    return main(args + (["--mask", mask] if mask else []))


def alphas(folder: Path, frames) -> list[np.ndarray]:
    return [read_exr(folder / f"matte.{f:04d}.exr").alpha for f in frames]


def chunked(root: Path, plate: str, mask: str, name: str, *extra: str) -> list[np.ndarray]:
    for first in range(1, FRAMES + 1, 4):
        assert cli(plate, mask, f"{first}-{first + 3}", root / name, "--no-cache", *extra) == 0
    return alphas(root / name, range(1, FRAMES + 1))


@pytest.mark.slow
def test_when_a_shot_is_rendered_in_4_frame_chunks_then_it_matches_the_sequential_render(shot):
    root, plate, mask = shot
    assert cli(plate, mask, f"1-{FRAMES}", root / "seq", "--no-cache") == 0
    sequential = alphas(root / "seq", range(1, FRAMES + 1))
    chunks = chunked(root, plate, mask, "chunks")
    worst = max(float(np.abs(a - b).max()) for a, b in zip(sequential, chunks))
    assert worst < 0.02, f"chunks differ from the sequential render by {worst}"
    # the mask did its work: the matte is the person, not the whole frame
    assert 0.2 < float(np.mean(sequential[-1] > 0.5)) < 0.8


@pytest.mark.slow
def test_when_rvm_misses_the_masked_target_then_the_engine_s_own_fill_also_chunks_exactly(
        tmp_path, clip, write_linear_sequence):
    """The shuttle model behind the astronaut: RVM sees nothing there, the engine mattes it
    from the mask itself (target_fill), and that too is the same in chunks."""
    plate = write_linear_sequence(tmp_path / "plate", clip)
    box = np.zeros((H, W), np.float32)
    box[2:110, 236:312] = 1.0  # a rough box Roto of the model
    write_mask(tmp_path / "mask" / "roto.0001.exr", box)
    mask = str(tmp_path / "mask" / "roto.####.exr")
    assert cli(plate, mask, f"1-{FRAMES}", tmp_path / "seq", "--no-cache") == 0
    sequential = alphas(tmp_path / "seq", range(1, FRAMES + 1))
    chunks = chunked(tmp_path, plate, mask, "chunks")
    worst = max(float(np.abs(a - b).max()) for a, b in zip(sequential, chunks))
    assert worst == 0.0, f"chunks differ from the sequential render by {worst}"
    rvm = create_engine("rvm", "cpu")
    plain = [rvm.process(frame).alpha for frame in clip]
    inside = (slice(30, 90), slice(255, 295))
    assert float(np.mean([p[inside].mean() for p in plain])) < 0.05  # RVM: nothing there
    assert float(np.mean([s[inside].mean() for s in sequential])) > 0.3  # the fill: the model
    assert float(sequential[-1][:, :200].max()) < 0.05  # and not the astronaut


@pytest.mark.slow
def test_when_the_warm_up_is_short_then_chunks_that_reach_the_shot_start_are_still_exact(
        shot, capsys):
    root, plate, mask = shot
    assert cli(plate, mask, f"1-{FRAMES}", root / "seq", "--no-cache") == 0
    sequential = alphas(root / "seq", range(1, FRAMES + 1))
    chunks = chunked(root, plate, mask, "chunks", "--param", "warmup_frames=8")
    differences = [float(np.abs(a - b).max()) for a, b in zip(sequential, chunks)]
    # chunks 1-4, 5-8 and 9-12 warm up from frame 1: exactly the sequential frames
    assert max(differences[:12]) == 0.0
    # 13-16 warm up on 5-12 after the key frame 1 (an anchor): the same target, near the
    # same matte (RVM's own state still remembers further back, see inference/warmup.py)
    mean = max(float(np.abs(a - b).mean()) for a, b in zip(sequential[12:], chunks[12:]))
    assert mean < 0.02, f"chunk 13-16 differs by {mean} on average"
    capsys.readouterr()


@pytest.mark.slow
def test_when_a_chunk_follows_a_cached_sequential_render_then_it_comes_from_the_cache(shot):
    root, plate, mask = shot
    cache = root / "cache"
    first = render(RenderJob(node="video-matte", plate=plate, mask=mask, frames=f"1-{FRAMES}",
                             cache_root=cache))
    assert first.computed == list(range(1, FRAMES + 1))
    chunk = render(RenderJob(node="video-matte", plate=plate, mask=mask, frames="9-12",
                             out=str(root / "chunk" / "matte.####.exr"), cache_root=cache))
    assert chunk.cached == [9, 10, 11, 12] and chunk.computed == []
    # a chunk rendered into a fresh cache computes, then serves itself again
    fresh = RenderJob(node="video-matte", plate=plate, mask=mask, frames="13-14",
                      cache_root=root / "fresh")
    assert render(fresh).computed == [13, 14] and render(fresh).cached == [13, 14]


@pytest.mark.slow
def test_when_plain_rvm_starts_mid_shot_then_it_warms_up_on_the_frames_before(shot):
    root, plate, _ = shot
    assert cli(plate, None, "1-8", root / "seq", "--no-cache", "--engine", "rvm") == 0
    assert cli(plate, None, "6-8", root / "warm", "--no-cache", "--engine", "rvm") == 0
    assert cli(plate, None, "6-8", root / "cold", "--no-cache", "--engine", "rvm",
               "--param", "warmup_frames=0") == 0
    sequential, warm = alphas(root / "seq", [6, 7, 8]), alphas(root / "warm", [6, 7, 8])
    cold = alphas(root / "cold", [6, 7, 8])
    for a, b in zip(sequential, warm):
        np.testing.assert_array_equal(a, b)
    assert max(float(np.abs(a - b).max()) for a, b in zip(sequential, cold)) > 1e-3


# -- bad input -----------------------------------------------------------------------------------

def error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("mattekit: error:")]
    assert len(errors) == 1, lines
    return errors[0]


@pytest.fixture
def small_shot(tmp_path, srgb_clip, write_linear_sequence) -> tuple[Path, str]:
    return tmp_path, write_linear_sequence(tmp_path / "plate", srgb_clip(4, 96, 64))


def test_when_the_mask_is_another_size_then_it_is_resampled_with_a_warning(small_shot, capsys):
    root, plate = small_shot
    mask = np.zeros((32, 48), np.float32)
    mask[8:28, 12:36] = 1.0
    write_mask(root / "mask" / "roto.0001.exr", mask)
    assert cli(plate, str(root / "mask" / "roto.####.exr"), "1-2", root / "out",
               "--cache-dir", str(root / "cache")) == 0
    err = capsys.readouterr().err
    assert "roto.0001.exr, frame 1: 48x32 resampled to the plate's 96x64" in err


def test_when_the_mask_is_empty_then_the_error_names_file_and_frame(small_shot, capsys):
    root, plate = small_shot
    write_mask(root / "mask" / "roto.0001.exr", np.zeros((64, 96), np.float32))
    assert cli(plate, str(root / "mask" / "roto.####.exr"), "1-2", root / "out",
               "--cache-dir", str(root / "cache")) == 1
    line = error_line(capsys)
    assert "roto.0001.exr, frame 1: the key mask is empty" in line
    assert not list((root / "out").glob("*.exr"))


def test_when_a_mask_frame_has_no_plate_frame_then_the_error_says_which(small_shot, capsys):
    root, plate = small_shot
    mask = np.ones((64, 96), np.float32)
    write_mask(root / "mask" / "roto.0001.exr", mask)
    write_mask(root / "mask" / "roto.0009.exr", mask)
    assert cli(plate, str(root / "mask" / "roto.####.exr"), "1-2", root / "out",
               "--cache-dir", str(root / "cache")) == 1
    line = error_line(capsys)
    assert "roto.####.exr, frame 9" in line and "no plate frame" in line and "1-4" in line


def test_when_the_first_key_frame_comes_later_then_earlier_frames_are_rendered_unguided(
        small_shot, capsys):
    root, plate = small_shot
    write_mask(root / "mask" / "roto.0003.exr", np.ones((64, 96), np.float32))
    assert cli(plate, str(root / "mask" / "roto.####.exr"), "1-4", root / "out",
               "--cache-dir", str(root / "cache")) == 0
    err = capsys.readouterr().err
    assert "frames 1-2 come before the first key frame (3)" in err


def test_when_the_mask_sequence_has_no_frame_then_it_says_so(small_shot, capsys):
    root, plate = small_shot
    (root / "mask").mkdir()
    assert cli(plate, str(root / "mask" / "roto.####.exr"), "1-2", root / "out",
               "--cache-dir", str(root / "cache")) == 1
    assert "no key frames on disk" in error_line(capsys)


def test_when_warmup_frames_is_not_a_count_then_the_error_says_what_is_allowed(small_shot,
                                                                                capsys):
    root, plate = small_shot
    assert cli(plate, None, "2-3", root / "out", "--cache-dir", str(root / "cache"),
               "--param", "warmup_frames=-5") == 1
    assert "warmup_frames is -5" in error_line(capsys)


def test_when_the_mask_is_a_still_then_it_is_the_key_of_the_shots_first_frame(small_shot):
    root, plate = small_shot
    mask = np.zeros((64, 96), np.float32)
    mask[10:60, 20:70] = 1.0
    write_mask(root / "still.exr", mask)
    write_mask(root / "keys" / "roto.0001.exr", mask)
    assert cli(plate, str(root / "still.exr"), "3-4", root / "a", "--no-cache") == 0
    assert cli(plate, str(root / "keys" / "roto.####.exr"), "3-4", root / "b", "--no-cache") == 0
    assert cli(plate, None, "3-4", root / "c", "--no-cache") == 0
    still, keyed, unguided = (alphas(root / x, [3, 4]) for x in ("a", "b", "c"))
    for a, b in zip(still, keyed):
        np.testing.assert_array_equal(a, b)
    assert any(float(np.abs(a - c).max()) > 1e-3 for a, c in zip(still, unguided))
