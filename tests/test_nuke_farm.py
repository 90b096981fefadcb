"""Submit to Farm from Nuke (plugin/mattekit_host/farm.py) against the fake ``nuke``.

The host builds the job with the worker environment's real `mattekit farm` CLI (this
interpreter as $MATTEKIT_PYTHON). The last test runs the submitted bundle with the real
`openjd run`: the matte step's `mattekit render` tasks, then the comp step's `nuke -t
mattekit_precompute.py`, where `nuke` is a stand-in executable that runs the fake nuke module
(the precompute pass finds every matte in the shared cache, then the Write renders).
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "plugin"
GIZMOS = ROOT / "gizmos"
FAKE = Path(__file__).resolve().parent / "fake_nuke"
for _path in (str(FAKE), str(PLUGIN)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import nuke  # noqa: E402  (the fake)
import nukescripts  # noqa: E402  (the fake)
import test_nuke_plugin  # noqa: E402
from mattekit_host import farm, knobs, nodes  # noqa: E402
from test_nuke_plugin import read_node, run_init, write_plate  # noqa: E402

worker_env = test_nuke_plugin.worker_env  # the fixture: home and cache under tmp_path

pytest.importorskip("openjd.model", reason="the farm extra (install.py installs it)")
BIN = Path(sys.executable).parent


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """A fresh fake Nuke session, the farm settings under tmp_path, no farm client on PATH."""
    nuke.reset()
    nukescripts.panels.reset()
    nuke.pluginAddPath(str(GIZMOS), addToSysPath=False)
    tools = tmp_path / "tools"
    tools.mkdir()
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("MATTEKIT_PYTHON", sys.executable)
    monkeypatch.setenv("MATTEKIT_FARM_FOLDER", str(tmp_path / "farm"))
    for name in ("MATTEKIT_FARM", "MATTEKIT_FARM_CHUNK", "MATTEKIT_FARM_CACHE",
                 "MATTEKIT_FARM_GPUS", "CUEBOT_HOSTS", "OCIO"):
        monkeypatch.delenv(name, raising=False)
    yield tools
    nuke.reset()


def saved_script(tmp_path: Path, text: str = "") -> Path:
    script = tmp_path / "sh010_comp.nk"
    script.write_text("Root {\n first_frame 1\n last_frame 4\n}\n" + text)
    nuke.scriptOpen(str(script))
    return script


def job_folder(tmp_path: Path) -> Path:
    (folder,) = [p for p in (tmp_path / "farm").iterdir() if p.name.startswith("sh010_comp_")]
    return folder


def test_when_submit_to_farm_is_pressed_then_the_bundle_renders_the_node_as_its_knobs_say(
        fake, tmp_path):
    run_init(gui=False)
    saved_script(tmp_path)
    plate = write_plate(tmp_path / "plate", count=4)
    matte = nuke.createNode("VideoMatte")
    matte.setInput(0, read_node(plate, 1, 4))
    matte["downsample_target"].setValue(96)
    matte["frame_range"].setValue("2-4")

    matte["submit_farm"].execute()  # the button, as the gizmo defines it
    folder = job_folder(tmp_path)
    template = yaml.safe_load((folder / "bundle" / "template.yaml").read_text())
    (step,) = template["steps"]
    assert step["name"] == "MatteVideoMatte1"
    assert step["parameterSpace"]["taskParameterDefinitions"][0]["range"] == "2-4"
    args = step["script"]["actions"]["onRun"]["args"]
    values = {v["name"]: v["value"] for v in yaml.safe_load(
        (folder / "bundle" / "parameter_values.yaml").read_text())["parameterValues"]}
    assert values["VideoMatte1Plate"] == plate
    # the farm task sends exactly the params the node's own Process sends the worker
    plan = knobs.build_job(nodes.snapshot(matte), str(tmp_path / "cache"), 2, 4)
    farm_params = {a.split("=", 1)[0]: yaml.safe_load(a.split("=", 1)[1])
                   for a in args[args.index("--param"):] if "=" in a}
    assert farm_params == plan.job["params"] and farm_params["downsample_target"] == 96
    colorspace = args[args.index("--colorspace") + 1] if "--colorspace" in args else None
    assert colorspace == plan.job["colorspace"]
    assert matte["status"].value().startswith("farm job written (openjd")
    assert str(folder) in matte["status"].value()


def test_when_the_gui_submits_the_selection_to_opencue_then_nuke_computes_what_needs_it(
        fake, tmp_path, monkeypatch):
    monkeypatch.setenv("MATTEKIT_FARM", "opencue")
    monkeypatch.setenv("MATTEKIT_FARM_CHUNK", "2")
    monkeypatch.setenv("MATTEKIT_FARM_GPUS", "0")  # a CPU farm
    run_init(gui=True)
    saved_script(tmp_path)
    plate = write_plate(tmp_path / "plate", count=4)
    read = read_node(plate, 1, 4)
    video = nuke.createNode("VideoMatte")
    video.setInput(0, read)
    background = nuke.createNode("BackgroundMatte")
    background.setInput(0, read)
    background.setInput(1, read_node(plate, 1, 4))  # the clean plate: rendered by Nuke
    write = nuke.createNode("Write")
    write.setInput(0, video)
    for node in (video, background, write):
        node.setSelected(True)

    thread = nuke.menu("Nodes").findItem("mattekit/Submit selected to farm").invoke()
    # the GUI does not wait for the job to be built: a background thread, the status says so
    assert video["status"].value() == "submitting to the farm (opencue)..."
    nuke.pump(lambda: not thread.is_alive(), timeout=120)
    xml = (job_folder(tmp_path) / "job.xml").read_text()
    root = ET.fromstring(xml[xml.index("<spec>"):])
    layers = {layer.get("name"): layer for layer in root.iter("layer")}
    assert list(layers) == ["matte_VideoMatte1", "comp"]
    assert [layers["comp"].findtext("range"), layers["comp"].findtext("chunk")] == ["1-4", "2"]
    comp = shlex.split(layers["comp"].findtext("cmd"))
    assert comp[comp.index("--writes") + 1] == "Write1"
    assert comp[comp.index("--nodes") + 1] == "BackgroundMatte1"
    assert "--no-render" not in comp
    assert layers["matte_VideoMatte1"].find("gpus") is None
    assert [d.findtext("onlayer") for d in root.find("depends")] == ["matte_VideoMatte1"]
    note = "BackgroundMatte1: computed inside Nuke on the farm (its CleanPlate input"
    assert any(note in message for message in nuke.messages)
    for node in (video, background):
        assert node["status"].value().startswith("farm job written (opencue")


def test_when_the_deadline_cli_is_on_path_then_the_bundle_is_submitted_with_it(fake, tmp_path):
    calls = tmp_path / "deadline-calls.json"
    deadline = fake / "deadline"
    deadline.write_text(f"#!{sys.executable}\nimport json, sys\n"
                        f"open({str(calls)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
                        "print('Submitted job bundle')\n")
    deadline.chmod(0o755)
    run_init(gui=False)
    saved_script(tmp_path)
    matte = nuke.createNode("VideoMatte")
    matte.setInput(0, read_node(write_plate(tmp_path / "plate", count=2), 1, 2))

    submission = farm.submit_node(matte)
    assert submission is not None and submission.submitted
    assert json.loads(calls.read_text()) == ["bundle", "submit", "--yes",
                                             str(job_folder(tmp_path) / "bundle")]
    assert matte["status"].value().startswith("submitted to the farm (openjd)")


def test_when_the_script_is_unsaved_or_the_node_unusable_then_the_status_says_why(
        fake, tmp_path):
    run_init(gui=False)
    matte = nuke.createNode("VideoMatte")
    assert farm.submit_node(matte) is None
    assert "save the script first" in matte["status"].value()
    saved_script(tmp_path)
    matte = nuke.createNode("VideoMatte")
    matte.setInput(0, read_node(write_plate(tmp_path / "plate", count=2), 1, 2))
    matte["downsample_target"].setValue(8)  # below the engine's minimum of 64
    assert farm.submit_node(matte) is None
    assert "downsample_target" in matte["status"].value()
    assert not (tmp_path / "farm").exists()


NUKE_STAND_IN = """#!{python}
# `nuke -t FILE ARGS`: Nuke's Python with mattekit registered, here the fake nuke module
import runpy, sys
sys.path[:0] = [{fake!r}, {plugin!r}]
import nuke
nuke.pluginAddPath({gizmos!r}, addToSysPath=False)
init = {init!r}
exec(compile(open(init).read(), init, "exec"), {{"__name__": "__main__"}})
if sys.argv[1] != "-t":
    sys.exit("this stand-in only runs nuke -t")
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_when_the_submitted_bundle_runs_then_the_comp_finds_the_farm_mattes_in_the_cache(
        fake, worker_env, tmp_path, monkeypatch):
    (fake / "nuke").write_text(NUKE_STAND_IN.format(
        python=sys.executable, fake=str(FAKE), plugin=str(PLUGIN), gizmos=str(GIZMOS),
        init=str(PLUGIN / "init.py")))
    (fake / "nuke").chmod(0o755)
    monkeypatch.setenv("MATTEKIT_FARM_CACHE", str(worker_env["cache"]))  # shared with the worker
    plate = write_plate(tmp_path / "plate", count=4)
    out = tmp_path / "render" / "comp.####.exr"
    run_init(gui=False)
    saved_script(tmp_path, "\n".join([
        "Read {", " inputs 0", f' file "{plate}"', " first 1", " last 4", " name Plate1", "}",
        "set N1 [stack 0]",
        "VideoMatte {", " inputs 1", " name Matte1", " downsample_target 96", "}",
        "Write {", f' file "{out}"', " name Comp", "}",
        "push $N1",  # a graded plate: only Nuke can render Matte2's input
        "Multiply {", " inputs 1", " value 1.2", " name Grade1", "}",
        "VideoMatte {", " inputs 1", " name Matte2", " downsample_target 96", "}", ""]))
    for name in ("Matte1", "Matte2", "Comp"):
        nuke.toNode(name).setSelected(True)
    submission = farm.submit_selected()
    assert submission is not None

    bundle = Path(submission.folder) / "bundle"
    values = yaml.safe_load((bundle / "parameter_values.yaml").read_text())["parameterValues"]
    params = {v["name"]: v["value"] for v in values}
    params.update(Mattekit=str(BIN / "mattekit"), ChunkSize=2, CompChunkSize=4)
    done = subprocess.run([str(BIN / "openjd"), "run", str(bundle / "template.yaml"),
                           "-p", json.dumps(params)], capture_output=True, text=True,
                          timeout=600, check=False)
    log = done.stdout
    assert done.returncode == 0, log[-4000:] + done.stderr
    assert log.count("(2 computed, 0 from cache)") == 2  # the matte step: 2 chunks of 2
    # the comp task's precompute asks the worker for the frames: all from the farm's cache
    assert log.count("Matte1: 0 computed, 4 from cache") == 1, log[-4000:]
    # and computes the node only Nuke can feed (`--nodes Matte2`)
    assert log.count("Matte2: 4 computed, 0 from cache") == 1, log[-4000:]
    assert len(list(Path(worker_env["cache"]).glob("nodes/Matte2-*/Matte2.*.exr"))) == 4
    assert sorted(p.name for p in out.parent.iterdir()) == [f"comp.{f:04d}.exr"
                                                            for f in range(1, 5)]
    mattes = Path(params["Matte1Output"]).parent
    assert len(list(mattes.glob("Matte1.*.exr"))) == 4
