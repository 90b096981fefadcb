"""Distillation: the student network (shapes, any size, range, checkpoint round trip), the
training (a real loss drop on a tiny shot), the agreement metrics against a hand-computed case,
the held-back split, and `mattekit train distill` end to end (the teacher renders a tiny EXR
shot, the student lands as ``shot:NAME`` and renders its own prediction) with its bad-input
errors. Tiny networks, small frames, CPU, seconds."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from mattekit.inference.errors import InputError
from mattekit.inference.training.distill import holdout_split, student_agreement

torch = pytest.importorskip("torch")

from mattekit.inference.cli import main  # noqa: E402
from mattekit.inference.engines.shot import shot_model_path  # noqa: E402
from mattekit.inference.exrio import read_exr  # noqa: E402
from mattekit.inference.models import ARCHITECTURES, build_model  # noqa: E402
from mattekit.inference.models.checkpoint import (  # noqa: E402
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from mattekit.inference.models.student import StudentConfig  # noqa: E402
from mattekit.inference.training.distill import (  # noqa: E402
    DistillConfig,
    DistillFrame,
    distill_student,
    predict_student,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WIDTH, HEIGHT = 64, 48


def tiny_student(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("student", StudentConfig.tiny().to_dict())


@pytest.mark.parametrize("height, width", [(48, 64), (37, 53), (1, 1), (17, 250)])
def test_when_the_student_sees_any_frame_size_then_alpha_has_that_size_within_0_and_1(
        height, width):
    model = tiny_student().eval()
    src, ref = model.example_inputs(height, width)
    with torch.no_grad():
        pha = model(src * 4 - 2, ref)  # out-of-range input: the output still clamps
    assert pha.shape == (1, 1, height, width)
    assert float(pha.min()) >= 0.0 and float(pha.max()) <= 1.0


def test_when_a_frame_is_cropped_then_the_student_gives_the_crop_of_its_full_frame_answer():
    """No normalisation statistics: away from the borders, a crop's alpha is the frame's."""
    model = tiny_student(3).eval()
    with torch.no_grad():
        for layer in model.modules():  # a non-trivial, non-clamped output
            if isinstance(layer, torch.nn.Conv2d):
                layer.bias.normal_(0.0, 0.3)
        src, ref = model.example_inputs(128, 128)
        full = model(src, ref)
        crop = model(src[..., 32:96, 32:96], ref[..., 32:96, 32:96])
    assert 0.0 < float(full.mean()) < 1.0
    # the 1/16 grid is aligned (32 = 2 x 16); the middle of the crop sees the same context
    torch.testing.assert_close(crop[..., 24:40, 24:40], full[..., 56:72, 56:72], atol=0.05,
                               rtol=0)


def test_when_a_student_is_saved_then_its_checkpoint_loads_the_same_network(tmp_path):
    assert ARCHITECTURES["student"][1] == "Student"
    model = tiny_student().eval()
    path = save_checkpoint(model, tmp_path / "s.pt", extra={"kind": "student"})
    loaded = load_checkpoint(path, architecture="student")
    assert loaded.config == StudentConfig.tiny()
    src, ref = model.example_inputs(20, 30)
    with torch.no_grad():
        torch.testing.assert_close(loaded(src, ref), model(src, ref))


def disc(size: int, centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return np.clip(radius + 1.5 - np.hypot(yy - centre[0], xx - centre[1]), 0, 1
                   ).astype(np.float32)


def tiny_frames(count: int = 4, size: int = 40) -> list[DistillFrame]:
    """A red disc moving over a textured background (its clean plate is the reference); the
    'teacher' alpha is the disc."""
    rng = np.random.default_rng(0)
    background = (0.3 + 0.2 * rng.random((size, size, 3))).astype(np.float32)
    frames = []
    for t in range(count):
        alpha = disc(size, (20.0, 10.0 + 5 * t), 7.0)
        plate = alpha[..., None] * np.float32([0.9, 0.2, 0.1]) + (1 - alpha[..., None]) * \
            background
        frames.append(DistillFrame(plate.astype(np.float32), background, alpha, f"f{t}"))
    return frames


def test_when_the_student_is_distilled_then_its_loss_drops_and_it_agrees_with_the_teacher():
    frames = tiny_frames()
    model = tiny_student()
    untrained = predict_student(model, frames[0].plate, frames[0].reference)
    losses = distill_student(model, frames[:3], DistillConfig(steps=80, batch_size=4, crop=32,
                                                              learning_rate=1e-2),
                             device="cpu", progress=False)
    assert len(losses) == 80
    assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:5]), (losses[:5], losses[-5:])
    held = frames[3]  # never trained on
    before = student_agreement(untrained, held.alpha)["mse"]
    after = student_agreement(predict_student(model, held.plate, held.reference), held.alpha)
    assert after["mse"] < 0.5 * before, (before, after)


def test_when_distillation_runs_twice_with_one_seed_then_the_losses_are_identical():
    frames = tiny_frames(2, 24)
    config = DistillConfig(steps=3, crop=16)
    first = distill_student(tiny_student(), frames, config, "cpu", progress=False)
    second = distill_student(tiny_student(), frames, config, "cpu", progress=False)
    assert first == second


def test_when_agreement_is_measured_then_mse_is_x1e3_and_sad_is_in_thousands():
    teacher = np.zeros((100, 100), np.float32)
    pred = teacher.copy()
    pred[:50, :] = 0.5    # 5000 pixels off by 0.5
    pred[50:52, :] = 1.0  # 200 pixels off by 1
    scores = student_agreement(pred, teacher)
    # SAD = 5000 x 0.5 + 200 x 1 = 2700 -> 2.7; MSE = (5000 x 0.25 + 200) / 1e4 = 0.145 -> 145
    assert scores["sad"] == pytest.approx(2.7)
    assert scores["mse"] == pytest.approx(145.0)
    assert student_agreement(teacher, teacher) == {"mse": 0.0, "sad": 0.0}


def test_when_frames_are_held_back_then_every_kth_is_and_the_rest_train():
    assert holdout_split(list(range(1001, 1011)), 5) == (
        [1001, 1002, 1003, 1004, 1006, 1007, 1008, 1009], [1005, 1010])
    with pytest.raises(InputError, match="K >= 2"):
        holdout_split([1, 2, 3], 1)
    with pytest.raises(InputError, match="holds back no frame of the 3 given"):
        holdout_split([1, 2, 3], 5)


def test_when_a_frame_plane_has_another_size_then_distillation_names_the_frame():
    frames = tiny_frames(2, 24)
    frames[1].alpha = frames[1].alpha[:20]
    with pytest.raises(InputError, match="f1: the teacher alpha is 24x20 but the plate is 24x24"):
        distill_student(tiny_student(), frames, DistillConfig(steps=1), "cpu", progress=False)


# --- `mattekit train distill` end to end --------------------------------------------------


@pytest.fixture
def shot(tmp_path, srgb_clip, write_linear_sequence):
    """The demo portrait (RVM mattes it) over 5 frames as an ACEScg EXR sequence."""
    frames = srgb_clip(5, WIDTH, HEIGHT)
    plate = write_linear_sequence(tmp_path / "plate", frames)
    return {"plate": plate, "cache": tmp_path / "cache", "srgb": frames}


def distill(shot, *extra: str) -> int:
    return main(["train", "distill", "--plate", shot["plate"], "--frames", "1-5",
                 "--holdout", "3", "--cache-dir", str(shot["cache"]), "--device", "cpu",
                 "--quiet", "--crop", "32", *extra])


def test_when_train_distill_runs_then_the_student_renders_as_a_shot_model(shot, tmp_path,
                                                                          capsys):
    assert distill(shot, "--teacher", "rvm", "--steps", "40", "--width", "4",
                   "--name", "fast") == 0
    path = shot_model_path("fast", shot["cache"])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-2] == str(path)
    line = re.fullmatch(r"held-back frames 3: agreement with rvm MSE x1e3 ([\d.]+), SAD /1e3 "
                        r"([\d.]+); seconds per frame student ([\d.]+), teacher ([\d.]+) "
                        r"\([\d.]+x\)", out[-1])
    assert line, out[-1]
    payload = read_checkpoint(path)
    extra = payload["extra"]
    assert payload["architecture"] == "student" and payload["config"] == {"width": 4}
    assert (extra["kind"], extra["node"], extra["teacher"], extra["with_reference"]) == (
        "student", "video-matte", "rvm", False)
    assert extra["frames"] == [1, 2, 3, 4, 5] and extra["held_back"] == [3]
    assert extra["holdout"] == 3 and len(extra["losses"]) == 40
    assert extra["agreement"]["mse"] == pytest.approx(float(line.group(1)), abs=1e-3)
    assert extra["seconds_per_frame"]["teacher"] > 0
    assert (path.parent / "fast.loss.png").is_file()
    # the student renders through the CLI as shot:fast, and what it renders is its prediction
    assert main(["render", "video-matte", "--engine", "shot:fast", "--plate", shot["plate"],
                 "--frames", "3", "--out", str(tmp_path / "out" / "m.####.exr"),
                 "--cache-dir", str(shot["cache"]), "--device", "cpu", "--quiet",
                 "--pixel-type", "float"]) == 0
    rendered = read_exr(tmp_path / "out" / "m.0003.exr")
    assert rendered.metadata["mattekit/engine"] == "shot:fast"
    expected = predict_student(load_checkpoint(path), np.clip(shot["srgb"][2], 0, 1), None)
    assert float(np.abs(rendered.alpha).max()) > 0.05  # not an empty matte
    np.testing.assert_allclose(rendered.alpha, expected, atol=2e-3)


def test_when_the_teacher_takes_a_clean_plate_then_the_student_learns_with_it(shot):
    clean = str(Path(shot["plate"]).parent / "plate.0001.exr")  # any still will do
    assert distill(shot, "--node", "background-matte", "--clean-plate", clean,
                   "--steps", "2", "--width", "4", "--name", "bg") == 0
    extra = read_checkpoint(shot_model_path("bg", shot["cache"]))["extra"]
    assert (extra["node"], extra["teacher"], extra["with_reference"]) == (
        "background-matte", "cleanplate", True)


@pytest.mark.parametrize("args, message", [
    (("--teacher", "nope"), r"unknown engine 'nope'"),
    (("--teacher", "shot:missing"), r"no shot model 'missing'"),
    (("--teacher", "cleanplate", "--node", "video-matte"),
     r"engine 'cleanplate' belongs to node 'background-matte', not 'video-matte'"),
    (("--holdout", "1"), r"--holdout 1: hold back every K-th frame with K >= 2"),
    (("--holdout", "9"), r"--holdout 9 holds back no frame of the 5 given"),
    (("--steps", "0"), r"--steps must be at least 1, not 0"),
    (("--name", "../x"), r"shot model name '\.\./x'"),
])
def test_when_train_distill_gets_bad_input_then_one_line_names_the_cause(shot, capsys, args,
                                                                         message):
    assert distill(shot, *args) == 1
    errors = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith("mattekit: error:")]
    assert len(errors) == 1 and re.search(message, errors[0]), errors
    assert not (shot["cache"] / "shot-models").exists()


def test_when_the_teacher_is_a_student_then_distillation_refuses(shot, capsys):
    assert distill(shot, "--teacher", "rvm", "--steps", "1", "--width", "4",
                   "--name", "first") == 0
    capsys.readouterr()
    assert distill(shot, "--teacher", "shot:first", "--steps", "1", "--name", "second") == 1
    assert re.search(r"--teacher shot:first is itself a student", capsys.readouterr().err)
    assert not shot_model_path("second", shot["cache"]).exists()


def test_when_the_teacher_is_a_scribble_correction_then_the_student_learns_its_alpha(
        shot, capsys):
    import cv2

    strokes = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    strokes[20:30, 30, 2] = 255   # blue: background
    strokes[40:44, 32, 0] = 255   # red: subject
    folder = Path(shot["plate"]).parent.parent / "strokes"
    folder.mkdir()
    for frame in (1, 2):
        cv2.imwrite(str(folder / f"s.{frame:04d}.png"), strokes[..., ::-1])
    assert main(["train", "scribbles", "--plate", shot["plate"], "--scribbles",
                 str(folder / "s.####.png"), "--frames", "1,2", "--engine", "rvm",
                 "--cache-dir", str(shot["cache"]), "--device", "cpu", "--quiet",
                 "--steps", "2", "--crop", "32", "--name", "hero"]) == 0
    assert distill(shot, "--teacher", "shot:hero", "--steps", "2", "--width", "4",
                   "--name", "hero-fast") == 0
    assert "agreement with shot:hero" in capsys.readouterr().out
    extra = read_checkpoint(shot_model_path("hero-fast", shot["cache"]))["extra"]
    assert (extra["kind"], extra["node"], extra["teacher"]) == ("student", "video-matte",
                                                                "shot:hero")
