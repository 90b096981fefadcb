"""A FarmJob as an OpenCue job: a pyoutline outline, its XML job spec, and a launch via pycue.

One Shell layer per matte node runs `mattekit render` on chunks of frames (RQD fills in
``#FRAME_START#`` / ``#FRAME_END#``), with the GPU count and memory as layer resources; the
optional comp layer runs ``nuke -t mattekit_precompute.py`` and depends on every matte layer
(layer-on-layer). The OCIO config and the shared cache reach every frame as job environment
variables. The spec is serialised by pyoutline's own OpenCue backend without a Cuebot;
``launch`` sends it to the Cuebot that ``$CUEBOT_HOSTS`` names.

A frame list that is not one run (``1,5,9-12``) cannot be handed to a task as first-last, so
such a layer gets one frame per task (``#IFRAME#``); temporal nodes still warm up correctly.
"""
from __future__ import annotations

import os
import re
import shlex
from typing import Any, Optional

from mattekit.inference.errors import MattekitError
from mattekit.inference.farm.spec import FarmJob, MatteNode, comp_args, render_args
from mattekit.inference.sequence import parse_frame_range

CUEBOT_ENV = "CUEBOT_HOSTS"
COMP_LAYER = "comp"
NUKE_MATTES_LAYER = "nuke_mattes"  # a Nuke layer that only computes mattes (no Write rendered)
_RUN = re.compile(r"^(-?\d+)-(-?\d+)(?:[xX]\+?(\d+))?$")


class OpenCueError(MattekitError):
    """pyoutline / pycue missing, or a Cuebot that refused or could not be reached."""


def _modules() -> tuple[Any, Any, Any, Any]:
    try:
        import outline
        import outline.backend.cue as cue_backend
        import outline.cuerun
        from outline.depend import DependType
        from outline.modules.shell import Shell
    except ImportError as exc:
        raise OpenCueError("opencue-pyoutline is not installed: run `python3 install.py` "
                           "(the farm extra)") from exc
    return outline, cue_backend, Shell, DependType


def layer_name(node: MatteNode) -> str:
    return f"matte_{node.name}"


def _chunking(frames: str, chunk_size: int) -> tuple[str, int]:
    """(frames token of the task's command, chunk size) for a layer over ``frames``."""
    run = _RUN.match(frames)
    if run is None:  # a list: one frame per task
        return "#IFRAME#", 1
    step = run.group(3)
    return "#FRAME_START#-#FRAME_END#" + (f"x{step}" if step and step != "1" else ""), chunk_size


def cue_range(frames: str) -> str:
    """The layer range in OpenCue's FileSequence syntax (mattekit's, less whitespace)."""
    parse_frame_range(frames)
    return frames.replace(" ", "")


def _job_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "mattekit"


def build_outline(job: FarmJob, show: Optional[str] = None, shot: Optional[str] = None,
                  user: Optional[str] = None) -> Any:
    """The job as a pyoutline ``Outline`` (no Cuebot needed to build it)."""
    outline, _, Shell, DependType = _modules()
    ol = outline.Outline(_job_name(job.name), frame_range=cue_range(job.frames), show=show,
                         shot=shot, user=user)
    if job.ocio_config:
        ol.set_env("OCIO", job.ocio_config, pre=True)
    if job.cache_dir:
        ol.set_env("MATTEKIT_CACHE", job.cache_dir, pre=True)
    mattes = []
    for node in job.nodes:
        frames = job.frames_of(node)
        token, chunk = _chunking(frames, job.chunk_size)
        paths = {"plate": node.plate, "out": node.out, **node.inputs}
        command = shlex.join([job.mattekit, *render_args(node, token, paths)])
        resources: dict[str, Any] = {}
        if job.gpus > 0 and node.device != "cpu":
            resources["gpus"] = job.gpus
            if job.gpu_memory_gib > 0:
                resources["gpu_memory"] = f"{job.gpu_memory_gib:g}g"
        layer = Shell(layer_name(node), command=command, range=cue_range(frames), chunk=chunk,
                      **resources)
        ol.add_layer(layer)
        mattes.append(layer)
    if job.comp is not None:
        frames = job.comp.frames or job.frames
        token, chunk = _chunking(frames, job.comp.chunk_size or job.chunk_size)
        if "x" in token:  # nuke -t renders first-last at step 1: one frame per task
            token, chunk = "#IFRAME#-#IFRAME#", 1
        elif token == "#IFRAME#":
            token = "#IFRAME#-#IFRAME#"
        command = shlex.join([job.comp.nuke, *comp_args(job.comp, token, job.comp.script,
                                                        job.comp.precompute)])
        comp = Shell(COMP_LAYER if job.comp.render else NUKE_MATTES_LAYER, command=command,
                     range=cue_range(frames), chunk=chunk)
        for matte in mattes:
            comp.depend_on(matte, DependType.LayerOnLayer)
        ol.add_layer(comp)
    return ol


def serialize(job: FarmJob, show: Optional[str] = None, shot: Optional[str] = None,
              user: Optional[str] = None) -> str:
    """The OpenCue XML job spec, written by pyoutline's OpenCue backend (no Cuebot)."""
    outline, cue_backend, _, _ = _modules()
    ol = build_outline(job, show, shot, user)
    launcher = outline.cuerun.OutlineLauncher(ol, user=user, nomail=True)
    return str(cue_backend.serialize_simple(launcher))


def launch(spec_xml: str) -> list[str]:
    """Submit a serialised job to the Cuebot ``$CUEBOT_HOSTS`` names; the job names."""
    if not os.environ.get(CUEBOT_ENV):
        raise OpenCueError(f"${CUEBOT_ENV} is not set: name the Cuebot to launch on (the job "
                           "spec was written; submit it later with that set)")
    try:
        import opencue
    except ImportError as exc:
        raise OpenCueError("opencue-pycue is not installed: run `python3 install.py` "
                           "(the farm extra)") from exc
    try:
        return [str(name) for name in opencue.api.launchSpec(spec_xml)]
    except Exception as exc:  # noqa: BLE001 - pycue raises grpc and Cue errors alike
        raise OpenCueError(f"the Cuebot at {os.environ[CUEBOT_ENV]} refused the job or did "
                           f"not answer: {exc}".replace("\n", " ")) from exc
