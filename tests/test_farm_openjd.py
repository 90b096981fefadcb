"""`mattekit farm openjd`: a job bundle that `openjd check` accepts and `openjd run` executes.

Real components end to end: the bundle is written by the CLI, validated by openjd-model, and
run by openjd-cli's local session, whose tasks are real `mattekit render` processes on a tiny
12-frame plate (64x36, so the whole file takes seconds).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from farm_helpers import write_two_node_spec

from mattekit import ocio
from mattekit.inference.cli import main
from mattekit.inference.exrio import read_exr, write_exr
from mattekit.inference.farm import openjd

pytest.importorskip("openjd.model", reason="the farm extra (install.py installs it)")

BIN = Path(sys.executable).parent
FRAMES, W, H = 12, 64, 36


def openjd_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([str(BIN / "openjd"), *args], capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ, **(env or {})})


def run_bundle(bundle: Path, *extra: str, env: dict | None = None
               ) -> subprocess.CompletedProcess:
    """`openjd run` of a bundle with its parameter_values.yaml (openjd takes a mapping)."""
    values = yaml.safe_load((bundle / openjd.VALUES_FILE).read_text())["parameterValues"]
    params = json.dumps({v["name"]: v["value"] for v in values})
    return openjd_cli("run", str(bundle / openjd.TEMPLATE_FILE), "-p", params, *extra, env=env)


def task_reports(log: str) -> list[tuple[int, int]]:
    """(computed, cached) of every `mattekit render` task in an openjd run's log."""
    return [(int(a), int(b)) for a, b in
            re.findall(r"video-matte: \d+ frames \((\d+) computed, (\d+) from cache\)", log)]


@pytest.fixture(scope="module")
def plate(tmp_path_factory, srgb_clip) -> str:
    folder = tmp_path_factory.mktemp("farm") / "plate"
    folder.mkdir()
    to_linear = ocio.Converter(ocio.load_config(ocio.PINNED_CONFIG_URI), ocio.ENGINE_SRGB,
                               "ACEScg")
    for i, frame in enumerate(srgb_clip(FRAMES, W, H)):
        write_exr(folder / f"plate.{i + 1:04d}.exr", to_linear.apply(frame), pixel_type="float")
    return str(folder / "plate.####.exr")


@pytest.fixture(scope="module")
def sequential(plate, tmp_path_factory) -> list[np.ndarray]:
    """The shot rendered in one sequential pass, without the cache: the reference."""
    out = tmp_path_factory.mktemp("sequential")
    assert main(["render", "video-matte", "--plate", plate, "--frames", f"1-{FRAMES}",
                 "--out", str(out / "m.####.exr"), "--no-cache", "--quiet"]) == 0
    return [read_exr(out / f"m.{f:04d}.exr").alpha for f in range(1, FRAMES + 1)]


def bundle_for(root: Path, plate: str, *extra: str) -> Path:
    bundle = root / "bundle"
    assert main(["farm", "openjd", "video-matte", "--plate", plate, "--out",
                 str(root / "out" / "matte.####.exr"), "--frames", f"1-{FRAMES}",
                 "--chunk-size", "4", "--mattekit", str(BIN / "mattekit"),
                 "--bundle", str(bundle), *extra]) == 0
    return bundle


def alphas(folder: Path) -> list[np.ndarray]:
    return [read_exr(folder / f"matte.{f:04d}.exr").alpha for f in range(1, FRAMES + 1)]


# -- the template --------------------------------------------------------------------------------

@pytest.fixture
def two_node_spec(tmp_path) -> Path:
    return write_two_node_spec(tmp_path, ocio_config=str(tmp_path / "ocio" / "config.ocio"))


