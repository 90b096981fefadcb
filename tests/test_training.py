"""The training toolkit: augmentations, on-the-fly composites, the loop with checkpoints and
resumption, the loss curve PNG and the ONNX export. Tiny networks, a few steps, CPU, seconds."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from mattekit.inference.training.curve import curve_image, write_loss_curve
from mattekit.inference.training.dataset import AugmentOptions, CompositeDataset, read_layer
from mattekit.inference.training.transforms import (
    affine_matrix,
    colour_jitter,
    random_affine,
    random_flip,
    sensor_noise,
)

SIZE = 32


def disc(size: int, colour) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    radius = np.hypot(yy - size / 2, xx - size / 3)
    alpha = np.clip((size / 4 + 2 - radius) / 4, 0, 1).astype(np.float32)
    return np.broadcast_to(np.float32(colour), (size, size, 3)).copy(), alpha


def dataset(seed: int = 0, **options) -> CompositeDataset:
    rng = np.random.default_rng(5)
    backgrounds = [rng.random((48, 40, 3)).astype(np.float32) * 0.5 for _ in range(2)]
    return CompositeDataset([disc(40, (0.9, 0.3, 0.2)), disc(24, (0.2, 0.8, 0.3))], backgrounds,
                            size=(SIZE, SIZE), seed=seed, options=AugmentOptions(**options))


def test_when_a_layer_is_flipped_then_foreground_and_alpha_mirror_together():
    fg, alpha = disc(SIZE, (1.0, 0.5, 0.0))
    fg = fg * alpha[..., None]
    flipped_fg, flipped_alpha = random_flip(fg, alpha, np.random.default_rng(0), probability=1.0)
    np.testing.assert_array_equal(flipped_alpha, alpha[:, ::-1])
    np.testing.assert_array_equal(flipped_fg, fg[:, ::-1])
    same = random_flip(fg, alpha, np.random.default_rng(0), probability=0.0)
    assert same[1] is alpha


def test_when_an_affine_warp_is_drawn_then_alpha_and_foreground_move_alike():
    fg, alpha = disc(SIZE, (1.0, 1.0, 1.0))
    fg = fg * alpha[..., None]
    warped_fg, warped_alpha = random_affine(fg, alpha, np.random.default_rng(3), max_rotation=30,
                                            max_translate=0.2)
    assert not np.allclose(warped_alpha, alpha)
    np.testing.assert_allclose(warped_fg[..., 0], warped_alpha, atol=1e-5)
    assert 0.0 <= warped_alpha.min() and warped_alpha.max() <= 1.0
    identity = affine_matrix(SIZE, SIZE, 0.0, 1.0, 0.0, (0.0, 0.0))
    np.testing.assert_allclose(identity, [[1, 0, 0], [0, 1, 0]], atol=1e-6)
    shifted = affine_matrix(SIZE, SIZE, 0.0, 1.0, 0.0, (2.0, 5.0))
    np.testing.assert_allclose(shifted[:, 2], [5.0, 2.0], atol=1e-6)


def test_when_colours_are_jittered_then_they_change_within_range_and_grey_stays_grey_without_hue():
    rng = np.random.default_rng(1)
    image = rng.random((16, 16, 3)).astype(np.float32)
    jittered = colour_jitter(image, np.random.default_rng(2))
    assert not np.allclose(jittered, image)
    assert jittered.min() >= 0.0 and jittered.max() <= 1.0
    grey = np.full((8, 8, 3), 0.4, np.float32)
    out = colour_jitter(grey, np.random.default_rng(2), hue=0.0, saturation=0.0)
    np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-5)
    np.testing.assert_allclose(out[..., 1], out[..., 2], atol=1e-5)
    still = colour_jitter(image, np.random.default_rng(2), 0.0, 0.0, 0.0, 0.0)
    np.testing.assert_allclose(still, image, atol=1e-5)


def test_when_sensor_noise_is_added_then_its_sigma_is_at_most_the_limit():
    flat = np.full((128, 128, 3), 0.5, np.float32)
    sigmas = [float((sensor_noise(flat, np.random.default_rng(s), 0.1) - 0.5).std())
              for s in range(20)]
    assert max(sigmas) <= 0.1 * 1.05 and max(sigmas) > 0.02


def test_when_a_sample_is_drawn_twice_then_it_is_the_same_and_other_indices_differ():
    data = dataset()
    a, b, c = data.sample(7), data.sample(7), data.sample(8)
    for name in ("frame", "clean_plate", "alpha", "trimap"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.frame, c.frame)
    assert not np.array_equal(dataset(seed=1).sample(7).frame, a.frame)
    assert a.frame.shape == (SIZE, SIZE, 3) and a.alpha.shape == (SIZE, SIZE)
    assert set(np.unique(a.trimap)) <= {0.0, 0.5, 1.0}


def test_when_augmentations_are_off_then_the_frame_is_the_exact_composite():
    data = dataset(flip=0.0, affine=False, jitter=0.0, noise_sigma=0.0, distractors=0.0,
                   plate_exposure=0.0)
    sample = data.sample(3)
    expected = (sample.alpha[..., None] * sample.foreground
                + (1 - sample.alpha[..., None]) * sample.clean_plate)
    np.testing.assert_allclose(sample.frame, expected, atol=1e-6)
    assert sample.alpha.max() > 0.9 and sample.alpha.min() == 0.0


def test_when_distractors_are_always_on_then_some_appear_in_the_clean_plate_not_in_alpha():
    quiet = dict(flip=0.0, affine=False, jitter=0.0, noise_sigma=0.0, plate_exposure=0.0)
    with_them, without = dataset(distractors=1.0, **quiet), dataset(distractors=0.0, **quiet)
    changed = [not np.allclose(with_them.sample(i).clean_plate, without.sample(i).clean_plate)
               for i in range(6)]
    assert any(changed)
    # the ground truth stays the subject's own
    for i in range(6):
        np.testing.assert_array_equal(with_them.sample(i).alpha, without.sample(i).alpha)


def test_when_the_noise_is_on_then_frame_and_clean_plate_get_their_own_noise():
    data = dataset(flip=0.0, affine=False, jitter=0.0, distractors=0.0, plate_exposure=0.0)
    sample = data.sample(0)
    background = sample.alpha < 1e-6
    difference = (sample.frame - sample.clean_plate)[background]
    assert difference.std() > 1e-3  # independent noise: the background differs by noise alone


def test_when_a_layer_is_read_from_disk_then_bad_files_name_themselves(tmp_path):
    fg, alpha = disc(16, (1.0, 0.0, 0.0))
    cv2.imwrite(str(tmp_path / "fg.png"), (fg[..., ::-1] * 255).astype(np.uint8))
    cv2.imwrite(str(tmp_path / "a.png"), (alpha * 255).astype(np.uint8))
    rgb, matte = read_layer(tmp_path / "fg.png", tmp_path / "a.png")
    np.testing.assert_allclose(rgb[0, 0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(matte, alpha, atol=1 / 255)
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="small.png: alpha"):
        read_layer(tmp_path / "fg.png", tmp_path / "small.png")
    with pytest.raises(ValueError, match="missing.png: not a readable image"):
        read_layer(tmp_path / "missing.png", tmp_path / "a.png")


def test_when_a_falling_loss_is_drawn_then_the_png_shows_a_curve_from_top_left_down(tmp_path):
    losses = list(np.linspace(1.0, 0.1, 50))
    path = write_loss_curve(losses, tmp_path / "loss.png", width=320, height=200)
    image = cv2.imread(str(path))
    assert image.shape == (200, 320, 3)
    np.testing.assert_array_equal(image, curve_image(losses, 320, 200))
    blue = (image[..., 0] > 150) & (image[..., 2] < 100)
    rows, cols = np.nonzero(blue)
    left_rows, right_rows = rows[cols < 100], rows[cols > 250]
    assert left_rows.mean() < right_rows.mean()  # high loss (small row) first
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ValueError, match="diverged"):
        curve_image([1.0, float("nan")])
    with pytest.raises(ValueError, match="no steps"):
        curve_image([])


torch = pytest.importorskip("torch")

from mattekit.inference.models import build_model  # noqa: E402
from mattekit.inference.models.bgvitmatte import BgViTMatteConfig  # noqa: E402
from mattekit.inference.models.checkpoint import load_checkpoint  # noqa: E402
from mattekit.inference.training.loop import TrainingConfig, train  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("bgvitmatte", BgViTMatteConfig.tiny().to_dict())


def test_when_a_run_trains_then_it_leaves_a_checkpoint_a_curve_and_an_onnx_that_agree(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    config = TrainingConfig(steps=3, batch_size=2, learning_rate=3e-3, checkpoint_every=2,
                            export_size=(SIZE, SIZE))
    result = train(tiny_model(), dataset(), tmp_path, config, device="cpu", progress=False)
    assert len(result.losses) == 3 and all(np.isfinite(result.losses))
    assert cv2.imread(str(result.curve)).shape == (360, 640, 3)
    loaded = load_checkpoint(result.checkpoint)
    for name, value in result.model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value)
    sample = dataset().sample(123)
    src = torch.from_numpy(sample.frame.transpose(2, 0, 1)[None].copy())
    bgr = torch.from_numpy(sample.clean_plate.transpose(2, 0, 1)[None].copy())
    with torch.no_grad():
        _, expected = loaded(src, bgr)
    session = ort.InferenceSession(str(result.onnx), providers=["CPUExecutionProvider"])
    _, got = session.run(None, {"src": src.numpy(), "bgr": bgr.numpy()})
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)


def test_when_a_tiny_model_trains_on_one_composite_then_the_loss_goes_down(tmp_path):
    quiet = dataset(flip=0.0, affine=False, jitter=0.0, noise_sigma=0.0, distractors=0.0)
    fixed = CompositeDataset(quiet.foregrounds[:1], quiet.backgrounds[:1], (SIZE, SIZE),
                             options=quiet.options)
    # one background crop and one layer: every index is nearly the same composite
    config = TrainingConfig(steps=12, batch_size=1, learning_rate=3e-3, checkpoint_every=100)
    losses = train(tiny_model(), fixed, tmp_path, config, device="cpu", progress=False).losses
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses


def test_when_a_run_is_resumed_then_it_ends_where_the_uninterrupted_run_ends(tmp_path):
    config = TrainingConfig(steps=4, batch_size=2, learning_rate=3e-3, checkpoint_every=2)
    whole = train(tiny_model(), dataset(), tmp_path / "whole", config, device="cpu",
                  progress=False)
    first = TrainingConfig(steps=2, batch_size=2, learning_rate=3e-3, checkpoint_every=2)
    half = train(tiny_model(), dataset(), tmp_path / "half", first, device="cpu",
                 progress=False)
    resumed = train(tiny_model(seed=9), dataset(), tmp_path / "resumed", config,
                    resume_from=half.checkpoint, device="cpu", progress=False)
    assert resumed.losses[:2] == half.losses
    np.testing.assert_allclose(resumed.losses, whole.losses, rtol=1e-6)
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=1e-6, atol=1e-7)


def test_when_the_resume_checkpoint_does_not_fit_then_the_run_says_why(tmp_path):
    config = TrainingConfig(steps=1, batch_size=1, checkpoint_every=1)
    done = train(tiny_model(), dataset(), tmp_path / "a", config, device="cpu", progress=False)
    other = build_model("bgvitmatte", {**BgViTMatteConfig.tiny().to_dict(), "head_dim": 4})
    with pytest.raises(ValueError, match="another config"):
        train(other, dataset(), tmp_path / "b", config, resume_from=done.checkpoint,
              device="cpu", progress=False)
    with pytest.raises(ValueError, match="steps must be at least 1"):
        TrainingConfig(steps=0)
