"""The oavm checkpoint engine of video-matte: in the manifest with no model file, refusing to
start without a checkpoint, carrying the network's memory between frames (and through the
cache, as plain arrays), and rendering EXRs through the real CLI from a checkpoint trained for
a few steps, with a first-frame key mask.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mattekit.inference.cli import main
from mattekit.inference.engines import registry
from mattekit.inference.errors import EngineError
from mattekit.inference.exrio import read_exr, write_exr

W, H, FRAMES = 48, 32, 3


def disc_clip() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A red disc moving right over texture (sRGB 0..1) and its alpha, frame by frame."""
    rng = np.random.default_rng(0)
    background = rng.random((H, W, 3)).astype(np.float32)
    yy, xx = np.mgrid[:H, :W]
    frames, alphas = [], []
    for t in range(FRAMES):
        alpha = np.clip((9 - np.hypot(yy - H / 2, xx - 16 - 3 * t)) / 3, 0, 1).astype(np.float32)
        frames.append((alpha[..., None] * np.float32([0.9, 0.2, 0.1])
                       + (1 - alpha[..., None]) * background).astype(np.float32))
        alphas.append(alpha)
    return frames, alphas


def test_when_the_manifest_is_read_then_oavm_is_a_temporal_video_matte_engine_without_a_model():
    spec = registry.engine_spec("oavm")
    assert spec.model is None and spec.node == "video-matte" and spec.temporal
    assert spec.module == "mattekit.inference.models.engines" and spec.factory == "OavmEngine"
    assert dict(spec.defaults) == {"checkpoint": "", "working_size": 1024, "warmup_frames": 8}
    assert spec.inputs == ("mask",) and spec.key_inputs == ("mask",)
    assert spec.required_inputs == ()
    assert registry.default_engine("video-matte").name != "oavm"  # never the default


def test_when_created_without_a_checkpoint_then_oavm_refuses_before_needing_torch():
    with pytest.raises(EngineError, match="no checkpoint configured for oavm: .*"
                                          "--param checkpoint=PATH"):
        registry.create_engine("oavm", "cpu")
    with pytest.raises(EngineError, match="valid: checkpoint, warmup_frames, working_size"):
        registry.create_engine("oavm", "cpu", {"chekpoint": "x.pt"})


def test_when_models_are_listed_then_oavm_says_no_weights_are_shipped(capsys):
    assert main(["models"]) == 0
    block = capsys.readouterr().out.split("engine oavm  ")[1].split("engine ")[0]
    assert "node video-matte; input space 'sRGB - Texture'" in block
    assert "none shipped; runs a trained checkpoint (--param checkpoint=PATH" in block


# -- with torch ------------------------------------------------------------------------------


@pytest.fixture
def torch():
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


def tiny_checkpoint(torch, path: Path, seed: int = 0) -> Path:
    from mattekit.inference.models import build_model
    from mattekit.inference.models.checkpoint import save_checkpoint
    from mattekit.inference.models.oavm import OavmConfig

    torch.manual_seed(seed)
    return save_checkpoint(build_model("oavm", OavmConfig.tiny().to_dict()).eval(), path)


def oavm_engine(**params):
    from mattekit.inference.models.engines import OavmEngine

    spec = SimpleNamespace(name="oavm", input_space="sRGB - Texture")
    return OavmEngine(spec=spec, model=None, model_file=None, device="cpu",
                      params={"checkpoint": "", "working_size": 0, "warmup_frames": 8, **params})


def tensor(torch, array: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(np.atleast_3d(array).transpose(2, 0, 1)))[None]


def network_alphas(torch, network, frames, mask) -> list[np.ndarray]:
    """The reference: the network run by hand, memory from the first frame's mask."""
    with torch.no_grad():
        memory = network.init_memory(tensor(torch, frames[0]), tensor(torch, mask))
        alphas = []
        for frame in frames:
            _, pha, memory = network(tensor(torch, frame), memory)
            alphas.append(pha[0, 0].numpy())
    return alphas