def test_when_a_two_node_job_with_a_comp_is_written_then_openjd_check_passes_and_says_it_all(
        tmp_path, two_node_spec):
    from openjd.model import (
        StepParameterSpaceIterator,
        create_job,
        decode_job_template,
        preprocess_job_parameters,
    )

    bundle = tmp_path / "bundle"
    assert main(["farm", "openjd", "--spec", str(two_node_spec), "--bundle", str(bundle)]) == 0
    assert sorted(p.name for p in bundle.iterdir()) == sorted(
        [openjd.TEMPLATE_FILE, openjd.VALUES_FILE, openjd.ASSETS_FILE])
    check = openjd_cli("check", str(bundle / openjd.TEMPLATE_FILE))
    assert check.returncode == 0, check.stdout + check.stderr

    data = yaml.safe_load((bundle / openjd.TEMPLATE_FILE).read_text())
    steps = {s["name"]: s for s in data["steps"]}
    assert list(steps) == ["MatteVideoMatte1", "MatteBackgroundMatte1", openjd.COMP_STEP]
    video, background, comp = steps.values()
    frame = video["parameterSpace"]["taskParameterDefinitions"][0]
    assert frame["type"] == "CHUNK[INT]" and frame["range"] == "{{Param.Frames}}"
    assert frame["chunks"]["defaultTaskCount"] == "{{Param.ChunkSize}}"
    assert frame["chunks"]["targetRuntimeSeconds"] == "{{Param.TargetRuntime}}"
    # a temporal node needs first-last chunks; a per-frame node can take any frames
    assert frame["chunks"]["rangeConstraint"] == "CONTIGUOUS"
    assert background["parameterSpace"]["taskParameterDefinitions"][0]["chunks"][
        "rangeConstraint"] == "NONCONTIGUOUS"
    run = video["script"]["actions"]["onRun"]
    assert run["command"] == "{{Param.Mattekit}}"
    args = run["args"]
    assert args[:2] == ["render", "video-matte"]
    for flag, value in (("--plate", "{{Param.VideoMatte1Plate}}"),
                        ("--mask", "{{Param.VideoMatte1Mask}}"),
                        ("--frames", "{{Task.Param.Frame}}"),
                        ("--out", "{{Param.VideoMatte1Output}}")):
        assert args[args.index(flag) + 1] == value
    assert "downsample_target=384" in args and "focus_view=false" in args
    assert "--all-or-nothing" in args
    assert video["hostRequirements"] == {"amounts": [
        {"name": "amount.worker.gpu", "min": 1},
        {"name": "amount.worker.gpu.memory", "min": 6 * 1024}]}
    assert "hostRequirements" not in background  # device cpu: any host
    assert comp["dependencies"] == [{"dependsOn": "MatteVideoMatte1"},
                                    {"dependsOn": "MatteBackgroundMatte1"}]
    comp_run = comp["script"]["actions"]["onRun"]
    assert comp_run["command"] == "{{Param.Nuke}}"
    assert comp_run["args"] == ["-t", "{{Param.PrecomputeScript}}", "{{Param.NukeScript}}",
                                "--frames", "{{Task.Param.Frame}}", "--writes", "Write1"]
    assert data["jobEnvironments"][0]["variables"] == {
        "OCIO": "{{Param.OcioConfig}}", "MATTEKIT_CACHE": "{{Param.CacheDir}}"}

    values = {v["name"]: v["value"] for v in yaml.safe_load(
        (bundle / openjd.VALUES_FILE).read_text())["parameterValues"]}
    assert values["VideoMatte1Plate"] == "/shots/sh010/p.####.exr"
    assert values["BackgroundMatte1CleanPlate"] == "/shots/sh010/clean plate.exr"
    assert values["NukeScript"] == "/shots/sh010/comp.nk"
    assets = yaml.safe_load((bundle / openjd.ASSETS_FILE).read_text())["assetReferences"]
    assert "/shots/sh010/roto" in assets["inputs"]["directories"]
    assert str(tmp_path / "ocio") in assets["inputs"]["directories"]
    assert assets["outputs"]["directories"] == ["/shots/sh010/bm", "/shots/sh010/vm"]

    # the parameter values instantiate the job: 100 frames in chunks of 10 (comp: of 25)
    template = decode_job_template(template=data, supported_extensions=openjd.EXTENSIONS)
    job = create_job(job_template=template, job_parameter_values=preprocess_job_parameters(
        job_template=template, job_parameter_values=values, job_template_dir=bundle,
        current_working_dir=tmp_path))
    chunks = [[task for task in StepParameterSpaceIterator(space=s.parameterSpace)]
              for s in job.steps]
    assert [len(c) for c in chunks] == [10, 10, 4]
    assert chunks[0][0]["Frame"].value == "1001-1010"


