"""Scribble fine-tuning: the colour and mask rules, the bad-input errors, the 80/20 batch, the
correction network (identity before training, ONNX export) and a tiny shot it fixes from strokes
on two frames. Tiny network, small frames, CPU, seconds."""
from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from mattekit.inference.errors import InputError
from mattekit.inference.training.dataset import AugmentOptions, CompositeDataset
from mattekit.inference.training.scribbles import (
    ScribbledFrame,
    Scribbles,
    batch_split,
    check_scribbled_frames,
    learning_rate_factor,
    read_scribbles,
    scribble_crop,
    scribbles_from_colours,
    scribbles_from_masks,
)

SIZE = 40


def test_when_scribbles_are_painted_red_and_blue_then_they_split_into_foreground_and_background(
        tmp_path):
    image = np.zeros((8, 10, 3), np.float32)
    image[1, 2] = (1.0, 0.0, 0.0)
    image[5, 6] = (0.0, 0.0, 1.0)
    image[3, 3] = (1.0, 1.0, 1.0)  # white: not a stroke
    cv2.imwrite(str(tmp_path / "s.png"), (image[..., ::-1] * 255).astype(np.uint8))
    scribbles = read_scribbles(tmp_path / "s.png")
    assert np.argwhere(scribbles.foreground).tolist() == [[1, 2]]
    assert np.argwhere(scribbles.background).tolist() == [[5, 6]]
    assert scribbles.count == 2


def test_when_a_pixel_is_both_foreground_and_background_then_the_error_counts_them():
    image = np.zeros((4, 4, 3), np.float32)
    image[0, :2] = (1.0, 0.0, 1.0)
    with pytest.raises(InputError, match=r"shot\.png, frame 3: 2 scribbled pixels are both red"):
        scribbles_from_colours(image, "shot.png", 3)
    fg, bg = np.zeros((4, 4)), np.zeros((4, 4))
    fg[1, 1] = bg[1, 1] = 1.0
    with pytest.raises(InputError, match="1 pixels are marked in both"):
        scribbles_from_masks(fg, bg)
    with pytest.raises(InputError, match="differ in size"):
        scribbles_from_masks(fg, np.zeros((4, 5)))


def frame_with(scribbles: Scribbles, size: int = 8, name: str = "f.png") -> ScribbledFrame:
    return ScribbledFrame(plate=np.zeros((size, size, 3), np.float32), reference=None,
                          alpha=np.zeros((size, size), np.float32), scribbles=scribbles,
                          name=name)


def test_when_scribbles_are_empty_or_of_another_size_then_the_error_says_so():
    empty = Scribbles(np.zeros((8, 8), bool), np.zeros((8, 8), bool))
    with pytest.raises(InputError, match="the scribbles are empty"):
        check_scribbled_frames([frame_with(empty)])
    with pytest.raises(InputError, match="the scribbles are empty"):
        check_scribbled_frames([])
    small = Scribbles(np.ones((6, 8), bool), np.zeros((6, 8), bool))
    with pytest.raises(InputError, match="f.png: the scribbles is 8x6 but the plate is 8x8"):
        check_scribbled_frames([frame_with(small)])


def test_when_a_batch_is_split_then_four_fifths_are_base_composites():
    assert batch_split(5, 0.8) == (4, 1)
    assert batch_split(10, 0.8) == (8, 2)
    assert batch_split(1, 0.8) == (0, 1)   # never a batch without scribbles
    assert batch_split(4, 0.0) == (0, 4)


def test_when_a_scribbled_frame_is_cropped_then_the_window_holds_a_stroke():
    fg = np.zeros((64, 64), bool)
    fg[50, 60] = True
    item = frame_with(Scribbles(fg, np.zeros_like(fg)), size=64)
    crop = scribble_crop(item, (16, 16), np.random.default_rng(0))
    assert crop["src"].shape == (16, 16, 3) and crop["mask"].shape == (16, 16)
    assert crop["mask"].sum() == 1 and crop["target"].sum() == 1
    np.testing.assert_array_equal(crop["ref"], 0.0)  # no reference: zeros


torch = pytest.importorskip("torch")

