"""The Nuke side (plugin/ + gizmos/) against a fake ``nuke`` (tests/fake_nuke), without Nuke.

The fake loads the real .gizmo files, refuses knob access off the main thread and nested
``execute`` calls as Nuke does, and renders Write nodes to real EXR files. The end-to-end tests
run the real client and the real worker (started by the client with this interpreter, home and
cache under tmp_path) and read the real EXR results back.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "plugin"
GIZMOS = ROOT / "gizmos"
FAKE = Path(__file__).resolve().parent / "fake_nuke"
for _path in (str(FAKE), str(PLUGIN)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import nuke  # noqa: E402  (the fake)
import nukescripts  # noqa: E402  (the fake)
from mattekit_host import knobs, nodes, panel, precompute  # noqa: E402
from mattekit_host.client import WorkerClient  # noqa: E402
from mattekit_host.errors import MattekitHostError  # noqa: E402

from mattekit.inference.exrio import read_exr, write_exr  # noqa: E402

FOUR = ("BackgroundMatte", "ParallaxMatte", "VideoMatte", "Sparse4KRefine")


@pytest.fixture
def fake(monkeypatch):
    """A fresh fake Nuke session with the gizmos on the plugin path."""
    nuke.reset()
    nukescripts.panels.reset()
    nuke.pluginAddPath(str(GIZMOS), addToSysPath=False)
    yield nuke
    nuke.reset()


@pytest.fixture
def worker_env(tmp_path, monkeypatch):
    """MATTEKIT_HOME / MATTEKIT_CACHE under tmp_path, the worker's Python = this one; stops
    the worker the test started."""
    home, cache = tmp_path / "home", tmp_path / "cache"
    monkeypatch.setenv("MATTEKIT_HOME", str(home))
    monkeypatch.setenv("MATTEKIT_CACHE", str(cache))
    monkeypatch.setenv("MATTEKIT_PYTHON", sys.executable)
    monkeypatch.delenv("MATTEKIT_WORK_ROOTS", raising=False)
    monkeypatch.delenv("OCIO", raising=False)
    yield {"home": home, "cache": cache}
    info = home / "worker.json"
    if info.exists():
        pid = None
        try:
            import json

            pid = json.loads(info.read_text()).get("pid")
            WorkerClient(home=home, spawn=False, start_timeout=5).shutdown()
        except (MattekitHostError, ValueError, OSError):
            if pid:
                try:
                    os.kill(int(pid), signal.SIGKILL if os.name == "posix" else signal.SIGTERM)
                except OSError:
                    pass


def write_plate(folder: Path, count: int = 3, width: int = 64, height: int = 48) -> str:
    """A small scene-linear EXR sequence 1..count with a bright blob; its #### pattern."""
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(count):
        blob = np.exp(-(((xx - width * (0.4 + 0.03 * i)) / (width * 0.18)) ** 2
                        + ((yy - height * 0.5) / (height * 0.3)) ** 2))
        rgb = 0.05 + 0.8 * blob[..., None] * np.array([0.9, 0.6, 0.5], np.float32)
        write_exr(folder / f"plate.{i + 1:04d}.exr", rgb.astype(np.float32), pixel_type="half")
    return str(folder / "plate.####.exr")


def read_node(pattern: str, first: int = 1, last: int = 3):
    read = nuke.createNode("Read")
    read["file"].setValue(pattern)
    for name, value in (("first", first), ("last", last), ("origfirst", first),
                        ("origlast", last)):
        read[name].setValue(value)
    return read


def run_init(gui: bool) -> None:
    nuke.GUI = gui
    for name in ("init.py", "menu.py") if gui else ("init.py",):
        path = PLUGIN / name
        exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"),
             {"__name__": "__main__"})


def wait_background(threads) -> None:
    """Be Nuke's main thread until the Process threads have finished."""
    threads = [t for t in threads if t is not None]
    nuke.pump(lambda: not any(t.is_alive() for t in threads), timeout=300)


# -- start-up ------------------------------------------------------------------------------------

def test_when_nuke_starts_headless_then_init_adds_the_gizmos_and_registers_render_checks(fake):
    nuke.plugin_paths.clear()
    run_init(gui=False)
    assert str(GIZMOS) in nuke.plugin_paths
    assert precompute.before_render in nuke.callbacks_for("beforeRender")
    assert precompute.before_frame_render in nuke.callbacks_for("beforeFrameRender")
    assert "Nodes" not in nuke.menus  # no menus without a GUI