def test_when_a_key_mask_comes_on_the_first_frame_then_the_engine_mattes_like_the_network(
        torch, tmp_path):
    from mattekit.inference.models.checkpoint import load_checkpoint

    path = tiny_checkpoint(torch, tmp_path / "oavm.pt")
    frames, alphas = disc_clip()
    mask = (alphas[0] > 0.5).astype(np.float32)
    matte = oavm_engine(checkpoint=str(path))
    assert matte.temporal and matte.state() == {}
    results = [matte.process(frames[0], {"mask": mask})]
    results += [matte.process(frame, {}) for frame in frames[1:]]
    expected = network_alphas(torch, load_checkpoint(path), frames, mask)
    for result, want in zip(results, expected):
        assert result.alpha.shape == (H, W) and result.foreground.shape == (H, W, 3)
        np.testing.assert_allclose(result.alpha, want, atol=1e-5)
    # another key mask names another target: the memory and so the alpha change
    other = matte.process(frames[1], {"mask": 1.0 - mask})
    fresh = oavm_engine(checkpoint=str(path))
    fresh.process(frames[0], {"mask": mask})
    assert float(np.abs(other.alpha - fresh.process(frames[1], {}).alpha).max()) > 1e-5
    with pytest.raises(EngineError, match="the key mask is empty"):
        matte.process(frames[0], {"mask": np.zeros((H, W), np.float32)})


def test_when_the_state_is_saved_and_loaded_then_the_next_frame_is_the_same_as_in_sequence(
        torch, tmp_path):
    path = tiny_checkpoint(torch, tmp_path / "oavm.pt", seed=1)
    frames, alphas = disc_clip()
    mask = (alphas[0] > 0.5).astype(np.float32)
    sequential = oavm_engine(checkpoint=str(path))
    sequential.process(frames[0], {"mask": mask})
    sequential.process(frames[1], {})
    state = sequential.state()
    from mattekit.inference.models.engines import OAVM_STATE_NAMES
    from mattekit.inference.models.oavm import MemoryState

    assert OAVM_STATE_NAMES == MemoryState._fields
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert {"oavm_first_key", "oavm_prev_alpha", "oavm_queries", "oavm_shape"} <= set(state)
    # through the cache's own format (np.savez / np.load)
    np.savez(tmp_path / "state.npz", **state)
    with np.load(tmp_path / "state.npz", allow_pickle=False) as saved:
        restored = {k: saved[k] for k in saved.files}
    resumed = oavm_engine(checkpoint=str(path))
    resumed.load_state(restored)
    np.testing.assert_allclose(resumed.process(frames[2], {}).alpha,
                               sequential.process(frames[2], {}).alpha, atol=1e-6)
    resumed.load_state({})  # an empty state is a fresh start
    assert resumed.state() == {}


def test_when_no_key_mask_has_come_yet_then_every_object_is_a_candidate(torch, tmp_path):
    from mattekit.inference.models.checkpoint import load_checkpoint

    path = tiny_checkpoint(torch, tmp_path / "oavm.pt", seed=2)
    frames, _ = disc_clip()
    result = oavm_engine(checkpoint=str(path)).process(frames[0], None)
    expected = network_alphas(torch, load_checkpoint(path), frames[:1], np.ones((H, W), np.float32))
    np.testing.assert_allclose(result.alpha, expected[0], atol=1e-5)


def test_when_the_timeline_jumps_then_the_first_frame_memory_stays_and_the_guidance_lifts(
        torch, tmp_path):
    from mattekit.inference.models.checkpoint import load_checkpoint

    path = tiny_checkpoint(torch, tmp_path / "oavm.pt", seed=3)
    frames, alphas = disc_clip()
    mask = (alphas[0] > 0.5).astype(np.float32)
    matte = oavm_engine(checkpoint=str(path))
    matte.process(frames[0], {"mask": mask})
    matte.discontinuity()
    jumped = matte.process(frames[2], {}).alpha
    network = load_checkpoint(path)
    with torch.no_grad():
        memory = network.init_memory(tensor(torch, frames[0]), tensor(torch, mask))
        _, _, after = network(tensor(torch, frames[0]), memory)
        lifted = after._replace(prev_key=after.first_key, prev_value=after.first_value,
                                prev_alpha=torch.ones_like(after.prev_alpha))
        expected = network(tensor(torch, frames[2]), lifted)[1][0, 0].numpy()
    np.testing.assert_allclose(jumped, expected, atol=1e-5)


def test_when_the_working_size_is_smaller_then_the_matte_comes_back_at_frame_size(
        torch, tmp_path):
    path = tiny_checkpoint(torch, tmp_path / "oavm.pt")
    frames, alphas = disc_clip()
    matte = oavm_engine(checkpoint=str(path), working_size=24)
    result = matte.process(frames[0], {"mask": alphas[0]})
    assert result.alpha.shape == (H, W) and result.foreground.shape == (H, W, 3)
    assert tuple(matte.state()["oavm_shape"]) == (16, 24)


