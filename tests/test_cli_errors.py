"""Bad input: one clear line naming file, frame and cause; exit 1; nothing half-written."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import OpenEXR
import pytest

from mattekit.inference.cli import main
from mattekit.inference.exrio import read_exr, write_exr

W, H = 96, 64


@pytest.fixture
def plates(tmp_path, srgb_clip, write_linear_sequence) -> str:
    return write_linear_sequence(tmp_path / "plate", srgb_clip(5, W, H), first=1001)


def run_cli(tmp_path: Path, plate: str, *extra: str, out: str | None = None) -> list[str]:
    return ["render", "video-matte", "--plate", plate,
            "--out", out or str(tmp_path / "out" / "matte.####.exr"),
            "--cache-dir", str(tmp_path / "cache"), "--quiet", *extra]


def error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("mattekit: error:")]
    assert len(errors) == 1, lines
    return errors[0]


def assert_nothing_half_written(tmp_path: Path) -> None:
    """Every EXR left in the output and the cache reads back whole; no temp file anywhere."""
    for path in list((tmp_path / "out").rglob("*")) + list((tmp_path / "cache").rglob("*")):
        if path.is_file():
            assert ".tmp" not in path.name, f"temp file left behind: {path}"
            if path.suffix == ".exr":
                read_exr(path)
    tmp = tmp_path / "cache" / "tmp"
    assert not tmp.exists() or not any(tmp.iterdir())


def test_when_frames_are_missing_then_all_are_named_in_one_line(tmp_path, plates, capsys):
    Path(plates.replace("####", "1002")).unlink()
    Path(plates.replace("####", "1004")).unlink()
    code = main(run_cli(tmp_path, plates, "--frames", "1001-1005"))
    line = error_line(capsys)
    assert code == 1
    assert "plate.####.exr" in line and "1002" in line and "1004" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_when_a_frame_is_truncated_then_the_error_names_it_and_finished_frames_stay_whole(
        tmp_path, plates, capsys):
    bad = Path(plates.replace("####", "1003"))
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    code = main(run_cli(tmp_path, plates, "--frames", "1001-1005"))
    line = error_line(capsys)
    assert code == 1
    assert str(bad) in line and "frame 1003" in line
    assert not (tmp_path / "out" / "matte.1003.exr").exists()
    assert_nothing_half_written(tmp_path)


def test_when_the_plate_has_no_rgb_channels_then_the_error_says_so(tmp_path, capsys):
    plate = tmp_path / "trimap.exr"
    channels = {"trimap.Y": np.zeros((H, W), np.float32)}
    OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                 channels).write(str(plate))
    code = main(run_cli(tmp_path, str(plate), out=str(tmp_path / "out" / "matte.exr")))
    line = error_line(capsys)
    assert code == 1
    assert str(plate) in line and "RGB" in line
    assert_nothing_half_written(tmp_path)


def test_when_the_colour_space_is_unknown_then_the_error_names_it(tmp_path, plates, capsys):
    code = main(run_cli(tmp_path, plates, "--colorspace", "ACEScgg"))
    line = error_line(capsys)
    assert code == 1
    assert "ACEScgg" in line and "ACEScg" in line.split("ACEScgg", 1)[1]
    assert not (tmp_path / "cache" / "entries").exists() or not any(
        (tmp_path / "cache" / "entries").rglob("*.exr"))


def test_when_the_output_folder_cannot_be_written_then_nothing_is_computed(
        tmp_path, plates, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    code = main(run_cli(tmp_path, plates, out=str(blocker / "sub" / "matte.####.exr")))
    line = error_line(capsys)
    assert code == 1
    assert "not-a-folder" in line and "not writable" in line
    assert not (tmp_path / "cache" / "entries").exists() or not any(
        (tmp_path / "cache" / "entries").rglob("*.exr"))


def test_when_pixels_are_nan_or_inf_then_they_are_replaced_with_a_warning(
        tmp_path, plates, capsys):
    path = Path(plates.replace("####", "1002"))
    image = read_exr(path)
    rgb = image.rgb.copy()
    rgb[10:20, 10:20] = np.nan
    rgb[30:32, 40:44] = np.inf
    write_exr(path, rgb, pixel_type="float")
    code = main(run_cli(tmp_path, plates, "--frames", "1001-1003"))
    err = capsys.readouterr().err
    assert code == 0, err
    assert "warning" in err and str(path) in err and "frame 1002" in err and "NaN" in err
    matte = read_exr(tmp_path / "out" / "matte.1002.exr")
    assert np.isfinite(matte.alpha).all() and np.isfinite(matte.rgb).all()


def test_when_the_console_script_fails_then_the_exit_code_is_non_zero(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mattekit.inference.cli", "render", "video-matte",
         "--plate", str(tmp_path / "nothing.####.exr"), "--frames", "1-3",
         "--out", str(tmp_path / "o.####.exr"), "--cache-dir", str(tmp_path / "c")],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("mattekit: error:")
    assert "nothing.####.exr" in result.stderr