def test_when_the_gui_starts_then_the_mattekit_menu_creates_the_four_nodes(fake):
    run_init(gui=True)
    menu = nuke.menu("Nodes").findItem("mattekit")
    assert isinstance(menu, nuke.Menu)
    names = [item.name() for item in menu.items()]
    assert [n for n in names if n in FOUR] == list(FOUR)
    assert "Process selected" in names and "Worker status" in names
    for name in FOUR:
        node = menu.findItem(name).invoke()
        assert node.Class() == name and nodes.is_mattekit_node(node)
    assert panel.PANEL_ID in nukescripts.panels.registered
    menu.findItem("Worker status").invoke()
    assert nukescripts.panels.shown == [panel.PANEL_ID]


def test_when_start_up_fails_then_nuke_carries_on_and_the_traceback_is_printed(fake, monkeypatch,
                                                                               capsys):
    def broken(*args, **kwargs):
        raise OSError("plugin path exploded")

    monkeypatch.setattr(nuke, "pluginAddPath", broken)
    monkeypatch.setattr(nuke, "menu", broken)
    run_init(gui=True)  # neither init.py nor menu.py raises
    err = capsys.readouterr().err
    assert "mattekit: start-up failed" in err and "plugin path exploded" in err
    assert "mattekit: menu set-up failed" in err


# -- knobs -> job --------------------------------------------------------------------------------

def state(kind="VideoMatte", values=None, connected=("Plate",), plate_read=None, **extra):
    return knobs.NodeState(kind=kind, name=f"{kind}1", full_name=f"{kind}1",
                           script="/shots/a/comp_v001.nk", values=dict(values or {}),
                           connected=tuple(connected), plate_read=plate_read, **extra)


def test_when_knobs_are_mapped_then_params_have_the_engine_types_and_defaults():
    assert knobs.params_from_knobs("VideoMatte", {}) == {
        "downsample_target": 512, "cut_threshold": 0.25, "warmup_frames": -1,
        "focus_view": True, "flicker_strength": 0.5, "flicker_motion": 0.005,
        "memory_threshold": 0.6, "key_tolerance": 0.03}
    # the plain RVM engine gets only the knobs it takes
    assert knobs.params_from_knobs("video-matte", {"downsample_target": 768.0,
                                                   "cut_threshold": "0", "engine": "rvm",
                                                   "flicker_strength": 0.9}) == {
        "downsample_target": 768, "cut_threshold": 0.0, "warmup_frames": -1}
    assert knobs.params_from_knobs("BackgroundMatte", {"register": 0}) == {
        "register": False, "max_shift": 0.25, "shadow_tolerance": 0.6, "prior_strength": 0.5,
        "edge_softness": 1.0, "noise_level": 0.0}
    with pytest.raises(knobs.KnobError, match="downsample_target.*at least 64"):
        knobs.params_from_knobs("VideoMatte", {"downsample_target": 8}, "VideoMatte1")
    with pytest.raises(knobs.KnobError, match="cut_threshold.*float"):
        knobs.params_from_knobs("VideoMatte", {"cut_threshold": "lots"})
    with pytest.raises(knobs.KnobError, match="not a mattekit node"):
        knobs.node_type("Grade")


@pytest.mark.parametrize("text, expected", [
    ("", None), ("default", None), ("default (sRGB)", "sRGB"), (" ACEScg ", "ACEScg"),
    ("default (ACES - ACEScg)", "ACES - ACEScg"),
])
def test_when_a_colour_space_knob_says_default_then_the_worker_picks(text, expected):
    assert knobs.normalise_colorspace(text) == expected


def test_when_frame_range_is_empty_then_the_project_range_is_used():
    assert knobs.parse_frame_range("", (1001, 1100)) == (1001, 1100)
    assert knobs.parse_frame_range("1010-1020", (1, 2)) == (1010, 1020)
    assert knobs.parse_frame_range("1015", (1, 2)) == (1015, 1015)
    with pytest.raises(knobs.KnobError, match="first-last"):
        knobs.parse_frame_range("1-x", (1, 2))
    assert knobs.frames_summary([5, 1, 2, 3, 9, 10]) == "1-3, 5, 9-10"


