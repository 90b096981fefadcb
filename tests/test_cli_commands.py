"""The small commands: models, cache ls|gc|clear, demo."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mattekit.inference.cli import main
from mattekit.inference.exrio import read_exr


def test_when_listing_models_then_licence_checksum_and_installed_file_are_shown(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "rvm-mobilenetv3-fp32" in out and "GPL-3.0" in out
    assert "88d4531297118f595bf2fd60f6f566aec2e559393802d1f436c380f0cbbd2828" in out
    assert "rvm_mobilenetv3_fp32.onnx" in out and "NOT INSTALLED" not in out


@pytest.fixture
def rendered(tmp_path, srgb_clip, write_linear_sequence) -> Path:
    plate = write_linear_sequence(tmp_path / "plate", srgb_clip(3, 64, 48))
    cache = tmp_path / "cache"
    assert main(["render", "video-matte", "--plate", plate, "--out",
                 str(tmp_path / "out" / "m.####.exr"), "--cache-dir", str(cache),
                 "--quiet"]) == 0
    return cache


def test_when_listing_the_cache_then_each_rendered_frame_is_an_entry(rendered, capsys):
    capsys.readouterr()
    assert main(["cache", "ls", "--cache-dir", str(rendered)]) == 0
    out = capsys.readouterr().out
    assert "3 entries" in out
    assert out.count("video-matte") == 3


def test_when_gc_has_a_tiny_cap_then_entries_are_evicted(rendered, capsys):
    assert main(["cache", "gc", "--cache-dir", str(rendered), "--max-gb", "0"]) == 0
    assert "evicted 3 entries" in capsys.readouterr().out
    assert main(["cache", "ls", "--cache-dir", str(rendered)]) == 0
    assert "0 entries" in capsys.readouterr().out


def test_when_clearing_the_cache_then_everything_is_removed(rendered, capsys):
    assert main(["cache", "clear", "--cache-dir", str(rendered)]) == 0
    assert "removed 3 entries" in capsys.readouterr().out
    assert not list((rendered / "entries").rglob("*.exr"))


def test_when_rendering_without_out_then_cached_paths_are_printed(tmp_path, srgb_clip,
                                                                   write_linear_sequence, capsys):
    plate = write_linear_sequence(tmp_path / "plate", srgb_clip(2, 64, 48), first=1001)
    assert main(["render", "video-matte", "--plate", plate, "--cache-dir",
                 str(tmp_path / "cache"), "--quiet"]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines() if "\t" in line]
    assert [int(frame) for frame, _ in lines] == [1001, 1002]
    for _, path in lines:
        assert read_exr(path).alpha is not None


def test_when_the_demo_runs_then_it_writes_mattes_and_a_contact_sheet(tmp_path, capsys):
    import cv2

    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    sheet = tmp_path / "demo" / "contact_sheet.png"
    assert str(sheet) in out
    image = cv2.imread(str(sheet))
    assert image is not None and image.shape[0] == 3 * 480 and image.shape[1] == 3 * 640
    mattes = sorted((tmp_path / "demo" / "matte").glob("matte.*.exr"))
    assert len(mattes) == 12
    last = read_exr(mattes[-1])
    coverage = float(np.mean(last.alpha > 0.5))
    assert 0.2 < coverage < 0.8, "the astronaut should be matted, not the whole frame or nothing"
    assert last.metadata["mattekit/node"] == "video-matte"
