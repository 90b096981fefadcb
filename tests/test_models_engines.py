"""The checkpoint engines (cinematte, bgvitmatte) in the manifest and through the real CLI: they
need no model file, refuse to start without a checkpoint (one line, exit 1, no torch needed),
and render EXRs from a checkpoint trained for a few steps.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mattekit.inference.cli import main
from mattekit.inference.engines import registry
from mattekit.inference.errors import EngineError
from mattekit.inference.exrio import read_exr, write_exr

CHECKPOINT_ENGINES = ("cinematte", "bgvitmatte")
W, H = 48, 32


@pytest.fixture
def shot(tmp_path) -> Path:
    """Two sRGB-encoded plate frames (a red disc over texture) and their clean plate."""
    rng = np.random.default_rng(0)
    background = rng.random((H, W, 3)).astype(np.float32)
    yy, xx = np.mgrid[:H, :W]
    alpha = np.clip((10 - np.hypot(yy - H / 2, xx - W / 2)) / 3, 0, 1).astype(np.float32)
    plate = alpha[..., None] * np.float32([0.9, 0.2, 0.1]) + (1 - alpha[..., None]) * background
    for frame in (1, 2):
        write_exr(tmp_path / f"plate.{frame:04d}.exr", plate.astype(np.float32),
                  pixel_type="float")
    write_exr(tmp_path / "clean.exr", background, pixel_type="float")
    np.save(tmp_path / "alpha.npy", alpha)
    return tmp_path


def render_args(shot: Path, engine: str, *extra: str) -> list[str]:
    return ["render", "background-matte", "--engine", engine,
            "--plate", str(shot / "plate.####.exr"), "--clean-plate", str(shot / "clean.exr"),
            "--out", str(shot / "out" / engine / "m.####.exr"), "--cache-dir",
            str(shot / "cache"), "--colorspace", "sRGB - Texture", "--pixel-type", "float",
            "--device", "cpu", "--quiet", *extra]


@pytest.mark.parametrize("name", CHECKPOINT_ENGINES)
def test_when_the_manifest_is_read_then_the_checkpoint_engines_need_no_model_file(name):
    spec = registry.engine_spec(name)
    assert spec.model is None and spec.node == "background-matte"
    assert spec.module == "mattekit.inference.models.engines"
    assert dict(spec.defaults) == {"checkpoint": "", "working_size": 1024}
    assert spec.required_inputs == ("clean_plate",) and not spec.temporal
    assert registry.default_engine("background-matte").name == "cleanplate"


@pytest.mark.parametrize("name", CHECKPOINT_ENGINES)
def test_when_created_without_a_checkpoint_then_the_engine_refuses_before_needing_torch(name):
    with pytest.raises(EngineError, match=f"no checkpoint configured for {name}: .*"
                                          "--param checkpoint=PATH"):
        registry.create_engine(name, "cpu")
    with pytest.raises(EngineError, match="valid: checkpoint, working_size"):
        registry.create_engine(name, "cpu", {"chekpoint": "x.pt"})


def test_when_models_are_listed_then_the_checkpoint_engines_say_no_weights_are_shipped(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in CHECKPOINT_ENGINES:
        block = out.split(f"engine {name}  ")[1].split("engine ")[0]
        assert "node background-matte; input space 'sRGB - Texture'" in block
        assert "none shipped; runs a trained checkpoint (--param checkpoint=PATH" in block
    assert "NOT INSTALLED" not in out


def test_when_cinematte_is_rendered_without_a_checkpoint_then_the_cli_exits_1_with_one_line(
        shot):
    result = subprocess.run([sys.executable, "-m", "mattekit.inference.cli",
                             *render_args(shot, "cinematte")],
                            capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1
    assert len(lines) == 1, lines
    assert lines[0].startswith("mattekit: error: no checkpoint configured for cinematte: ")
    assert not (shot / "out").exists() or not any((shot / "out").rglob("*.exr"))


def trained_checkpoint(name: str, shot: Path, steps: int = 3) -> Path:
    """A tiny network fitted to the shot for a few Adam steps, saved as a checkpoint."""
    torch = pytest.importorskip("torch")
    from mattekit.inference.models import build_model
    from mattekit.inference.models.bgvitmatte import BgViTMatteConfig
    from mattekit.inference.models.checkpoint import save_checkpoint
    from mattekit.inference.models.cinematte import CineMatteConfig
    from mattekit.inference.models.losses import matting_loss

    tiny = {"cinematte": CineMatteConfig.tiny(), "bgvitmatte": BgViTMatteConfig.tiny()}[name]
    torch.manual_seed(0)
    model = build_model(name, tiny.to_dict()).train()

    def tensor(array: np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(np.atleast_3d(array).transpose(2, 0, 1)))[None]

    src = tensor(read_exr(shot / "plate.0001.exr").rgb)
    bgr = tensor(read_exr(shot / "clean.exr").rgb)
    alpha = tensor(np.load(shot / "alpha.npy"))
    trimap = torch.where(alpha >= 1, 1.0, torch.where(alpha <= 0, 0.0, 0.5))
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(steps):
        optimiser.zero_grad()
        matting_loss(model(src, bgr)[1], alpha, trimap)["total"].backward()
        optimiser.step()
    return save_checkpoint(model, shot / f"{name}.pt", extra={"steps": steps})


@pytest.mark.parametrize("name", CHECKPOINT_ENGINES)
def test_when_a_trained_checkpoint_is_configured_then_the_cli_renders_its_mattes(name, shot):
    torch = pytest.importorskip("torch")
    from mattekit.inference.models.checkpoint import load_checkpoint

    checkpoint = trained_checkpoint(name, shot)
    assert main(render_args(shot, name, "--param", f"checkpoint={checkpoint}",
                            "--param", "working_size=0")) == 0
    network = load_checkpoint(checkpoint)
    plate = read_exr(shot / "plate.0001.exr").rgb
    clean = read_exr(shot / "clean.exr").rgb
    with torch.no_grad():
        expected = network(*(torch.from_numpy(a.transpose(2, 0, 1).copy())[None]
                             for a in (plate, clean)))[1][0, 0].numpy()
    for frame in (1, 2):
        matte = read_exr(shot / "out" / name / f"m.{frame:04d}.exr")
        assert matte.alpha.shape == (H, W)
        np.testing.assert_allclose(matte.alpha, expected, atol=1e-4)
        assert matte.metadata["mattekit/engine"] == name
        assert matte.metadata["mattekit/modelSha256"] == registry.file_sha256(checkpoint)