def test_when_the_plate_is_a_plain_read_then_the_worker_reads_its_files_in_its_colour_space():
    source = knobs.ReadSource("/shots/a/plate.%04d.exr", "ACEScg", raw=False)
    plan = knobs.build_job(state(values={"downsample_target": 640, "engine": "rvm",
                                         "device": "cpu"}, plate_read=source),
                           "/cache", 1001, 1010)
    work = f"/cache/nodes/{knobs.node_id('/shots/a/comp_v001.nk', 'VideoMatte1')}"
    assert plan.job == {"node": "video-matte", "plate": "/shots/a/plate.%04d.exr",
                        "frames": "1001-1010", "out": f"{work}/VideoMatte1.####.exr",
                        "engine": "rvm", "colorspace": "ACEScg", "device": "cpu",
                        "params": {"downsample_target": 640, "cut_threshold": 0.25,
                                   "warmup_frames": -1}}
    assert plan.writes == [] and plan.result_colorspace == "ACEScg"
    assert set(plan.job) <= {"node", "plate", "out", "frames", "engine", "colorspace",
                             "ocio_config", "device", "params", "compression", "pixel_type",
                             "use_cache", "io_threads"}  # RenderJob fields a client may send


def test_when_the_plate_is_not_a_read_then_the_internal_write_renders_it_in_working_space():
    plan = knobs.build_job(state(kind="Sparse4KRefine", connected=("Plate", "Mask"),
                                 working_space="ACES - ACEScg"), "/cache", 1, 3)
    plate = f"{plan.work}/inputs/Plate.####.exr"
    assert sorted(plan.writes) == [("Write_Mask", f"{plan.work}/inputs/Mask.####.exr"),
                                   ("Write_Plate", plate)]
    assert plan.job["plate"] == plate and plan.job["mask"] == plan.writes[0][1]
    assert plan.job["colorspace"] == "ACES - ACEScg" and plan.job["engine"] is None
    assert plan.result_colorspace is None  # the result is read raw, like the input was written
    assert plan.warnings == []  # every input of every node reaches its engine now


def test_when_video_matte_has_a_mask_then_it_goes_to_the_job_on_its_key_frames_only():
    plan = knobs.build_job(state(connected=("Plate", "Mask"), project_range=(1001, 1100)),
                           "/cache", 1050, 1053)
    mask = f"{plan.work}/inputs/Mask.####.exr"
    assert ("Write_Mask", mask) in plan.writes and plan.job["mask"] == mask
    # empty knob: the first frame of the project range; the Mask files are replaced, not added
    assert plan.write_frames["Write_Mask"] == [1001]
    assert plan.replace_writes == ["Write_Mask"]
    # warmup_frames -1: the plate from the start of the shot, so results match one pass
    assert plan.write_frames["Write_Plate"] == list(range(1001, 1054))
    assert plan.job["frames"] == "1050-1053" and plan.warnings == []


def test_when_mask_key_frames_are_listed_then_the_plate_covers_them_and_the_warm_up():
    values = {"mask_frames": "1001, 1060-1061, 1200", "warmup_frames": 4}
    plan = knobs.build_job(state(values=values, connected=("Plate", "Mask"),
                                 project_range=(1001, 1100)), "/cache", 1050, 1062)
    assert plan.write_frames["Write_Mask"] == [1001, 1060, 1061]  # 1200 is after the range
    assert plan.write_frames["Write_Plate"] == [1001] + list(range(1046, 1063))
    assert knobs.frame_runs(plan.write_frames["Write_Plate"]) == [(1001, 1001), (1046, 1062)]
    every = knobs.build_job(state(values={"mask_frames": "all", "warmup_frames": 0},
                                  connected=("Plate", "Mask")), "/cache", 5, 7)
    assert every.write_frames["Write_Mask"] == [5, 6, 7]
    with pytest.raises(knobs.KnobError, match="mask_frames"):
        knobs.build_job(state(values={"mask_frames": "first"}, connected=("Plate", "Mask")),
                        "/cache", 1, 2)


def test_when_the_mask_key_frames_come_after_the_range_then_the_mask_is_left_out_with_a_note():
    plan = knobs.build_job(state(values={"mask_frames": "50"}, connected=("Plate", "Mask"),
                                 project_range=(1, 100)), "/cache", 1, 10)
    assert "mask" not in plan.job and "Write_Mask" not in dict(plan.writes)
    assert any("not locked to a target" in w for w in plan.warnings)


