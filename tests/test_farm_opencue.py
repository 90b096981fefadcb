"""`mattekit farm opencue`: the job as a pyoutline outline, serialised to OpenCue's XML job spec
by pyoutline's own backend, with no Cuebot anywhere; asserted on the XML."""
from __future__ import annotations

import shlex
import xml.etree.ElementTree as ET

import pytest
from farm_helpers import write_two_node_spec

from mattekit.inference.cli import main
from mattekit.inference.farm.spec import PRECOMPUTE_SCRIPT
from mattekit.inference.sequence import parse_frame_range

pytest.importorskip("outline", reason="the farm extra (install.py installs it)")


def spec(tmp_path, frames: str = "1001-1100") -> str:
    return str(write_two_node_spec(tmp_path, frames))


def xml_of(tmp_path, capsys, *args: str) -> ET.Element:
    assert main(["farm", "opencue", *args, "--show", "demo", "--shot", "sh010",
                 "--user", "td"]) == 0
    text = capsys.readouterr().out
    assert text.startswith('<?xml version="1.0"?><!DOCTYPE spec')
    return ET.fromstring(text[text.index("<spec>"):])


def layers(root: ET.Element) -> dict[str, ET.Element]:
    return {layer.get("name"): layer for layer in root.iter("layer")}


def test_when_a_job_is_serialised_then_the_xml_has_its_layers_ranges_chunks_and_dependencies(
        tmp_path, capsys):
    root = xml_of(tmp_path, capsys, "--spec", spec(tmp_path))
    assert root.findtext("show") == "demo" and root.findtext("shot") == "sh010"
    job = root.find("job")
    assert job.get("name") == "sh010_mattes"
    env = {key.get("name"): key.text for key in job.find("env")}
    assert env == {"OCIO": "/show/ocio/config.ocio", "MATTEKIT_CACHE": "/shared/cache"}

    found = layers(root)
    assert list(found) == ["matte_VideoMatte1", "matte_BackgroundMatte1", "comp"]
    video, background, comp = found.values()
    assert [video.findtext("range"), video.findtext("chunk")] == ["1001-1100", "10"]
    assert [comp.findtext("range"), comp.findtext("chunk")] == ["1001-1100", "25"]
    command = shlex.split(video.findtext("cmd"))
    assert command[:2] == ["mattekit", "render"] and "video-matte" in command
    assert command[command.index("--frames") + 1] == "#FRAME_START#-#FRAME_END#"
    assert command[command.index("--mask") + 1] == "/shots/sh010/roto/r.####.exr"
    assert "downsample_target=384" in command and "--all-or-nothing" in command
    assert [video.findtext("gpus"), video.findtext("gpu_memory")] == ["1", "6g"]
    assert background.find("gpus") is None  # device cpu: no GPU asked for
    # quoting survives a space in a path
    bg_command = shlex.split(background.findtext("cmd"))
    assert bg_command[bg_command.index("--clean-plate") + 1] == "/shots/sh010/clean plate.exr"
    assert shlex.split(comp.findtext("cmd")) == [
        "nuke", "-t", str(PRECOMPUTE_SCRIPT),
        "/shots/sh010/comp.nk", "--frames", "#FRAME_START#-#FRAME_END#", "--writes", "Write1"]

    depends = [(d.get("type"), d.findtext("deplayer"), d.findtext("onlayer"))
               for d in root.find("depends")]
    assert depends == [("LAYER_ON_LAYER", "comp", "matte_VideoMatte1"),
                       ("LAYER_ON_LAYER", "comp", "matte_BackgroundMatte1")]


def test_when_frames_have_a_step_or_are_a_list_then_each_task_gets_exactly_its_frames(
        tmp_path, capsys):
    stepped = layers(xml_of(tmp_path, capsys, "--spec", spec(tmp_path, "1001-1100x2")))
    command = shlex.split(stepped["matte_VideoMatte1"].findtext("cmd"))
    assert command[command.index("--frames") + 1] == "#FRAME_START#-#FRAME_END#x2"
    assert parse_frame_range(stepped["matte_VideoMatte1"].findtext("range")) == list(
        range(1001, 1100, 2))
    # nuke -t renders first-last at step 1: a stepped comp gets one frame per task
    assert stepped["comp"].findtext("chunk") == "1"
    listed = layers(xml_of(tmp_path, capsys, "--spec", spec(tmp_path, "1001-1010,1050")))
    command = shlex.split(listed["matte_VideoMatte1"].findtext("cmd"))
    assert command[command.index("--frames") + 1] == "#IFRAME#"
    assert listed["matte_VideoMatte1"].findtext("chunk") == "1"


def test_when_one_node_is_given_like_render_then_the_xml_is_written_to_a_file(tmp_path, capsys):
    out = tmp_path / "job.xml"
    assert main(["farm", "opencue", "video-matte", "--plate", "/p/p.####.exr", "--out",
                 "/o/m.####.exr", "--frames", "1-12", "--chunk-size", "4", "--gpus", "0",
                 "--xml", str(out)]) == 0
    root = ET.fromstring(out.read_text()[out.read_text().index("<spec>"):])
    (layer,) = root.iter("layer")
    assert layer.get("name") == "matte_VideoMatte"
    assert [layer.findtext("range"), layer.findtext("chunk")] == ["1-12", "4"]
    assert layer.find("gpus") is None
    assert "wrote the OpenCue job spec" in capsys.readouterr().out


def test_when_launch_is_asked_without_a_cuebot_then_it_says_to_set_cuebot_hosts(
        tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CUEBOT_HOSTS", raising=False)
    out = tmp_path / "job.xml"
    assert main(["farm", "opencue", "--spec", spec(tmp_path), "--xml", str(out),
                 "--launch"]) == 1
    assert "CUEBOT_HOSTS is not set" in capsys.readouterr().err
    assert out.is_file()  # the spec is kept for a later launch
