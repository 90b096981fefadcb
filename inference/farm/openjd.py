"""A FarmJob as an Open Job Description job bundle (what AWS Deadline Cloud submits).

The bundle is a folder of three files:

- ``template.yaml``: a ``jobtemplate-2023-09`` job template with the ``TASK_CHUNKING``
  extension: one step per matte node whose tasks are ``CHUNK[INT]`` frame ranges running
  `mattekit render` (chunk size and target runtime are job parameters), GPU host requirements
  as OpenJD ``amount.worker.gpu`` / ``amount.worker.gpu.memory``, the OCIO config and the
  shared cache passed to every task through a job environment, and optionally a Nuke comp step
  that depends on every matte step;
- ``parameter_values.yaml``: the values of the job's parameters for this submission;
- ``asset_references.yaml``: the input and output folders (Deadline Cloud job attachments).

File paths are PATH job parameters, so a farm's path-mapping rules apply to them.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any, Optional

import yaml

from mattekit.inference.errors import MattekitError
from mattekit.inference.farm.spec import (
    CompStep,
    FarmJob,
    MatteNode,
    comp_args,
    node_engine,
    render_args,
)
from mattekit.inference.sequence import parse_pattern

SPECIFICATION = "jobtemplate-2023-09"
EXTENSIONS = ["TASK_CHUNKING"]
TEMPLATE_FILE = "template.yaml"
VALUES_FILE = "parameter_values.yaml"
ASSETS_FILE = "asset_references.yaml"
FRAME_PARAM = "Frame"
COMP_STEP = "Comp"
NUKE_MATTES_STEP = "NukeMattes"  # a Nuke step that only computes mattes (no Write rendered)
GPU_AMOUNT = "amount.worker.gpu"
GPU_MEMORY_AMOUNT = "amount.worker.gpu.memory"   # MiB
#: Job parameters of one node's files: (name suffix, MatteNode field).
NODE_PATHS = (("Plate", "plate"), ("CleanPlate", "clean_plate"), ("Mask", "mask"),
              ("Reference", "reference"),
              ("Output", "out"))
PATH_DESCRIPTIONS = {"plate": "plate sequence",
                     "clean_plate": "clean plate (a still or a sequence)",
                     "mask": "rough mask (video-matte: its key frames)",
                     "reference": "second view (parallax-matte: a still or a sequence)",
                     "out": "output sequence"}


class OpenJDError(MattekitError):
    """A job template that Open Job Description refuses (a bug here if it ever happens)."""


def openjd_range(frames: str) -> str:
    """mattekit's frame range as an OpenJD range expression: ``1001-1100x2`` -> ``1001-1100:2``
    (single frames, runs and comma lists are spelt the same)."""
    return re.sub(r"[xX]\s*\+?(\d+)", r":\1", frames.replace(" ", ""))


def step_name(node: MatteNode) -> str:
    return f"Matte{node.name}"


def _param(name: str) -> str:
    return "{{Param." + name + "}}"


def _node_params(node: MatteNode) -> dict[str, str]:
    """Job parameter name per file of the node ("plate" -> "VideoMatte1Plate")."""
    return {key: f"{node.name}{suffix}" for suffix, key in NODE_PATHS
            if key in ("plate", "out") or key in node.inputs}


def _chunked_frames(range_param: str, chunk_param: str, contiguous: bool) -> dict[str, Any]:
    return {"taskParameterDefinitions": [{
        "name": FRAME_PARAM, "type": "CHUNK[INT]", "range": range_param,
        "chunks": {"defaultTaskCount": _param(chunk_param),
                   "targetRuntimeSeconds": _param("TargetRuntime"),
                   "rangeConstraint": "CONTIGUOUS" if contiguous else "NONCONTIGUOUS"}}]}


def _host_requirements(job: FarmJob, node: MatteNode) -> Optional[dict[str, Any]]:
    """GPU hosts for a node that may use one (device auto or cuda) when the job asks for GPUs."""
    if job.gpus <= 0 or node.device == "cpu":
        return None
    amounts: list[dict[str, Any]] = [{"name": GPU_AMOUNT, "min": job.gpus}]
    if job.gpu_memory_gib > 0:
        amounts.append({"name": GPU_MEMORY_AMOUNT, "min": int(round(job.gpu_memory_gib * 1024))})
    return {"amounts": amounts}


def _frames_param(own: Optional[str]) -> str:
    """A step's range: the job's Frames parameter, or the step's own literal range."""
    return openjd_range(own) if own else _param("Frames")


