"""The gizmos' Shot model tab against the fake ``nuke``: Train renders the Scribbles (and the
inputs the engine needs) and runs `mattekit train scribbles` in the background, reporting on the
node; Use shot model makes the node's jobs name the engine ``shot:NAME``.

The plans are pure functions (no Nuke); the end-to-end test runs the real worker and the real
training (a few steps on a tiny plate) as Nuke would.
"""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

# first: it puts the fake nuke and plugin/ on sys.path
from test_nuke_plugin import fake, read_node, run_init, state, wait_background, worker_env

# isort: split
import nuke  # the fake
from mattekit_host import knobs, nodes, shot

from mattekit.inference.exrio import read_exr, write_exr

__all__ = ["fake", "worker_env"]  # fixtures used here


# -- knobs -> job --------------------------------------------------------------------------------

def test_when_use_shot_model_is_on_then_the_job_names_the_shot_engine_with_the_engine_params():
    values = {knobs.USE_SHOT: True, "engine": "default", "flicker_strength": 0.7}
    plan = knobs.build_job(state(values=values), "/cache", 1, 3)
    assert plan.job["engine"] == "shot:VideoMatte1"  # empty name knob: the node's name
    # the parameters are the base engine's (rvm-guided): the shot model runs after it
    assert plan.job["params"]["flicker_strength"] == 0.7
    named = knobs.build_job(state(values={**values, knobs.SHOT_MODEL: "hero_v2"}), "/cache", 1, 3)
    assert named.job["engine"] == "shot:hero_v2"
    off = knobs.build_job(state(values={knobs.SHOT_MODEL: "hero_v2"}), "/cache", 1, 3)
    assert off.job["engine"] is None
    assert knobs.signature(state(values=values)) != knobs.signature(state())
    with pytest.raises(knobs.KnobError, match="shot_model"):
        knobs.build_job(state(values={**values, knobs.SHOT_MODEL: "../x"}), "/cache", 1, 3)


def test_when_the_scribbles_input_is_connected_then_a_render_job_leaves_it_out():
    plan = knobs.build_job(state(connected=("Plate", knobs.SCRIBBLES)), "/cache", 1, 3)
    assert all(name != "Write_Scribbles" for name, _ in plan.writes)
    assert plan.warnings == [] and "scribbles" not in json.dumps(plan.job).lower()


def test_when_train_is_planned_then_the_scribbles_and_engine_inputs_are_rendered_for_it():
    values = {knobs.SHOT_FRAMES: "1012, 1001", knobs.SHOT_STEPS: 50, "engine": "rvm",
              knobs.USE_SHOT: True}
    plan = shot.train_plan(state(values=values, connected=("Plate", "Mask", knobs.SCRIBBLES),
                                 project_range=(1001, 1100)), "/cache")
    work = f"/cache/nodes/{knobs.node_id('/shots/a/comp_v001.nk', 'VideoMatte1')}"
    scribbles, mask = f"{work}/inputs/Scribbles.####.exr", f"{work}/inputs/Mask.####.exr"
    assert plan.name == "VideoMatte1" and plan.frames == [1001, 1012]
    assert plan.model_path == "/cache/shot-models/VideoMatte1.pt"
    assert plan.write_frames["Write_Scribbles"] == [1001, 1012]
    assert plan.write_frames["Write_Mask"] == [1001]           # its key frame
    assert plan.write_frames["Write_Plate"] == list(range(1001, 1013))  # RVM runs through
    assert "Write_Scribbles" in plan.replace_writes
    assert plan.args == [
        "train", "scribbles", "--node", "video-matte", "--plate",
        f"{work}/inputs/Plate.####.exr", "--scribbles", scribbles, "--frames", "1001,1012",
        "--name", "VideoMatte1", "--steps", "50", "--cache-dir", "/cache", "--device", "auto",
        "--engine", "rvm",  # the Engine knob's engine is the base, never shot:NAME
        "--mask", mask, "--colorspace", "scene_linear",
        "--param", "cut_threshold=0.25", "--param", "downsample_target=512",
        "--param", "warmup_frames=-1"]


def test_when_a_per_frame_node_is_trained_then_only_the_scribbled_frames_are_rendered():
    values = {knobs.SHOT_FRAMES: "5, 9"}
    background = shot.train_plan(state("BackgroundMatte", values=values,
                                       connected=("Plate", "CleanPlate", knobs.SCRIBBLES)),
                                 "/cache")
    assert background.write_frames["Write_Plate"] == [5, 9]
    assert background.write_frames["Write_CleanPlate"] == [5, 9]
    assert background.args[background.args.index("--clean-plate") + 1].endswith(
        "/inputs/CleanPlate.####.exr")
    parallax = shot.train_plan(state("ParallaxMatte", values=values,
                                     connected=("Plate", knobs.SCRIBBLES),
                                     plate_range=(1, 10)), "/cache")
    # its own second view: the plate reference_offset (2) frames away, the other way at the end
    assert parallax.write_frames["Write_Plate"] == [5, 7, 9]
    assert "--param" in parallax.args and "reference_offset=2" in parallax.args


@pytest.mark.parametrize("values, connected, message", [
    ({knobs.SHOT_FRAMES: "1"}, ("Plate",), "the Scribbles input is not connected"),
    ({}, ("Plate", knobs.SCRIBBLES), "knob 'shot_frames' is empty"),
    ({knobs.SHOT_FRAMES: "1", knobs.SHOT_STEPS: 0}, ("Plate", knobs.SCRIBBLES),
     "knob 'shot_steps' is 0"),
])
def test_when_train_cannot_start_then_the_knob_or_input_is_named(values, connected, message):
    with pytest.raises(knobs.KnobError, match=message):
        shot.train_plan(state(values=values, connected=connected), "/cache")


