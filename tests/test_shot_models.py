"""Shot models as engines: ``shot:NAME`` is ``<cache>/shot-models/NAME.pt``, resolved by the
registry, rendered by the CLI and the worker, keyed in the cache by the checkpoint's content.

Checkpoints are tiny correction networks whose effect is known: one whose last layer has a bias
of -1 (alpha + delta clamps to 0 everywhere), and one with seeded random weights (a real,
non-trivial correction compared against ``correct_alpha``). Plates are small; CPU, seconds.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from mattekit import ocio
from mattekit.inference.cli import main
from mattekit.inference.engines.registry import engine_spec, file_sha256
from mattekit.inference.errors import EngineError
from mattekit.inference.exrio import read_exr

torch = pytest.importorskip("torch")

from worker_helpers import make_plate, start_worker_in  # noqa: E402

from mattekit.inference.engines.shot import shot_extra, shot_model_path  # noqa: E402
from mattekit.inference.models import build_model  # noqa: E402
from mattekit.inference.models.checkpoint import save_checkpoint  # noqa: E402
from mattekit.inference.models.config import ModelConfig  # noqa: E402
from mattekit.inference.models.correction import AlphaCorrectionConfig  # noqa: E402
from mattekit.inference.training.scribbles import correct_alpha  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def correction(bias: float = 0.0, seed: int = 0, random_delta: bool = False):
    torch.manual_seed(seed)
    model = build_model("alphacorrection", AlphaCorrectionConfig.tiny().to_dict())
    with torch.no_grad():
        model.delta.bias.fill_(bias)
        if random_delta:
            model.delta.weight.normal_(0.0, 0.2)
    return model.eval()


def save_shot(cache: Path, name: str, model, base: str = "rvm", node: str = "video-matte",
              with_reference: bool = False) -> Path:
    return save_checkpoint(model, shot_model_path(name, cache),
                           extra=shot_extra(node, base, with_reference))


@pytest.fixture
def portrait(srgb_clip, write_linear_sequence):
    """portrait(folder, count): the demo portrait (RVM mattes it) as an ACEScg EXR sequence."""
    def write(folder: Path, count: int) -> str:
        return write_linear_sequence(folder, srgb_clip(count, 64, 48))
    return write


def render(plate: str, cache: Path, out: Path, *extra: str, node: str = "video-matte") -> int:
    return main(["render", node, "--plate", plate, "--out", str(out / "m.####.exr"),
                 "--cache-dir", str(cache), "--device", "cpu", "--quiet",
                 "--pixel-type", "float", *extra])


def test_when_a_shot_model_is_in_the_cache_then_shot_name_is_its_base_engine_with_its_hash(
        tmp_path, capsys):
    cache = tmp_path / "cache"
    path = save_shot(cache, "shotA", correction())
    spec = engine_spec("shot:shotA", cache_root=cache)
    assert spec.name == "shot:shotA" and spec.node == "video-matte"
    base = engine_spec("rvm")
    assert (spec.temporal, spec.inputs, spec.defaults) == (base.temporal, base.inputs,
                                                           base.defaults)
    assert spec.shot.base_engine == "rvm" and spec.shot.sha256 == file_sha256(path)
    assert main(["models", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "engine shot:shotA  (node video-matte; scribble-correction; base engine rvm)" in out
    assert file_sha256(path) in out


def test_when_the_shot_model_sets_alpha_to_zero_then_the_render_has_no_alpha(tmp_path,
                                                                            portrait):
    cache = tmp_path / "cache"
    save_shot(cache, "zero", correction(bias=-1.0))
    plate = portrait(tmp_path / "plate", 2)
    assert render(plate, cache, tmp_path / "base", "--engine", "rvm") == 0
    assert render(plate, cache, tmp_path / "shot", "--engine", "shot:zero") == 0
    for frame in (1, 2):
        base = read_exr(tmp_path / "base" / f"m.{frame:04d}.exr")
        shot = read_exr(tmp_path / "shot" / f"m.{frame:04d}.exr")
        assert base.alpha.max() > 0.5          # the base engine sees the blob
        assert shot.alpha.max() == 0.0 and np.abs(shot.rgb).max() == 0.0
        assert shot.metadata["mattekit/engine"] == "shot:zero"
        assert shot.metadata["mattekit/modelSha256"] == file_sha256(
            shot_model_path("zero", cache))


def test_when_rendered_with_a_shot_model_then_alpha_is_correct_alpha_of_the_base_render(
        tmp_path, pinned_config, portrait):
    cache = tmp_path / "cache"
    model = correction(seed=1, random_delta=True)
    save_shot(cache, "shotB", model)
    plate = portrait(tmp_path / "plate", 3)
    assert render(plate, cache, tmp_path / "base", "--engine", "rvm") == 0
    assert render(plate, cache, tmp_path / "shot", "--engine", "shot:shotB") == 0
    to_srgb = ocio.Converter(pinned_config, "ACEScg", ocio.ENGINE_SRGB)
    changed = 0.0
    for frame in (1, 2, 3):
        base = read_exr(tmp_path / "base" / f"m.{frame:04d}.exr")
        shot = read_exr(tmp_path / "shot" / f"m.{frame:04d}.exr")
        plate_rgb = read_exr(Path(plate.replace("####", f"{frame:04d}"))).rgb
        srgb = np.clip(to_srgb.apply(np.ascontiguousarray(plate_rgb, np.float32)), 0, 1)
        expected = correct_alpha(model, srgb, None, base.alpha)
        np.testing.assert_allclose(shot.alpha, expected, atol=1e-4)
        changed = max(changed, float(np.abs(shot.alpha - base.alpha).max()))
    assert changed > 0.05  # the correction did something, so the comparison means something


@pytest.mark.parametrize("case, message", [
    ("missing", r"shot-models/gone\.pt: no shot model 'gone' \(the file does not exist\)"),
    ("corrupt", r"shot-models/gone\.pt: not a readable torch checkpoint"),
    ("other node", r"base engine 'cleanplate' belongs to node 'background-matte', not "
                   r"'video-matte'"),
    ("bad name", r"shot model name '\.\./x'"),
])
def test_when_the_shot_model_is_missing_or_unusable_then_one_line_names_the_file(
        tmp_path, capsys, case, message):
    cache = tmp_path / "cache"
    if case == "corrupt":
        shot_model_path("gone", cache).parent.mkdir(parents=True)
        shot_model_path("gone", cache).write_bytes(b"not a checkpoint")
    if case == "other node":
        save_checkpoint(correction(), shot_model_path("gone", cache),
                        extra=shot_extra("video-matte", "cleanplate", False))
    plate = make_plate(tmp_path / "plate", 1, seed=5)
    engine = "shot:../x" if case == "bad name" else "shot:gone"
    assert render(plate, cache, tmp_path / "out", "--engine", engine) == 1
    errors = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith("mattekit: error:")]
    assert len(errors) == 1 and re.search(message, errors[0]), errors
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_when_a_shot_model_is_used_on_another_node_then_the_render_says_whose_it_is(
        tmp_path, capsys):
    cache = tmp_path / "cache"
    save_shot(cache, "vm", correction())
    plate = make_plate(tmp_path / "plate", 1, seed=6)
    assert render(plate, cache, tmp_path / "out", "--engine", "shot:vm",
                  node="sparse-4k-refine") == 1
    assert "engine 'shot:vm' belongs to node 'video-matte', not 'sparse-4k-refine'" in \
        capsys.readouterr().err


def test_when_the_shot_model_is_retrained_then_its_cached_frames_are_recomputed(tmp_path,
                                                                              capsys):
    cache = tmp_path / "cache"
    plate = make_plate(tmp_path / "plate", 2, seed=7)
    save_shot(cache, "shotC", correction(seed=1, random_delta=True))
    assert render(plate, cache, tmp_path / "a", "--engine", "shot:shotC") == 0
    assert render(plate, cache, tmp_path / "a", "--engine", "shot:shotC") == 0
    assert "(0 computed, 2 from cache)" in capsys.readouterr().out
    save_shot(cache, "shotC", correction(seed=2, random_delta=True))  # "retrained"
    assert render(plate, cache, tmp_path / "b", "--engine", "shot:shotC") == 0
    assert "(2 computed, 0 from cache)" in capsys.readouterr().out
    first = read_exr(tmp_path / "a" / "m.0002.exr").alpha
    assert np.abs(read_exr(tmp_path / "b" / "m.0002.exr").alpha - first).max() > 1e-3


@pytest.mark.filterwarnings("ignore:no subject found")
def test_when_trained_with_a_reference_then_rendering_without_one_says_so(tmp_path, capsys):
    cache = tmp_path / "cache"
    save_shot(cache, "withref", correction(), base="parallax", node="parallax-matte",
              with_reference=True)
    spec = engine_spec("shot:withref", cache_root=cache)
    assert spec.node == "parallax-matte" and "reference" in spec.inputs
    from mattekit.inference.engines.registry import create_engine

    engine = create_engine("shot:withref", "cpu", cache_root=cache)
    src = np.full((24, 32, 3), 0.2, np.float32)
    with pytest.raises(EngineError, match="trained with a clean plate or second view"):
        engine.process(src, {})
    result = engine.process(src, {"reference": src.copy()})
    assert result.alpha.shape == (24, 32)


def test_when_the_worker_gets_a_shot_engine_then_it_renders_with_it_and_lists_it(tmp_path,
                                                                                 portrait):
    worker = start_worker_in(tmp_path)
    try:
        save_shot(worker.cache, "zero", correction(bias=-1.0))
        plate = portrait(tmp_path / "plate", 2)
        with worker.client() as client:
            listed = client.request("models")["engines"]
            shot = [e for e in listed if e["name"] == "shot:zero"]
            assert shot and shot[0]["node"] == "video-matte" and shot[0]["installed"]
            assert shot[0]["sha256"] == file_sha256(shot_model_path("zero", worker.cache))
            events = client.process({"node": "video-matte", "plate": plate,
                                     "engine": "shot:zero", "device": "cpu",
                                     "out": str(worker.work / "m.####.exr")})
            assert events[-1]["event"] == "done", events[-1]
            assert events[-1]["engine"] == "shot:zero"
            assert read_exr(worker.work / "m.0002.exr").alpha.max() == 0.0
            missing = client.process({"node": "video-matte", "plate": plate,
                                      "engine": "shot:gone", "device": "cpu"})
            assert missing[-1]["error"]["code"] == "engine_error"
            assert "shot-models/gone.pt" in missing[-1]["error"]["message"]
            # retrained: the warm engine is not reused, the new weights run
            save_shot(worker.cache, "zero", correction(bias=0.0))
            again = client.process({"node": "video-matte", "plate": plate,
                                    "engine": "shot:zero", "device": "cpu", "frames": "1",
                                    "out": str(worker.work / "n.####.exr")})
            assert again[-1]["event"] == "done" and again[-1]["computed"] == [1]
            assert read_exr(worker.work / "n.0001.exr").alpha.max() > 0.5
    finally:
        worker.stop()


@dataclasses.dataclass(frozen=True)
class StudentConfig(ModelConfig):
    pass


class LinearStudent(torch.nn.Module):
    """A student of the distillation's calling convention: ``pha = net(src, ref)``."""

    architecture = "test-student"
    config_class = StudentConfig

    def __init__(self, config=None):
        super().__init__()
        self.config = config or StudentConfig()
        self.mix = torch.nn.Conv2d(6, 1, 1)

    def forward(self, src, ref):
        return torch.sigmoid(self.mix(torch.cat([src, ref], dim=1)))