def test_when_the_warm_up_would_start_before_the_plate_then_it_starts_with_the_plate():
    values = {"warmup_frames": 8}
    plan = knobs.build_job(state(values=values, connected=("Plate", "Mask"),
                                 project_range=(1, 100), plate_range=(1001, 1100)),
                           "/cache", 1003, 1004)
    assert plan.write_frames["Write_Plate"][0] == 1001


def test_when_a_cache_folder_or_colour_space_is_set_then_the_job_uses_them():
    plan = knobs.build_job(state(values={"cache_folder": "/jobs/mattes",
                                         "input_colorspace": "sRGB"}), "/cache", 1, 1)
    assert plan.work.startswith("/jobs/mattes/VideoMatte1-")
    assert plan.job["colorspace"] == "sRGB" and plan.job["frames"] == "1-1"
    with pytest.raises(knobs.KnobError, match="absolute"):
        knobs.build_job(state(values={"cache_folder": "relative/x"}), "/cache", 1, 1)
    with pytest.raises(knobs.KnobError, match="Plate input is not connected"):
        knobs.build_job(state(connected=()), "/cache", 1, 1)


def test_when_a_param_changes_then_the_signature_changes_and_status_does_not_matter():
    base = knobs.signature(state())
    assert knobs.signature(state(values={"status": "done"})) == base
    assert knobs.signature(state(values={"cut_threshold": 0.5})) != base
    assert knobs.signature(state(values={"engine": "rvm"})) != base


def test_when_the_node_id_is_made_then_it_is_stable_and_differs_per_script_and_node():
    a = knobs.node_id("/s/comp.nk", "VideoMatte1")
    assert a == knobs.node_id("/s/comp.nk", "VideoMatte1")
    assert a.startswith("VideoMatte1-") and len(a.split("-")[-1]) == 12
    assert a != knobs.node_id("/s/comp_v002.nk", "VideoMatte1")
    assert a != knobs.node_id("/s/comp.nk", "VideoMatte2")


def test_when_a_read_feeds_the_plate_then_snapshot_sees_it_through_dots_only(fake, tmp_path):
    read = read_node(str(tmp_path / "plate.####.exr"))
    read["colorspace"].setValue("default (ACEScg)")
    dot = nuke.createNode("Dot")
    dot.setInput(0, read)
    matte = nuke.createNode("VideoMatte")
    matte.setInput(0, dot)
    got = nodes.snapshot(matte)
    assert got.plate_read == knobs.ReadSource(str(tmp_path / "plate.####.exr"), "ACEScg", False)
    assert got.connected == ("Plate",) and got.values["mattekit_node"] == "video-matte"
    graded = nuke.createNode("Multiply")
    graded.setInput(0, read)
    matte.setInput(0, graded)
    assert nodes.snapshot(matte).plate_read is None
    matte.setInput(0, read)
    read["frame"].setValue("10")  # a frame offset: the worker cannot read it as is
    assert nodes.snapshot(matte).plate_read is None


# -- graph walking and render checks -------------------------------------------------------------

def test_when_writes_are_walked_then_upstream_mattekit_nodes_come_first_through_groups(fake,
                                                                                      tmp_path):
    read = read_node(str(tmp_path / "p.####.exr"))
    first = nuke.createNode("VideoMatte")
    first.setInput(0, read)
    group = nuke.createNode("Group")
    with group:
        inp = nuke.createNode("Input")
        refine = nuke.createNode("Sparse4KRefine")
        refine.setInput(0, inp)
        out = nuke.createNode("Output")
        out.setInput(0, refine)
    group.setInput(0, first)
    write = nuke.createNode("Write")
    write.setInput(0, group)
    found = precompute.upstream_mattekit_nodes([write])
    assert [n.fullName() for n in found] == ["VideoMatte1", "Group1.Sparse4KRefine1"]
    first["disable"].setValue(True)
    assert [n.fullName() for n in precompute.upstream_mattekit_nodes([write])] == \
        ["Group1.Sparse4KRefine1"]


def test_when_a_render_finds_no_results_then_it_fails_naming_the_node(fake, tmp_path):
    matte = nuke.createNode("VideoMatte")
    matte.setInput(0, read_node(str(tmp_path / "p.####.exr")))
    write = nuke.createNode("Write")
    write.setInput(0, matte)
    write["file"].setValue(str(tmp_path / "out.####.exr"))
    run_init(gui=False)
    with pytest.raises(RuntimeError, match="VideoMatte1 has no results yet"):
        nuke.execute(write, 1, 1)


# -- end to end: fake Nuke -> real client -> real worker -> real EXRs ---------------------------

