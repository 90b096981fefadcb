"""Issue #3's end-to-end promises, against the fake ``nuke`` and the real worker:

- ``install.py --nuke`` then a simulated Nuke start registers the four nodes, and
  ``--uninstall`` leaves ``~/.nuke/init.py`` exactly as it was;
- a script that creates the nodes by name, sets knobs by name and renders headless gives the
  same alpha, byte for byte, as ``mattekit render`` with the same parameters.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import OpenEXR
import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "plugin"
FAKE = Path(__file__).resolve().parent / "fake_nuke"
for _path in (str(FAKE), str(PLUGIN)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import nuke  # noqa: E402  (the fake)
import nukescripts  # noqa: E402  (the fake)
from mattekit_host import precompute  # noqa: E402
from mattekit_host.client import WorkerClient  # noqa: E402

from mattekit.inference.cli import main as mattekit_main  # noqa: E402
from mattekit.inference.exrio import write_exr  # noqa: E402

FOUR = ("BackgroundMatte", "ParallaxMatte", "VideoMatte", "Sparse4KRefine")


@pytest.fixture
def fresh_nuke():
    nuke.reset()
    nukescripts.panels.reset()
    nuke.plugin_paths.clear()
    yield nuke
    nuke.reset()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A user home with its own ~/.nuke; MATTEKIT_* variables restored afterwards."""
    user = tmp_path / "user"
    user.mkdir()
    monkeypatch.setenv("HOME", str(user))
    monkeypatch.setenv("USERPROFILE", str(user))
    monkeypatch.delenv("MATTEKIT_PYTHON", raising=False)
    return user


@pytest.fixture
def installer():
    spec = importlib.util.spec_from_file_location("mattekit_install_e2e", ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_file(path: Path) -> None:
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), {"__name__": "__main__"})


def simulate_nuke_start(user_init: Path, gui: bool) -> None:
    """What Nuke does at start-up: ~/.nuke/init.py, then init.py of every plugin-path folder,
    then (GUI only) menu.py of every plugin-path folder."""
    nuke.GUI = gui
    run_file(user_init)
    done = set()
    for name in ("init.py", "menu.py") if gui else ("init.py",):
        for folder in list(nuke.pluginPath()):
            script = Path(folder) / name
            if script.is_file() and (folder, name) not in done:
                done.add((folder, name))
                run_file(script)


def test_when_installed_for_nuke_then_a_gui_start_registers_the_four_nodes_and_uninstall_restores(
        fresh_nuke, home, installer):
    user_init = home / ".nuke" / "init.py"
    user_init.parent.mkdir()
    original = "import nuke\n# studio settings\nnuke.pluginAddPath('/studio/nuke-tools')\n"
    user_init.write_text(original)

    installer.register_with_nuke(Path(sys.executable))
    simulate_nuke_start(user_init, gui=True)

    menu = nuke.menu("Nodes").findItem("mattekit")
    assert menu is not None, "the mattekit toolbar menu is missing"
    assert [name for name in (i.name() for i in menu.items()) if name in FOUR] == list(FOUR)
    for name in FOUR:
        node = nuke.createNode(name)  # as a TD's script would
        assert node.Class() == name
    assert precompute.before_render in nuke.callbacks_for("beforeRender")

    installer.unregister_from_nuke()
    assert user_init.read_text() == original


def test_when_uninstalling_a_fresh_install_then_init_py_is_left_empty_as_it_was(
        fresh_nuke, home, installer):
    installer.register_with_nuke(Path(sys.executable))
    user_init = home / ".nuke" / "init.py"
    simulate_nuke_start(user_init, gui=False)
    assert str(PLUGIN) in nuke.pluginPath()
    installer.unregister_from_nuke()
    assert user_init.read_text() == ""