def test_when_the_shot_model_is_a_student_then_it_runs_alone_on_plate_and_reference(
        tmp_path, monkeypatch):
    from mattekit.inference import models
    from mattekit.inference.engines.registry import create_engine

    monkeypatch.setitem(models.ARCHITECTURES, "test-student", (__name__, "LinearStudent"))
    cache = tmp_path / "cache"
    torch.manual_seed(0)
    student = LinearStudent().eval()
    save_checkpoint(student, shot_model_path("fast", cache),
                    extra={"kind": "student", "node": "background-matte",
                           "with_reference": True})
    spec = engine_spec("shot:fast", cache_root=cache)
    assert (spec.node, spec.temporal, spec.input_space) == ("background-matte", False,
                                                            ocio.ENGINE_SRGB)
    assert spec.required_inputs == ("clean_plate",)  # the node's default engine's inputs
    engine = create_engine("shot:fast", "cpu", cache_root=cache)
    rng = np.random.default_rng(0)
    src, clean = (rng.random((20, 28, 3)).astype(np.float32) for _ in range(2))
    result = engine.process(src, {"clean_plate": clean})
    with torch.no_grad():
        expected = student(torch.from_numpy(src.transpose(2, 0, 1))[None],
                           torch.from_numpy(clean.transpose(2, 0, 1))[None])[0, 0].numpy()
    np.testing.assert_allclose(result.alpha, expected, atol=1e-6)
    np.testing.assert_array_equal(result.foreground, src)
    alone = engine.process(src, {})  # no reference: zeros
    with torch.no_grad():
        zeros = student(torch.from_numpy(src.transpose(2, 0, 1))[None],
                        torch.zeros(1, 3, 20, 28))[0, 0].numpy()
    np.testing.assert_allclose(alone.alpha, zeros, atol=1e-6)