def _matte_step(job: FarmJob, node: MatteNode) -> dict[str, Any]:
    paths = {key: _param(name) for key, name in _node_params(node).items()}
    task_frames = "{{Task.Param." + FRAME_PARAM + "}}"
    step: dict[str, Any] = {
        "name": step_name(node),
        "description": f"mattekit {node.node} '{node.name}': `mattekit render` per chunk",
        "parameterSpace": _chunked_frames(_frames_param(node.frames), "ChunkSize",
                                          contiguous=node_engine(node).temporal),
    }
    requirements = _host_requirements(job, node)
    if requirements:
        step["hostRequirements"] = requirements
    step["script"] = {"actions": {"onRun": {
        "command": _param("Mattekit"),
        "args": render_args(node, task_frames, paths)}}}
    return step


def _comp_step(job: FarmJob, comp: CompStep) -> dict[str, Any]:
    task_frames = "{{Task.Param." + FRAME_PARAM + "}}"
    step: dict[str, Any] = {
        "name": COMP_STEP if comp.render else NUKE_MATTES_STEP,
        "description": "Nuke: `nuke -t mattekit_precompute.py` (mattes from the cache, "
                       "then the Writes)" if comp.render else
                       "Nuke: `nuke -t mattekit_precompute.py` computes the mattes of "
                       + ", ".join(comp.nodes),
        "parameterSpace": _chunked_frames(_frames_param(comp.frames), "CompChunkSize",
                                          contiguous=True),
        "script": {"actions": {"onRun": {
            "command": _param("Nuke"),
            "args": comp_args(comp, task_frames, _param("NukeScript"),
                              _param("PrecomputeScript"))}}},
    }
    if job.nodes:
        step["dependencies"] = [{"dependsOn": step_name(n)} for n in job.nodes]
    return step


def _is_uri(text: str) -> bool:
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text) is not None


def _path_param(name: str, description: str, object_type: Optional[str] = None,
                data_flow: Optional[str] = None) -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "type": "PATH", "description": description}
    if object_type:
        param["objectType"] = object_type
    if data_flow:
        param["dataFlow"] = data_flow
    return param


def _parameter_definitions(job: FarmJob) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": "Frames", "type": "STRING", "default": openjd_range(job.frames),
         "description": "Frames to render (1001-1100, 1001-1100:2, 1,5,9-12)"},
        {"name": "ChunkSize", "type": "INT", "default": job.chunk_size, "minValue": 1,
         "description": "Frames per matte task (temporal nodes warm up from the frames "
                        "before each chunk, so any size gives the same frames)"},
        {"name": "TargetRuntime", "type": "INT", "default": job.target_runtime, "minValue": 0,
         "description": "Seconds per task the farm aims for by resizing chunks; 0 = the "
                        "chunk size as given"},
        {"name": "Mattekit", "type": "STRING", "default": job.mattekit,
         "description": "The mattekit command on the farm hosts"},
    ]
    if job.ocio_config:
        params.append(
            {"name": "OcioConfig", "type": "STRING",
             "description": "OCIO config URI (set as $OCIO in every task)"}
            if _is_uri(job.ocio_config) else
            _path_param("OcioConfig", "OCIO config (set as $OCIO in every task)", "FILE", "IN"))
    if job.cache_dir:
        params.append(_path_param("CacheDir", "mattekit cache shared by the tasks (set as "
                                              "$MATTEKIT_CACHE): re-runs and warm-ups hit it",
                                  "DIRECTORY"))
    for node in job.nodes:
        for key, name in _node_params(node).items():
            params.append(_path_param(name, f"{node.name}: {PATH_DESCRIPTIONS[key]}"))
    if job.comp is not None:
        params += [
            _path_param("NukeScript", "The Nuke script the comp step renders", "FILE", "IN"),
            _path_param("PrecomputeScript", "mattekit_precompute.py of the mattekit plugin "
                                            "(on the farm hosts)", "FILE"),
            {"name": "Nuke", "type": "STRING", "default": job.comp.nuke,
             "description": "The Nuke executable on the farm hosts"},
            {"name": "CompChunkSize", "type": "INT", "default": job.comp.chunk_size
             or job.chunk_size, "minValue": 1, "description": "Frames per comp task"},
        ]
    return params