# -- in the fake Nuke ----------------------------------------------------------------------------

def write_portrait(folder, srgb_clip, write_linear_sequence, count=2) -> str:
    return write_linear_sequence(folder, srgb_clip(count, 64, 48))


def scribbles_read(folder, frames, colour=(0.0, 0.0, 1.0)):
    """A Read of EXR strokes: `colour` across the top-left corner, red through the middle."""
    folder.mkdir(parents=True, exist_ok=True)
    for frame in frames:
        rgb = np.zeros((48, 64, 3), np.float32)
        rgb[2:8, 2] = colour
        rgb[30:36, 32] = (1.0, 0.0, 0.0)
        write_exr(folder / f"s.{frame:04d}.exr", rgb)
    return read_node(str(folder / "s.####.exr"), min(frames), max(frames))


@pytest.mark.slow
def test_when_train_is_pressed_then_the_shot_model_is_trained_in_the_background_and_used(
        fake, worker_env, tmp_path, srgb_clip, write_linear_sequence):
    run_init(gui=True)
    nuke.root()["first_frame"].setValue(1)
    nuke.root()["last_frame"].setValue(2)
    plate = write_portrait(tmp_path / "plate", srgb_clip, write_linear_sequence)
    matte = nuke.createNode("VideoMatte")
    matte.setInput(0, read_node(plate, 1, 2))
    matte.setInput(2, scribbles_read(tmp_path / "strokes", [2]))
    for name, value in (("engine", "rvm"), ("device", "cpu"), (knobs.SHOT_FRAMES, "2"),
                        (knobs.SHOT_STEPS, 2)):
        matte[name].setValue(value)
    matte[knobs.TRAIN_SHOT].execute()  # the button: starts a thread
    running = [t for t in threading.enumerate()
               if t.name == "mattekit VideoMatte1"]
    assert running, "Train must run on a background thread"
    wait_background(running)
    status = matte["status"].value()
    assert status.startswith("shot model VideoMatte1 trained on frames 2"), status
    model = worker_env["cache"] / "shot-models" / "VideoMatte1.pt"
    assert model.is_file() and str(model) in status
    task = nuke.progress_tasks[-1]
    assert any(m.startswith("training VideoMatte1:") for m in task.messages), task.messages
    written = nodes.inner(matte, "Write_Scribbles")["file"].value()
    assert read_exr(knobs.frame_path(written, 2)).rgb[4, 2, 2] == 1.0  # the strokes, as drawn

    matte[knobs.USE_SHOT].setValue(True)
    wait_background([nodes.process_range(matte)])
    status = matte["status"].value()
    assert status.startswith("done: frames 1-2") and "shot:VideoMatte1" in status, status
    result = read_exr(knobs.frame_path(matte.node("Result")["file"].value(), 2))
    assert result.metadata["mattekit/engine"] == "shot:VideoMatte1"

    # a retrain makes the results of a node that uses the model stale
    wait_background([shot.train_shot(matte)])
    assert matte[knobs.SIGNATURE].value() == ""
    assert "Process again" in matte["status"].value()


@pytest.mark.slow
def test_when_training_fails_then_the_node_status_gives_the_cause(
        fake, worker_env, tmp_path, srgb_clip, write_linear_sequence):
    nuke.GUI = False  # headless: in this thread
    plate = write_portrait(tmp_path / "plate", srgb_clip, write_linear_sequence, count=1)
    matte = nuke.createNode("VideoMatte")
    matte.setInput(0, read_node(plate, 1, 1))
    matte.setInput(2, scribbles_read(tmp_path / "strokes", [1], colour=(1.0, 0.0, 1.0)))
    matte["engine"].setValue("rvm")
    matte[knobs.SHOT_FRAMES].setValue("1")
    assert shot.train_shot(matte) is None
    status = matte["status"].value()
    assert status.startswith("training failed (TrainError): "), status
    assert "both red (foreground) and blue (background)" in status and "Scribbles" in status
    assert any("VideoMatte1: training failed" in line for line in nuke.tprinted)
    assert not (worker_env["cache"] / "shot-models").exists()


def test_when_train_is_cancelled_then_the_status_says_so(fake, tmp_path, monkeypatch):
    nuke.GUI = True

    class CancelledTask(nuke.ProgressTask):
        def isCancelled(self):
            return True

    class Worker:  # answers hello only: the cancel comes before anything else
        home = tmp_path

        def hello(self):
            return {"cache_root": str(tmp_path / "cache")}

    monkeypatch.setattr(nuke, "ProgressTask", CancelledTask)
    matte = nuke.createNode("VideoMatte")
    matte.setInput(0, read_node(str(tmp_path / "p.####.exr")))
    matte.setInput(2, read_node(str(tmp_path / "s.####.exr")))
    matte[knobs.SHOT_FRAMES].setValue("1")
    wait_background([shot.train_shot(matte, client=Worker())])  # type: ignore[arg-type]
    assert matte["status"].value().startswith("training cancelled:"), matte["status"].value()


def test_when_train_has_no_scribbles_then_the_status_says_so_before_any_work(fake, tmp_path):
    nuke.GUI = True
    matte = nuke.createNode("BackgroundMatte")
    matte.setInput(0, read_node(str(tmp_path / "p.####.exr")))
    matte[knobs.SHOT_FRAMES].setValue("1")

    class Worker:
        home = tmp_path

        def hello(self):
            return {"cache_root": str(tmp_path / "cache")}

    wait_background([shot.train_shot(matte, client=Worker())])  # type: ignore[arg-type]
    assert "the Scribbles input is not connected" in matte["status"].value()