@pytest.fixture
def worker_env(tmp_path, monkeypatch):
    home = tmp_path / "mk-home"
    monkeypatch.setenv("MATTEKIT_HOME", str(home))
    monkeypatch.setenv("MATTEKIT_CACHE", str(tmp_path / "worker-cache"))
    monkeypatch.setenv("MATTEKIT_PYTHON", sys.executable)
    monkeypatch.delenv("OCIO", raising=False)
    yield home
    if (home / "worker.json").exists():
        WorkerClient(home=home, spawn=False, start_timeout=5).shutdown()


def alpha_bytes(path: str) -> bytes:
    """The stored bytes of the A channel, exactly as written."""
    with OpenEXR.File(path, separate_channels=True) as exr:
        return exr.channels()["A"].pixels.tobytes()


def test_when_a_script_builds_and_renders_nodes_headless_then_alpha_matches_the_cli_byte_for_byte(
        fresh_nuke, worker_env, tmp_path, srgb_clip):
    from mattekit import ocio

    to_linear = ocio.Converter(ocio.load_config(), ocio.ENGINE_SRGB, "ACEScg")
    (tmp_path / "plate").mkdir()
    for i, frame in enumerate(srgb_clip(4, 160, 120)):
        write_exr(tmp_path / "plate" / f"plate.{1001 + i:04d}.exr", to_linear.apply(frame))
    plate = str(tmp_path / "plate" / "plate.####.exr")

    run_file(PLUGIN / "init.py")
    nuke.root()["first_frame"].setValue(1001)
    nuke.root()["last_frame"].setValue(1004)
    read = nuke.createNode("Read")
    read["file"].setValue(plate)
    for name, value in (("first", 1001), ("last", 1004), ("origfirst", 1001),
                        ("origlast", 1004)):
        read[name].setValue(value)
    mattes = {}
    for name in FOUR:
        node = nuke.createNode(name)
        node.setInput(0, read)
        mattes[name] = node
    video = mattes["VideoMatte"]
    video["downsample_target"].setValue(96)
    video["cut_threshold"].setValue(0.4)
    write = nuke.createNode("Write")
    write.setInput(0, video)
    write["file"].setValue(str(tmp_path / "comp" / "comp.####.exr"))

    outcomes = precompute.precompute([write], 1001, 1004)
    assert [o.ok for o in outcomes] == [True]
    nuke.execute(write, 1001, 1004)
    pattern = precompute.result_pattern(video)

    assert mattekit_main(["render", "video-matte", "--plate", plate, "--frames", "1001-1004",
                          "--out", str(tmp_path / "cli" / "matte.####.exr"),
                          "--param", "downsample_target=96", "--param", "cut_threshold=0.4",
                          "--cache-dir", str(tmp_path / "cli-cache"), "--quiet"]) == 0
    for frame in range(1001, 1005):
        from_nuke = pattern.replace("####", f"{frame:04d}")
        from_cli = str(tmp_path / "cli" / f"matte.{frame:04d}.exr")
        assert alpha_bytes(from_nuke) == alpha_bytes(from_cli), f"frame {frame} differs"
    # and the parameters really reached the engine: the default settings give another matte
    assert mattekit_main(["render", "video-matte", "--plate", plate, "--frames", "1001-1004",
                          "--out", str(tmp_path / "cli-default" / "matte.####.exr"),
                          "--cache-dir", str(tmp_path / "cli-cache"), "--quiet"]) == 0
    default = str(tmp_path / "cli-default" / "matte.1004.exr")
    assert alpha_bytes(default) != alpha_bytes(pattern.replace("####", "1004"))

    # a BackgroundMatte with no clean plate connected says what it needs, on the node
    needs = nuke.createNode("Write")
    needs.setInput(0, mattes["BackgroundMatte"])
    needs["file"].setValue(str(tmp_path / "bm" / "o.####.exr"))
    with pytest.raises(precompute.PrecomputeError, match="clean-plate"):
        precompute.precompute([needs], 1001, 1001)
    assert "clean-plate" in mattes["BackgroundMatte"]["status"].value()