@pytest.fixture
def shot(tmp_path) -> Path:
    """The clip as float EXRs and a key-mask sequence holding its first frame only."""
    frames, alphas = disc_clip()
    for index, (frame, alpha) in enumerate(zip(frames, alphas), start=1):
        write_exr(tmp_path / f"plate.{index:04d}.exr", frame, pixel_type="float")
        np.save(tmp_path / f"alpha.{index:04d}.npy", alpha)
    write_exr(tmp_path / "mask.0001.exr", np.repeat(alphas[0][..., None], 3, axis=2),
              (alphas[0] > 0.5).astype(np.float32), pixel_type="float")
    return tmp_path


def trained_checkpoint(torch, shot: Path, steps: int = 3) -> Path:
    """A tiny OAVM fitted to the clip for a few Adam steps, saved as a checkpoint."""
    from mattekit.inference.models import build_model
    from mattekit.inference.models.checkpoint import save_checkpoint
    from mattekit.inference.models.losses import matting_loss
    from mattekit.inference.models.oavm import OavmConfig

    torch.manual_seed(0)
    model = build_model("oavm", OavmConfig.tiny().to_dict()).train()
    src = torch.stack([tensor(torch, read_exr(shot / f"plate.{i:04d}.exr").rgb)
                       for i in range(1, FRAMES + 1)], dim=1)
    alpha = torch.stack([tensor(torch, np.load(shot / f"alpha.{i:04d}.npy"))
                         for i in range(1, FRAMES + 1)], dim=1)
    trimap = torch.where(alpha >= 1, 1.0, torch.where(alpha <= 0, 0.0, 0.5))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        optimiser.zero_grad()
        memory = model.init_memory(src[:, 0], (alpha[:, 0] > 0.5).float())
        pha = model(src, memory, target=alpha)[1]
        matting_loss(pha.flatten(0, 1), alpha.flatten(0, 1),
                     trimap.flatten(0, 1))["total"].backward()
        optimiser.step()
    return save_checkpoint(model, shot / "oavm.pt", extra={"steps": steps})


def render_args(shot: Path, checkpoint: Path, cache: str, *extra: str) -> list[str]:
    return ["render", "video-matte", "--engine", "oavm", "--param", f"checkpoint={checkpoint}",
            "--param", "working_size=0", "--plate", str(shot / "plate.####.exr"),
            "--mask", str(shot / "mask.####.exr"), "--out", str(shot / "out" / "m.####.exr"),
            "--cache-dir", str(shot / cache), "--colorspace", "sRGB - Texture",
            "--pixel-type", "float", "--device", "cpu", "--quiet", *extra]


def test_when_a_trained_checkpoint_is_configured_then_the_cli_renders_the_clip_with_its_memory(
        torch, shot):
    from mattekit.inference.models.checkpoint import load_checkpoint

    checkpoint = trained_checkpoint(torch, shot)
    assert main(render_args(shot, checkpoint, "cache")) == 0
    frames = [read_exr(shot / f"plate.{i:04d}.exr").rgb for i in range(1, FRAMES + 1)]
    mask = read_exr(shot / "mask.0001.exr").alpha
    expected = network_alphas(torch, load_checkpoint(checkpoint), frames, mask)
    for index, want in enumerate(expected, start=1):
        matte = read_exr(shot / "out" / f"m.{index:04d}.exr")
        assert matte.alpha.shape == (H, W)
        np.testing.assert_allclose(matte.alpha, want, atol=1e-4)
        assert matte.metadata["mattekit/engine"] == "oavm"
        assert matte.metadata["mattekit/modelSha256"] == registry.file_sha256(checkpoint)
    # the last frame alone, with an empty cache: the render warms the memory up from the key
    # frame over the frames before it, so the frame is the one of the sequential render
    (shot / "out" / f"m.{FRAMES:04d}.exr").unlink()
    assert main(render_args(shot, checkpoint, "cache-2", "--frames", str(FRAMES))) == 0
    again = read_exr(shot / "out" / f"m.{FRAMES:04d}.exr").alpha
    np.testing.assert_allclose(again, expected[-1], atol=1e-4)
