"""`mattekit train scribbles` makes a shot model: it names its node and base engine, renders
the base engine's alpha itself when --alpha is left out (through the render cache), and the
result renders as ``--engine shot:NAME``. Tiny plates (the demo portrait), few steps, CPU."""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from mattekit.inference.cli import main
from mattekit.inference.exrio import read_exr

torch = pytest.importorskip("torch")

from mattekit.inference.engines.shot import shot_model_path  # noqa: E402
from mattekit.inference.models.checkpoint import read_checkpoint  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WIDTH, HEIGHT = 64, 48


@pytest.fixture
def shot(tmp_path, srgb_clip, write_linear_sequence):
    """The demo portrait over 3 frames (EXR) and red / blue strokes on frames 2 and 3."""
    plate = write_linear_sequence(tmp_path / "plate", srgb_clip(3, WIDTH, HEIGHT))
    for frame in (2, 3):
        strokes = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        strokes[20:30, 30, 2] = 255     # blue: background
        strokes[5:10, 2, 2] = 255
        strokes[40:44, 32, 0] = 255     # red: subject
        (tmp_path / "strokes").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "strokes" / f"s.{frame:04d}.png"), strokes[..., ::-1])
    return {"plate": plate, "scribbles": str(tmp_path / "strokes" / "s.####.png"),
            "cache": tmp_path / "cache"}


def train(shot, *extra: str) -> int:
    return main(["train", "scribbles", "--plate", shot["plate"], "--scribbles",
                 shot["scribbles"], "--frames", "2,3", "--cache-dir", str(shot["cache"]),
                 "--device", "cpu", "--quiet", "--steps", "2", "--crop", "32", *extra])


def test_when_no_alpha_is_given_then_the_base_engine_renders_the_scribbled_frames_itself(
        shot, tmp_path, capsys):
    assert train(shot, "--engine", "rvm", "--name", "portrait") == 0
    path = shot_model_path("portrait", shot["cache"])
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(path)
    extra = read_checkpoint(path)["extra"]
    assert (extra["kind"], extra["node"], extra["base_engine"]) == (
        "scribble-correction", "video-matte", "rvm")
    assert extra["with_reference"] is False and extra["frames"] == [2, 3]
    # the base engine's frames went through the cache: rendering them again is all hits
    assert main(["render", "video-matte", "--engine", "rvm", "--plate", shot["plate"],
                 "--frames", "2,3", "--cache-dir", str(shot["cache"]), "--quiet"]) == 0
    assert "(0 computed, 2 from cache)" in capsys.readouterr().out
    # and the shot model renders for its node
    assert main(["render", "video-matte", "--engine", "shot:portrait", "--plate",
                 shot["plate"], "--out", str(tmp_path / "out" / "m.####.exr"),
                 "--cache-dir", str(shot["cache"]), "--device", "cpu", "--quiet"]) == 0
    assert read_exr(tmp_path / "out" / "m.0003.exr").metadata["mattekit/engine"] == \
        "shot:portrait"


def test_when_no_engine_is_named_then_the_node_default_engine_is_the_base(shot):
    clean = Path(shot["plate"]).parent / "plate.0001.exr"  # any still will do as a clean plate
    assert train(shot, "--node", "background-matte", "--clean-plate", str(clean),
                 "--name", "bg") == 0
    extra = read_checkpoint(shot_model_path("bg", shot["cache"]))["extra"]
    assert (extra["node"], extra["base_engine"], extra["with_reference"]) == (
        "background-matte", "cleanplate", True)


@pytest.mark.parametrize("args, message", [
    (("--node", "video-matte", "--engine", "cleanplate"),
     r"engine 'cleanplate' belongs to node 'background-matte', not 'video-matte'"),
    (("--reference", "x.exr"), r"engine 'rvm-guided' \(video-matte\) takes no clean plate or "
                               r"second view"),
    (("--name", "a/b"), r"shot model name 'a/b'"),
    (("--engine", "shot:other"), r"the base engine of a shot model is one of the manifest's"),
])
def test_when_the_base_engine_cannot_carry_the_shot_model_then_one_line_says_why(
        shot, capsys, args, message):
    assert train(shot, *args) == 1
    errors = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith("mattekit: error:")]
    assert len(errors) == 1 and re.search(message, errors[0]), errors
    assert not (shot["cache"] / "shot-models").exists()