def test_when_the_frames_have_a_step_then_the_template_uses_openjd_range_syntax():
    assert openjd.openjd_range("1001-1100x2") == "1001-1100:2"
    assert openjd.openjd_range("1, 5, 9-12") == "1,5,9-12"


def test_when_a_parallax_node_has_a_reference_then_the_task_passes_it_as_a_path_parameter(
        tmp_path):
    bundle = tmp_path / "bundle"
    assert main(["farm", "openjd", "parallax-matte", "--plate", "/p/plate.####.exr",
                 "--reference", "/r/second.####.exr", "--out", "/o/matte.####.exr",
                 "--frames", "1-8", "--bundle", str(bundle)]) == 0
    template = yaml.safe_load((bundle / openjd.TEMPLATE_FILE).read_text())
    openjd.check_template(template)  # what `openjd check` runs
    (step,) = template["steps"]
    reference = "ParallaxMatteReference"  # the node (default name ParallaxMatte) + input
    assert reference in {p["name"] for p in template["parameterDefinitions"]}
    command = json.dumps(step)
    assert f'"--reference", "{{{{Param.{reference}}}}}"' in command
    values = yaml.safe_load((bundle / openjd.VALUES_FILE).read_text())["parameterValues"]
    assert {"name": reference, "value": "/r/second.####.exr"} in values
    assets = yaml.safe_load((bundle / openjd.ASSETS_FILE).read_text())["assetReferences"]
    assert "/r" in assets["inputs"]["directories"]