def job_template(job: FarmJob) -> dict[str, Any]:
    """The job template (a plain dict, written as YAML)."""
    template: dict[str, Any] = {
        "specificationVersion": SPECIFICATION,
        "extensions": list(EXTENSIONS),
        "name": job.name,
        "description": "mattekit mattes" + (" and Nuke comp" if job.comp else ""),
        "parameterDefinitions": _parameter_definitions(job),
    }
    variables = {}
    if job.ocio_config:
        variables["OCIO"] = _param("OcioConfig")
    if job.cache_dir:
        variables["MATTEKIT_CACHE"] = _param("CacheDir")
    if variables:
        template["jobEnvironments"] = [{"name": "mattekit",
                                        "description": "colour and cache for every task",
                                        "variables": variables}]
    steps = [_matte_step(job, node) for node in job.nodes]
    if job.comp is not None:
        steps.append(_comp_step(job, job.comp))
    template["steps"] = steps
    return template


def parameter_values(job: FarmJob) -> dict[str, Any]:
    """The values of the parameters without a default (paths), as Deadline Cloud reads them."""
    values: list[dict[str, Any]] = []
    if job.ocio_config:
        values.append({"name": "OcioConfig", "value": job.ocio_config})
    if job.cache_dir:
        values.append({"name": "CacheDir", "value": job.cache_dir})
    for node in job.nodes:
        for key, name in _node_params(node).items():
            values.append({"name": name, "value": str(getattr(node, key))})
    if job.comp is not None:
        values += [{"name": "NukeScript", "value": job.comp.script},
                   {"name": "PrecomputeScript", "value": job.comp.precompute}]
    return {"parameterValues": values}


def _folder(pattern: str) -> str:
    return str(parse_pattern(pattern).folder)


def asset_references(job: FarmJob) -> dict[str, Any]:
    """Input and output folders of the job (Deadline Cloud job attachments)."""
    inputs: set[str] = set()
    files: set[str] = set()
    outputs: set[str] = set()
    for node in job.nodes:
        inputs.add(_folder(node.plate))
        inputs.update(_folder(p) for p in node.inputs.values())
        outputs.add(_folder(node.out))
    if job.ocio_config and not _is_uri(job.ocio_config):
        inputs.add(str(Path(job.ocio_config).parent))  # its LUT folders travel with it
    if job.comp is not None:
        files.add(job.comp.script)
    return {"assetReferences": {
        "inputs": {"directories": sorted(inputs), "filenames": sorted(files)},
        "outputs": {"directories": sorted(outputs)},
    }}


def check_template(template: dict[str, Any]) -> None:
    """Validate with openjd-model (what `openjd check` runs); OpenJDError says what is wrong."""
    try:
        from openjd.model import DecodeValidationError, decode_job_template
    except ImportError as exc:
        raise OpenJDError("openjd-model is not installed: run `python3 install.py` (the farm "
                          "extra)") from exc
    try:
        decode_job_template(template=template, supported_extensions=EXTENSIONS)
    except DecodeValidationError as exc:
        raise OpenJDError(f"the generated job template is not valid: {exc}") from exc


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (temp file then rename): a bundle file is whole or absent."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            yaml.safe_dump(data, stream, sort_keys=False, width=100)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bundle(job: FarmJob, folder: Path) -> Path:
    """Write the job bundle into ``folder`` (created if needed) after validating it."""
    template = job_template(job)
    check_template(template)
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_yaml(folder / TEMPLATE_FILE, template)
        _write_yaml(folder / VALUES_FILE, parameter_values(job))
        _write_yaml(folder / ASSETS_FILE, asset_references(job))
    except OSError as exc:
        raise MattekitError(f"{folder}: cannot write the job bundle "
                            f"({exc.strerror or exc})") from exc
    return folder