from mattekit.inference.models import build_model, export_onnx  # noqa: E402
from mattekit.inference.models.blocks import ConvAct  # noqa: E402
from mattekit.inference.models.correction import AlphaCorrectionConfig  # noqa: E402
from mattekit.inference.training.scribbles import (  # noqa: E402
    BestWeights,
    FinetuneConfig,
    correct_alpha,
    finetune_scribbles,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_correction(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("alphacorrection", AlphaCorrectionConfig.tiny().to_dict())


def test_when_the_correction_network_is_untrained_then_it_returns_the_alpha_unchanged(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = tiny_correction().eval()
    src, ref, alpha = model.example_inputs(30, 22)
    alpha = alpha.clamp(0.01, 0.99)
    with torch.no_grad():
        pha = model(src, ref, alpha)
    assert pha.shape == (1, 1, 30, 22)
    torch.testing.assert_close(pha, alpha, atol=1e-5, rtol=0)
    path = export_onnx(model, tmp_path / "c.onnx", 30, 22)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"src": src.numpy(), "ref": ref.numpy(), "alpha": alpha.numpy()})
    np.testing.assert_allclose(got, pha.numpy(), atol=1e-5)


def disc(size: int, centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    distance = np.hypot(yy - centre[0], xx - centre[1])
    return np.clip(radius + 1.5 - distance, 0, 1).astype(np.float32) if radius else distance


def tiny_shot(frames: int = 6):
    """A red disc moving over a static textured background that holds a grey box (part of the
    background, so also in the clean plate); the 'engine' took the box for foreground."""
    rng = np.random.default_rng(0)
    background = (0.3 + 0.2 * rng.random((SIZE, SIZE, 3))).astype(np.float32)
    background[4:14, 26:36] = 0.8  # the box
    box = np.zeros((SIZE, SIZE), np.float32)
    box[4:14, 26:36] = 1.0
    shot = []
    for t in range(frames):
        alpha = disc(SIZE, (26.0, 8.0 + 3 * t), 6.0)
        plate = alpha[..., None] * np.float32([0.9, 0.2, 0.1]) + (1 - alpha[..., None]) * background
        engine = np.maximum(alpha, box)  # the failure: the box is matted as subject
        shot.append((plate.astype(np.float32), background, engine, alpha))
    return shot, box


def test_when_two_frames_are_scribbled_then_the_other_frames_of_the_shot_are_fixed():
    shot, box = tiny_shot()
    scribbled = []
    for t in (0, 1):
        plate, clean, engine, truth = shot[t]
        fg = np.zeros((SIZE, SIZE), bool)
        bg = np.zeros((SIZE, SIZE), bool)
        bg[6:12, 28:34:2] = True            # strokes across the box
        bg[30:36, 30] = True                # and some plain background
        fg[24:29, 8 + 3 * t] = True         # a stroke through the subject
        scribbled.append(ScribbledFrame(plate, clean, engine, Scribbles(fg, bg), f"frame {t}"))
    rng = np.random.default_rng(1)
    base = CompositeDataset([(np.broadcast_to(np.float32([0.2, 0.6, 0.9]), (SIZE, SIZE, 3)),
                              disc(SIZE, (20.0, 20.0), 8.0))],
                            [rng.random((SIZE, SIZE, 3)).astype(np.float32)], (SIZE, SIZE),
                            options=AugmentOptions(noise_sigma=0.02, distractors=0.0))
    model = tiny_correction()
    losses = finetune_scribbles(model, scribbled, base,
                                FinetuneConfig(steps=60, batch_size=5, learning_rate=1e-2,
                                               crop=(SIZE, SIZE)),
                                device="cpu", progress=False)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    before, after = [], []
    for plate, clean, engine, truth in shot[2:]:
        corrected = correct_alpha(model, plate, clean, engine)
        before.append(np.abs(engine - truth).mean())
        after.append(np.abs(corrected - truth).mean())
        assert corrected[box > 0].mean() < 0.5  # the box is background now
    assert np.mean(after) <= 0.6 * np.mean(before), (before, after)


def write_png(path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = rgb[..., ::-1] if rgb.ndim == 3 else rgb
    cv2.imwrite(str(path), np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))


def write_tiny_shot(folder, scribble_size: int = SIZE, paint: bool = True) -> list[str]:
    """The tiny shot on disk as PNG sequences; the CLI arguments that train on frames 1, 2."""
    shot, _ = tiny_shot(3)
    for t, (plate, clean, engine, _truth) in enumerate(shot, start=1):
        write_png(folder / "plate" / f"p.{t:04d}.png", plate)
        write_png(folder / "clean" / f"c.{t:04d}.png", clean)
        write_png(folder / "alpha" / f"a.{t:04d}.png", engine)
        strokes = np.zeros((scribble_size, scribble_size, 3), np.float32)
        if paint:
            strokes[6:12, 28, 2] = 1.0   # blue across the box
            strokes[26, 6:10, 0] = 1.0   # red through the subject
        write_png(folder / "strokes" / f"s.{t:04d}.png", strokes)
    return ["train", "scribbles", "--plate", str(folder / "plate" / "p.####.png"),
            "--alpha", str(folder / "alpha" / "a.####.png"),
            "--scribbles", str(folder / "strokes" / "s.####.png"),
            "--node", "background-matte",  # an engine with a clean plate: the reference
            "--reference", str(folder / "clean" / "c.####.png"), "--frames", "1,2",
            "--cache-dir", str(folder / "cache"), "--device", "cpu", "--quiet"]


def test_when_train_scribbles_runs_then_a_correction_checkpoint_lands_in_the_cache(tmp_path,
                                                                                   capsys):
    from mattekit.inference.cli import main
    from mattekit.inference.models.checkpoint import read_checkpoint

    base = tmp_path / "base"
    fg, alpha = np.zeros((24, 20, 3), np.float32), disc(24, (12.0, 10.0), 6.0)[:, :20]
    fg[...] = (0.2, 0.6, 0.9)
    write_png(base / "input" / "one.png", fg)
    write_png(base / "alpha" / "one.png", alpha)
    args = write_tiny_shot(tmp_path)
    assert main([*args, "--steps", "3", "--crop", "24", "--base", str(base),
                 "--name", "shotA"]) == 0
    path = tmp_path / "cache" / "shot-models" / "shotA.pt"
    assert capsys.readouterr().out.strip() == str(path)
    payload = read_checkpoint(path)
    assert payload["architecture"] == "alphacorrection"
    assert payload["extra"]["frames"] == [1, 2] and len(payload["extra"]["losses"]) == 3
    assert payload["extra"]["scribbled_pixels"] == 2 * (6 + 4)
    assert (tmp_path / "cache" / "shot-models" / "shotA.loss.png").is_file()
    assert not list((tmp_path / "cache").rglob("*.tmp"))


@pytest.mark.parametrize("case, message", [
    ("size", r"s\.0001\.png, frame 1: the scribbles is 32x32 but the plate is 40x40"),
    ("empty", "the scribbles are empty"),
])
def test_when_train_scribbles_gets_bad_scribbles_then_one_line_names_the_cause(
        tmp_path, capsys, case, message):
    from mattekit.inference.cli import main

    args = write_tiny_shot(tmp_path, scribble_size=32 if case == "size" else SIZE,
                           paint=case != "empty")
    assert main([*args, "--steps", "2"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith("mattekit: error:")]
    assert len(errors) == 1 and re.search(message, errors[0]), errors
    assert not (tmp_path / "cache" / "shot-models").exists()


def test_when_ten_norm_free_layers_are_stacked_then_the_signal_neither_vanishes_nor_blows_up():
    torch.manual_seed(0)
    stack = torch.nn.Sequential(*[ConvAct(16, 16) for _ in range(10)])
    x = torch.randn(2, 16, 32, 32)
    with torch.no_grad():
        y = stack(x)
    ratio = float(y.pow(2).mean().sqrt() / x.pow(2).mean().sqrt())
    assert 0.2 < ratio < 5.0, ratio  # PyTorch's default init leaves ~1e-4 of it after 10 layers
    assert float((y < 0).float().mean()) > 0.05  # leaky: negative responses survive


def test_when_fine_tuning_runs_then_the_learning_rate_ramps_up_and_then_decays_to_its_floor():
    assert learning_rate_factor(0, 300, 30) == pytest.approx(1 / 30)
    assert learning_rate_factor(14, 300, 30) == pytest.approx(0.5)
    assert learning_rate_factor(30, 300, 30) == pytest.approx(1.0)
    middle = learning_rate_factor(165, 300, 30)
    assert 0.5 < middle < 0.6  # half-way down the cosine: (1 + floor) / 2
    assert learning_rate_factor(299, 300, 30) == pytest.approx(0.1)
    factors = [learning_rate_factor(step, 300, 30) for step in range(30, 300)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))


def test_when_the_loss_spikes_late_then_the_weights_of_the_lowest_running_loss_come_back():
    net = torch.nn.Linear(1, 1)
    best = BestWeights(window=3)
    for value, loss in [(1.0, 0.5), (2.0, 0.2), (3.0, 0.1), (4.0, 0.1), (5.0, 0.9), (6.0, 0.9)]:
        torch.nn.init.constant_(net.weight, value)
        best.update(net, loss)
    best.restore(net)
    assert float(net.weight.detach()) == 4.0  # the window (0.2, 0.1, 0.1) had the lowest mean



def test_when_a_correction_is_started_from_a_seed_then_the_same_seed_gives_the_same_weights():
    first, again, other = (build_model("alphacorrection", seed=s) for s in (3, 3, 4))
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any(not torch.equal(a, b) for a, b in zip(first.state_dict().values(),
                                                       other.state_dict().values()))