@pytest.mark.slow
def test_when_process_range_runs_in_the_gui_then_results_come_back_without_blocking(
        fake, worker_env, tmp_path):
    run_init(gui=True)
    nuke.root()["first_frame"].setValue(1)
    nuke.root()["last_frame"].setValue(3)
    plate = write_plate(tmp_path / "plate")
    matte = nuke.createNode("VideoMatte")
    plate_read = read_node(plate)
    plate_read["colorspace"].setValue("default (scene_linear)")
    matte.setInput(0, plate_read)
    thread = matte["process_range"].execute() or None  # the button (starts a thread)
    assert thread is None  # a PyScript knob returns nothing; the thread runs on
    running = [t for t in threading.enumerate() if t.name == "mattekit VideoMatte1"]
    assert running, "Process Range must run on a background thread"
    wait_background(running)

    status = matte["status"].value()
    assert status.startswith("done: frames 1-3 (3 computed, 0 from cache) with rvm"), status
    result = matte.node("Result")
    pattern = result["file"].value()
    work = worker_env["cache"] / "nodes" / knobs.node_id("Root", "VideoMatte1")
    assert Path(pattern).resolve() == (work / "VideoMatte1.####.exr").resolve()
    assert (result["first"].value(), result["last"].value()) == (1, 3)
    assert result["raw"].value() is False and result["colorspace"].value() == "scene_linear"
    assert result.reloads == 1
    for frame in (1, 2, 3):
        image = read_exr(knobs.frame_path(pattern, frame))
        plate_image = read_exr(knobs.frame_path(plate, frame))
        assert image.rgb.shape == plate_image.rgb.shape
        assert image.alpha is not None and 0.0 <= image.alpha.min() <= image.alpha.max() <= 1.0
        assert image.metadata.get("mattekit/node") == "video-matte"
    task = nuke.progress_tasks[-1]
    assert task.progress[-1] == 100 and any("frame 3 (3/3)" in m for m in task.messages)

    # a downstream render: the checks pass and the gizmo's output is the premultiplied result
    write = nuke.createNode("Write")
    write.setInput(0, matte)
    write["file"].setValue(str(tmp_path / "comp" / "comp.####.exr"))
    nuke.execute(write, 1, 3)
    rendered = read_exr(tmp_path / "comp" / "comp.0002.exr")
    expected = read_exr(knobs.frame_path(pattern, 2))
    np.testing.assert_allclose(rendered.alpha, expected.alpha, atol=1e-3)
    np.testing.assert_allclose(rendered.rgb, expected.rgb, atol=1e-3)

    # a changed knob makes the results stale: the render refuses them
    matte["cut_threshold"].setValue(0.5)
    with pytest.raises(RuntimeError, match="knobs changed since its frames were computed"):
        nuke.execute(write, 1, 3)

    removed = nodes.clear_cache(matte)
    assert [Path(p).resolve() for p in removed] == [work.resolve()] and not work.exists()
    assert result["file"].value() == "" and matte["status"].value().startswith("cache cleared")


@pytest.mark.slow
def test_when_the_plate_is_graded_then_the_internal_write_renders_it_for_the_worker(
        fake, worker_env, tmp_path):
    nuke.root()["first_frame"].setValue(1)
    nuke.root()["last_frame"].setValue(2)
    plate = write_plate(tmp_path / "plate", count=2)
    grade = nuke.createNode("Multiply")
    grade["value"].setValue(0.5)
    grade.setInput(0, read_node(plate, 1, 2))
    matte = nuke.createNode("VideoMatte")
    matte.setInput(0, grade)
    outcome = nodes.process_now(matte, 1, 2)  # headless: in this thread
    assert outcome.ok, outcome.error
    assert outcome.computed == [1, 2]
    rendered = Path(nodes.inner(matte, "Write_Plate")["file"].value())
    assert rendered.name == "Plate.####.exr" and rendered.parent.name == "inputs"
    written = read_exr(knobs.frame_path(str(rendered), 1)).rgb
    np.testing.assert_allclose(written, read_exr(knobs.frame_path(plate, 1)).rgb * 0.5,
                               atol=1e-3)
    result = matte.node("Result")
    assert result["raw"].value() is True
    assert read_exr(knobs.frame_path(result["file"].value(), 2)).alpha is not None