@pytest.mark.parametrize("change, message", [
    ({"node": "no-such-node"}, "no-such-node"),
    ({"node": "background-matte"}, "needs 'clean_plate'"),
    ({"out": "/o/matte.exr"}, "no frame token"),
    ({"name": "Video Matte"}, "a name is a letter"),
])
def test_when_a_node_of_the_spec_is_wrong_then_the_cli_says_which_and_why(
        tmp_path, capsys, change, message):
    node = {"name": "VideoMatte1", "node": "video-matte", "plate": "/p/p.####.exr",
            "out": "/o/m.####.exr", **change}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "job", "frames": "1-10", "nodes": [node]}))
    assert main(["farm", "openjd", "--spec", str(spec), "--bundle", str(tmp_path / "b")]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("mattekit: error:"), errors
    assert message in errors[0] and "spec.yaml" in errors[0]
    assert not (tmp_path / "b").exists()


# -- openjd run ----------------------------------------------------------------------------------

def test_when_openjd_runs_12_frames_in_3_chunks_then_a_rerun_comes_from_the_cache(
        tmp_path, plate, sequential):
    bundle = bundle_for(tmp_path, plate, "--cache-dir", str(tmp_path / "cache"))
    first = run_bundle(bundle)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr
    assert task_reports(first.stdout) == [(4, 0), (4, 0), (4, 0)]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [f"matte.{f:04d}.exr"
                                                     for f in range(1, FRAMES + 1)]
    assert len(list((tmp_path / "cache" / "entries").glob("*/*/matte.exr"))) == FRAMES
    # chunks on a shared cache resume the engine from the cached state: the sequential frames
    for a, b in zip(sequential, alphas(out)):
        np.testing.assert_array_equal(a, b)

    inodes = [(out / f"matte.{f:04d}.exr").stat().st_ino for f in range(1, FRAMES + 1)]
    again = run_bundle(bundle)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr
    assert task_reports(again.stdout) == [(0, 4), (0, 4), (0, 4)]  # every task a cache hit
    assert [(out / f"matte.{f:04d}.exr").stat().st_ino for f in range(1, FRAMES + 1)] == inodes


def test_when_each_chunk_runs_on_its_own_host_then_warm_up_gives_the_sequential_frames(
        tmp_path, plate, sequential):
    bundle = bundle_for(tmp_path, plate)
    for first in (5, 9):  # mid-shot chunks, no shared cache: each task warms up by itself
        chunk = run_bundle(bundle, "--task-param", f"Frame={first}-{first + 3}",
                           env={"MATTEKIT_CACHE": str(tmp_path / f"host{first}")})
        assert chunk.returncode == 0, chunk.stdout[-3000:] + chunk.stderr
        assert task_reports(chunk.stdout) == [(4, 0)]
    chunked = [read_exr(tmp_path / "out" / f"matte.{f:04d}.exr").alpha for f in range(5, 13)]
    for a, b in zip(sequential[4:], chunked):
        np.testing.assert_array_equal(a, b)  # exact with the default warm-up (the whole shot)


def test_when_a_plate_frame_is_corrupt_then_its_task_fails_naming_it_and_leaves_no_output(
        tmp_path, plate):
    source = Path(plate).parent
    bad = tmp_path / "bad"
    bad.mkdir()
    for path in source.iterdir():
        (bad / path.name).write_bytes(path.read_bytes())
    good_frame = (bad / "plate.0006.exr").read_bytes()
    (bad / "plate.0006.exr").write_bytes(good_frame[:300])
    bundle = bundle_for(tmp_path, str(bad / "plate.####.exr"),
                        "--cache-dir", str(tmp_path / "cache"))
    failed = run_bundle(bundle)
    assert failed.returncode != 0
    errors = [line for line in failed.stdout.splitlines() if "mattekit: error:" in line]
    assert len(errors) == 1 and "plate.0006.exr, frame 6:" in errors[0], failed.stdout[-3000:]
    out = tmp_path / "out"
    # the failed chunk 5-8 left nothing (not even frame 5, finished before 6 failed), chunk
    # 9-12 never ran, and no temporary file is anywhere
    assert sorted(p.name for p in out.iterdir()) == [f"matte.{f:04d}.exr" for f in range(1, 5)]
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and (
        p.name.startswith(".") or "tmp" in p.name)]

    (bad / "plate.0006.exr").write_bytes(good_frame)  # fixed: the retry resumes from the cache
    retry = run_bundle(bundle, "--task-param", "Frame=5-8")
    assert retry.returncode == 0, retry.stdout[-3000:] + retry.stderr
    assert task_reports(retry.stdout) == [(3, 1)]  # frame 5 was finished before 6 failed
    assert len(list(out.iterdir())) == 8


GOLDEN = Path(__file__).resolve().parent / "golden" / "openjd_two_nodes"


def test_when_the_two_node_bundle_is_written_then_it_matches_the_reviewed_golden_files(tmp_path):
    """Any change to the generated job shows up here as a diff to review (regenerate with
    MATTEKIT_UPDATE_GOLDEN=1 after reviewing it)."""
    import os

    bundle = tmp_path / "bundle"
    assert main(["farm", "openjd", "--spec", str(write_two_node_spec(tmp_path)),
                 "--bundle", str(bundle)]) == 0
    for name in (openjd.TEMPLATE_FILE, openjd.ASSETS_FILE):
        if os.environ.get("MATTEKIT_UPDATE_GOLDEN"):
            (GOLDEN / name).write_text((bundle / name).read_text())
        assert (bundle / name).read_text() == (GOLDEN / name).read_text(), name