def test_when_video_matte_has_a_mask_then_the_worker_gets_its_key_frame_and_the_warm_up(
        fake, worker_env, tmp_path):
    nuke.root()["first_frame"].setValue(1)
    nuke.root()["last_frame"].setValue(3)
    plate = write_plate(tmp_path / "plate", count=3)
    roto = np.zeros((48, 64), np.float32)
    roto[6:42, 8:40] = 1.0
    (tmp_path / "roto").mkdir()
    write_exr(tmp_path / "roto" / "roto.0001.exr", np.repeat(roto[..., None], 3, 2), roto)
    matte = nuke.createNode("VideoMatte")
    matte.setInput(0, read_node(plate, 1, 3))
    matte.setInput(1, read_node(str(tmp_path / "roto" / "roto.####.exr"), 1, 1))
    state = nodes.snapshot(matte)
    work = knobs.build_job(state, str(worker_env["cache"]), 2, 3).work
    stale = Path(work) / "inputs" / "Mask.0002.exr"  # a key frame of an earlier Process
    stale.parent.mkdir(parents=True)
    write_exr(stale, np.ones((48, 64, 3), np.float32), np.ones((48, 64), np.float32))
    outcome = nodes.process_now(matte, 2, 3)  # Process frames 2-3 only
    assert outcome.ok, outcome.error
    assert outcome.computed == [2, 3] and outcome.warnings == []
    inputs = Path(work) / "inputs"
    assert sorted(p.name for p in inputs.glob("Mask.*.exr")) == ["Mask.0001.exr"]
    assert sorted(p.name for p in inputs.glob("Plate.*.exr")) == [
        "Plate.0001.exr", "Plate.0002.exr", "Plate.0003.exr"]  # frame 1: the warm-up
    result = read_exr(knobs.frame_path(matte.node("Result")["file"].value(), 3))
    assert result.metadata["mattekit/engine"] == "rvm-guided"
    # the Roto's target is matted (RVM sees nothing in this blob: the engine's own fill), and
    # nothing beyond the Roto (x < 40) moved with the blob (2 px a frame) and the band (2.4 px)
    assert float(result.alpha[10:38, 14:36].min()) > 0.9
    assert float(result.alpha[:, 47:].max()) < 0.05


@pytest.mark.slow
def test_when_background_matte_has_its_clean_plate_then_it_processes_and_without_it_says_so(
        fake, worker_env, tmp_path):
    nuke.GUI = True
    nuke.frame(1)
    plate_read = read_node(write_plate(tmp_path / "plate", count=1), 1, 1)
    matte = nuke.createNode("BackgroundMatte")
    matte.setInput(0, plate_read)
    wait_background([nodes.process_frame(matte)])
    assert "--clean-plate" in matte["status"].value()

    clean_folder = tmp_path / "clean"
    clean_folder.mkdir()
    write_exr(clean_folder / "clean.exr", np.full((48, 64, 3), 0.05, np.float32))
    clean_read = nuke.createNode("Read")
    clean_read["file"].setValue(str(clean_folder / "clean.exr"))
    matte.setInput(1, clean_read)
    wait_background([nodes.process_frame(matte)])
    status = matte["status"].value()
    assert status.startswith("done: frames 1"), status
    pattern = matte.node("Result")["file"].value()
    result = read_exr(knobs.frame_path(pattern, 1))
    assert result.metadata["mattekit/engine"] == "cleanplate" and "confidence.Y" in result.layers
    assert float(result.alpha.max()) > 0.5 and float(result.alpha[0, 0]) < 0.05


@pytest.mark.slow
def test_when_sparse_refine_has_a_coarse_input_then_it_goes_to_the_job_and_keyregion_comes_back(
        fake, worker_env, tmp_path):
    nuke.GUI = True
    nuke.frame(1)
    matte = nuke.createNode("Sparse4KRefine")
    matte.setInput(0, read_node(write_plate(tmp_path / "plate", count=1), 1, 1))
    coarse_folder = tmp_path / "coarse"
    coarse_folder.mkdir()
    coarse = np.zeros((12, 16), np.float32)
    coarse[3:9, 5:11] = 1.0
    coarse[3:9, 5] = coarse[3:9, 10] = 0.5  # a soft edge: the key region
    write_exr(coarse_folder / "coarse.exr", np.repeat(coarse[..., None], 3, 2), coarse)
    coarse_read = nuke.createNode("Read")
    coarse_read["file"].setValue(str(coarse_folder / "coarse.exr"))
    matte.setInput(1, coarse_read)
    matte["band_width"].setValue(4)
    matte["feather"].setValue(2)
    wait_background([nodes.process_frame(matte)])
    status = matte["status"].value()
    assert status.startswith("done: frames 1"), status
    result = read_exr(knobs.frame_path(matte.node("Result")["file"].value(), 1))
    assert result.metadata["mattekit/engine"] == "sparse-refine"
    params = json.loads(result.metadata["mattekit/params"])
    assert params["band_width"] == 4 and params["feather"] == 2
    key = result.layers["keyregion.Y"]
    assert float(key[24, 21]) > 0.8 and float(key[0, 0]) == 0.0  # K on the coarse edge only
    assert float(result.alpha[24, 32]) > 0.9 and float(result.alpha[0, 0]) < 0.05


@pytest.mark.slow
def test_when_the_user_cancels_then_the_status_says_so_and_no_result_is_shown(
        fake, worker_env, tmp_path, monkeypatch):
    nuke.GUI = True

    class CancelledTask(nuke.ProgressTask):
        def isCancelled(self):
            return True

    monkeypatch.setattr(nuke, "ProgressTask", CancelledTask)
    matte = nuke.createNode("VideoMatte")
    matte.setInput(0, read_node(write_plate(tmp_path / "plate", count=2), 1, 2))
    matte["frame_range"].setValue("1-2")
    wait_background([nodes.process_range(matte)])
    assert matte["status"].value().startswith("cancelled: frames 1-2"), \
        matte["status"].value()
    assert matte.node("Result")["file"].value() == ""


def test_when_a_knob_is_unusable_then_the_status_says_which_before_any_work(fake, tmp_path):
    nuke.GUI = True
    matte = nuke.createNode("VideoMatte")
    matte["frame_range"].setValue("soon")
    assert nodes.process_range(matte) is None
    assert "frame_range" in matte["status"].value()
    assert any("VideoMatte1" in line and "frame_range" in line for line in nuke.tprinted)


@pytest.mark.slow
def test_when_a_script_is_rendered_with_nuke_t_then_mattes_are_computed_first(
        fake, worker_env, tmp_path):
    plate = write_plate(tmp_path / "plate", count=3)
    out = tmp_path / "render" / "comp.####.exr"
    script = tmp_path / "comp.nk"
    script.write_text("\n".join([
        "version 15.1 v1",
        "Root {", " inputs 0", " first_frame 1", " last_frame 3", "}",
        "Read {", " inputs 0", f' file "{plate}"', " first 1", " last 3",
        " name Plate1", "}",
        "VideoMatte {", " inputs 1", " name Matte1", "}",
        "Write {", f' file "{out}"', " name Comp", "}", ""]))
    run_init(gui=False)
    import mattekit_precompute

    assert mattekit_precompute.main([str(script), "--frames", "2-3", "--writes", "Comp"]) == 0
    assert [f for f in (1, 2, 3) if Path(knobs.frame_path(str(out), f)).exists()] == [2, 3]
    matte = nuke.toNode("Matte1")
    assert precompute.missing_frames(matte, [2, 3]) == []
    assert precompute.missing_frames(matte, [1, 2]) == [1]
    nuke.tprinted.clear()
    assert precompute.precompute([nuke.toNode("Comp")], 2, 3) == []  # same session: nothing
    assert any("Matte1: frames 2-3 are up to date" in line for line in nuke.tprinted)
    # a fresh session (the next farm task) asks the worker again: its cache answers
    assert mattekit_precompute.main([str(script), "--frames", "2-3", "--no-render"]) == 0
    assert any("Matte1: 0 computed, 2 from cache" in line for line in nuke.tprinted)


def test_when_a_saved_script_loads_then_each_node_shows_its_results_again(fake, tmp_path):
    """A gizmo's internal knob values are not saved with the script: the node's own hidden
    result knobs are, and the onCreate callback puts them back on the internal Read."""
    run_init(gui=False)
    results = str(tmp_path / "nodes" / "VideoMatte1-0123456789ab" / "VideoMatte1.####.exr")
    script = tmp_path / "saved.nk"
    script.write_text("\n".join([
        "Root {", " first_frame 1001", " last_frame 1010", "}",
        "VideoMatte {", " inputs 0", " name VideoMatte1", f' result_file "{results}"',
        " result_first 1001", " result_last 1005", " result_colorspace ACEScg",
        " result_signature 0123456789abcdef", "}", ""]))
    nuke.scriptOpen(str(script))
    read = nuke.toNode("VideoMatte1").node("Result")
    assert read["file"].value() == results
    assert (read["first"].value(), read["last"].value()) == (1001, 1005)
    assert read["raw"].value() is False and read["colorspace"].value() == "ACEScg"
    assert read["premultiplied"].value() is True


def test_when_the_entry_point_gets_a_bad_write_name_then_it_exits_1_with_a_message(
        fake, tmp_path, capsys):
    script = tmp_path / "empty.nk"
    script.write_text("Root {\n first_frame 1\n last_frame 1\n}\n")
    import mattekit_precompute

    assert mattekit_precompute.main([str(script), "--writes", "Nope"]) == 1
    assert "no Write node named 'Nope'" in capsys.readouterr().err


# -- the worker status panel ---------------------------------------------------------------------

STATUS = {"ok": True, "pid": 77, "version": "0.1.0", "uptime": 12.5, "device": "cpu",
          "providers": ["CPUExecutionProvider"], "clients": 2, "models_loaded": ["rvm"],
          "queue": [{"id": "process", "client": "nuke 15.1 pid 1", "node": "video-matte",
                     "state": "running", "done": 1, "total": 3},
                    {"id": "process", "client": "nuke 15.1 pid 2", "node": "video-matte",
                     "state": "queued", "done": 0, "total": None}]}


def test_when_the_worker_answers_then_the_panel_shows_version_device_models_and_queue():
    shown = panel.summary(STATUS)
    assert shown["state"] == "up" and shown["version"] == "0.1.0"
    assert shown["device"] == "cpu (CPUExecutionProvider)" and shown["models"] == "rvm"
    assert panel.queue_rows(STATUS) == [
        ("process", "nuke 15.1 pid 1", "video-matte", "running", "1/3"),
        ("process", "nuke 15.1 pid 2", "video-matte", "queued", "-")]
    down = panel.summary(None, "no mattekit worker is running for /x")
    assert down["state"] == "down" and "no mattekit worker" in down["detail"]


def test_when_no_worker_runs_then_the_panel_says_down_and_starts_none(worker_env):
    status, error = panel.fetch_status()
    assert status is None and "may not start one" in error
    assert not (worker_env["home"] / "worker.json").exists()


def test_when_the_panel_polls_then_the_ui_thread_is_not_blocked(monkeypatch):
    pytest.importorskip("PySide6.QtWidgets")
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    from mattekit_host.qt import QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    release = threading.Event()
    callers = []

    class SlowClient:
        def status(self):
            callers.append(threading.current_thread())
            release.wait(10)
            return STATUS

    widget = panel._widget_class()(None, client=SlowClient(), poll_ms=50)
    app.processEvents()  # returns at once although status() is still waiting
    assert widget.labels["state"].text() == "..."
    release.set()
    deadline = threading.Event()
    for _ in range(200):
        app.processEvents()
        if widget.labels["state"].text() == "up":
            break
        deadline.wait(0.02)
    assert widget.labels["state"].text() == "up" and widget.table.rowCount() == 2
    assert callers and all(t is not threading.main_thread() for t in callers)
    widget.close()


@pytest.mark.slow
def test_when_parallax_matte_processes_then_the_plate_offset_or_the_reference_is_its_second_view(
        fake, worker_env, tmp_path):
    nuke.GUI = True
    nuke.frame(1)
    matte = nuke.createNode("ParallaxMatte")
    matte.setInput(0, read_node(write_plate(tmp_path / "plate", count=3), 1, 3))
    wait_background([nodes.process_frame(matte)])
    status = matte["status"].value()
    assert status.startswith("done: frames 1"), status
    result = read_exr(knobs.frame_path(matte.node("Result")["file"].value(), 1))
    assert result.metadata["mattekit/engine"] == "parallax"
    assert json.loads(result.metadata["mattekit/params"])["reference_offset"] == 2
    assert {"confidence.Y", "trimap.Y"} <= set(result.layers)

    matte["reference_offset"].setValue(5)  # frames 6 and -4 do not exist: said on the node
    wait_background([nodes.process_frame(matte)])
    assert "plate.0006.exr, frame 6" in matte["status"].value()

    matte.setInput(1, read_node(write_plate(tmp_path / "reference", count=1), 1, 1))
    wait_background([nodes.process_frame(matte)])
    status = matte["status"].value()
    assert status.startswith("done: frames 1"), status
