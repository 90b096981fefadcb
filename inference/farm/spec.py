"""A farm job: which matte nodes render which frames in chunks, and an optional Nuke comp step.

One ``FarmJob`` is what both job formats are built from (``openjd.py``, ``opencue.py``). It
is read from a spec file (YAML or JSON, what ``mattekit farm --spec`` takes and what the Nuke
plugin writes) and checked here, at submit time, so a mistake is reported on the TD's machine
instead of by the first farm task::

    name: sh010_mattes
    frames: 1001-1100            # mattekit range syntax: 1001-1100, 1001-1100x2, 1,5,9-12
    chunk_size: 10               # frames per task (OpenJD: the default; the farm may adapt)
    target_runtime: 0            # seconds per task the farm aims for; 0 = fixed chunk size
    ocio_config: /show/ocio/config.ocio   # passed to every task as $OCIO
    cache_dir: /shared/mattekit-cache     # passed as $MATTEKIT_CACHE (shared: re-runs hit it)
    gpus: 1                      # GPU host requirement of the matte steps (0: none)
    gpu_memory_gib: 4
    nodes:
      - name: VideoMatte1
        node: video-matte
        plate: /shots/sh010/plate.####.exr
        out: /shots/sh010/matte/VideoMatte1.####.exr
        mask: /shots/sh010/roto.####.exr
        params: {downsample_target: 512}
    comp:                        # optional: `nuke -t mattekit_precompute.py` after the mattes
      script: /shots/sh010/comp.nk
      writes: [Write1]
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from mattekit.inference.engines.registry import (
    EngineSpec,
    default_engine,
    engine_spec,
    load_manifest,
)
from mattekit.inference.errors import MattekitError
from mattekit.inference.render import output_paths
from mattekit.inference.sequence import parse_frame_range

#: The headless entry point the comp step runs inside Nuke (plugin/mattekit_precompute.py).
PRECOMPUTE_SCRIPT = Path(__file__).resolve().parents[2] / "plugin" / "mattekit_precompute.py"
DEVICES = ("auto", "cpu", "cuda")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")


class FarmSpecError(MattekitError):
    """A farm job spec that cannot become a job; the message names the field and the fix."""


@dataclass(frozen=True)
class MatteNode:
    """One matte node rendered by `mattekit render` tasks (one step / layer per node)."""

    name: str                          # step / layer name, e.g. "VideoMatte1"
    node: str                          # the CLI's node name, e.g. "video-matte"
    plate: str
    out: str
    frames: Optional[str] = None       # None: the job's frames
    clean_plate: Optional[str] = None
    mask: Optional[str] = None
    reference: Optional[str] = None    # parallax-matte's second view (else reference_offset)
    engine: Optional[str] = None
    colorspace: Optional[str] = None
    device: str = "auto"
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def inputs(self) -> dict[str, str]:
        """The node's extra inputs by CLI name (clean_plate, mask, reference), the ones given
        only."""
        given = {"clean_plate": self.clean_plate, "mask": self.mask, "reference": self.reference}
        return {name: value for name, value in given.items() if value}


@dataclass(frozen=True)
class CompStep:
    """The Nuke step after every matte step: ``nuke -t mattekit_precompute.py`` computes the
    mattekit nodes upstream of the Writes (and ``nodes``: those whose inputs only Nuke can
    render), then renders the Writes unless ``render`` is off."""

    script: str
    writes: tuple[str, ...] = ()       # empty: every enabled Write (none when only `nodes`)
    nodes: tuple[str, ...] = ()        # mattekit nodes computed inside Nuke
    render: bool = True
    frames: Optional[str] = None       # None: the job's frames
    chunk_size: Optional[int] = None   # None: the job's chunk size
    nuke: str = "nuke"
    precompute: str = str(PRECOMPUTE_SCRIPT)


@dataclass(frozen=True)
class FarmJob:
    name: str
    frames: str
    nodes: tuple[MatteNode, ...]
    chunk_size: int = 10
    target_runtime: int = 0
    ocio_config: Optional[str] = None
    cache_dir: Optional[str] = None
    gpus: int = 1
    gpu_memory_gib: float = 0.0
    mattekit: str = "mattekit"         # the command the farm hosts run
    comp: Optional[CompStep] = None

    def frames_of(self, node: MatteNode) -> str:
        return node.frames or self.frames


def node_engine(node: MatteNode) -> EngineSpec:
    """The engine a node renders with (its own, else its node's default)."""
    manifest = load_manifest()
    return engine_spec(node.engine, manifest) if node.engine else default_engine(node.node,
                                                                                 manifest)


def param_arg(name: str, value: Any) -> str:
    """``name=value`` as `mattekit render --param` reads it back (YAML; JSON is YAML)."""
    return f"{name}={json.dumps(value)}"


def render_args(node: MatteNode, frames: str, paths: Mapping[str, str]) -> list[str]:
    """The arguments of `mattekit render` for one task of ``node``: ``paths`` gives the plate,
    out and extra inputs as they appear in the job (literal, or a job template's parameter)."""
    args = ["render", node.node, "--plate", paths["plate"], "--frames", frames,
            "--out", paths["out"]]
    for name in node.inputs:
        args += ["--" + name.replace("_", "-"), paths[name]]
    if node.engine:
        args += ["--engine", node.engine]
    if node.colorspace:
        args += ["--colorspace", node.colorspace]
    args += ["--device", node.device]
    for name, value in sorted(node.params.items()):
        args += ["--param", param_arg(name, value)]
    return args + ["--all-or-nothing", "--quiet"]


def comp_args(comp: CompStep, frames: str, script: str, precompute: str) -> list[str]:
    """The arguments of ``nuke`` for one comp task: compute the mattes (cache hits after the
    matte steps), then render the Writes."""
    args = ["-t", precompute, script, "--frames", frames]
    if comp.writes:
        args += ["--writes", ",".join(comp.writes)]
    if comp.nodes:
        args += ["--nodes", ",".join(comp.nodes)]
    return args + ([] if comp.render else ["--no-render"])


# -- reading and checking a spec -----------------------------------------------------------------

def _text(data: Mapping[str, Any], key: str, where: str, required: bool = True
          ) -> Optional[str]:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise FarmSpecError(f"{where}: '{key}' is missing")
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise FarmSpecError(f"{where}: '{key}' must be text, not {value!r}")
    return str(value)


def _whole(data: Mapping[str, Any], key: str, default: int, minimum: int, where: str) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value \
            or value < minimum:
        raise FarmSpecError(f"{where}: '{key}' is {value!r}; it must be a whole number "
                            f">= {minimum}")
    return int(value)


def _frames(text: str, where: str) -> str:
    try:
        parse_frame_range(text)
    except MattekitError as exc:
        raise FarmSpecError(f"{where}: {exc}") from None
    return text.replace(" ", "")


def _matte_node(data: Any, index: int, job_frames: str) -> MatteNode:
    where = f"nodes[{index}]"
    if not isinstance(data, Mapping):
        raise FarmSpecError(f"{where} must be a mapping of name, node, plate, out, ...")
    name = _text(data, "name", where) or ""
    where = f"node '{name}'"
    if not _NAME.match(name):
        raise FarmSpecError(f"{where}: a name is a letter then letters, digits or _ "
                            "(at most 48), e.g. VideoMatte1")
    params = data.get("params") or {}
    if not isinstance(params, Mapping):
        raise FarmSpecError(f"{where}: 'params' must be a mapping of name: value")
    device = _text(data, "device", where, required=False) or "auto"
    if device not in DEVICES:
        raise FarmSpecError(f"{where}: 'device' is {device!r}; choose one of "
                            f"{', '.join(DEVICES)}")
    frames = _text(data, "frames", where, required=False)
    node = MatteNode(
        name=name, node=_text(data, "node", where) or "", plate=_text(data, "plate", where) or "",
        out=_text(data, "out", where) or "",
        frames=_frames(frames, where) if frames else None,
        clean_plate=_text(data, "clean_plate", where, required=False),
        mask=_text(data, "mask", where, required=False),
        reference=_text(data, "reference", where, required=False),
        engine=_text(data, "engine", where, required=False),
        colorspace=_text(data, "colorspace", where, required=False),
        device=device, params=dict(params))
    _check_engine(node, where)
    try:
        output_paths(node.out, parse_frame_range(node.frames or job_frames))
    except MattekitError as exc:
        raise FarmSpecError(f"{where}: {exc}") from None
    return node


def _check_engine(node: MatteNode, where: str) -> None:
    """The node exists, its engine belongs to it and takes exactly the inputs given."""
    try:
        engine = node_engine(node)
    except MattekitError as exc:
        raise FarmSpecError(f"{where}: {exc}") from None
    if engine.node != node.node:
        raise FarmSpecError(f"{where}: engine '{engine.name}' belongs to node "
                            f"'{engine.node}', not '{node.node}'")
    for name in engine.required_inputs:
        if name not in node.inputs:
            raise FarmSpecError(f"{where}: {node.node} needs '{name}' (its engine "
                                f"'{engine.name}' mattes against it)")
    for name in node.inputs:
        if name not in engine.inputs:
            raise FarmSpecError(f"{where}: '{name}' is not an input of {node.node} "
                                f"(engine '{engine.name}')")


def _names(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    """A list of node names, or one comma-separated string of them."""
    value = data.get(key) or []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise FarmSpecError(f"comp: '{key}' must be a list of node names")
    return tuple(v.strip() for v in value if v.strip())


def _comp(data: Any, chunk_size: int) -> CompStep:
    if not isinstance(data, Mapping):
        raise FarmSpecError("comp must be a mapping with at least 'script'")
    names = {key: _names(data, key) for key in ("writes", "nodes")}
    render = data.get("render", True)
    if not isinstance(render, bool):
        raise FarmSpecError(f"comp: 'render' is {render!r}; true or false")
    if not render and not names["nodes"]:
        raise FarmSpecError("comp: with 'render: false' name the mattekit 'nodes' to compute")
    frames = _text(data, "frames", "comp", required=False)
    return CompStep(script=_text(data, "script", "comp") or "",
                    writes=names["writes"], nodes=names["nodes"], render=render,
                    frames=_frames(frames, "comp") if frames else None,
                    chunk_size=_whole(data, "chunk_size", chunk_size, 1, "comp"),
                    nuke=_text(data, "nuke", "comp", required=False) or "nuke",
                    precompute=_text(data, "precompute", "comp", required=False)
                    or str(PRECOMPUTE_SCRIPT))


def job_from_dict(data: Any) -> FarmJob:
    """A checked FarmJob from a spec's mapping; FarmSpecError names the field otherwise."""
    if not isinstance(data, Mapping):
        raise FarmSpecError("a farm spec is a mapping with name, frames and nodes")
    name = _text(data, "name", "spec") or ""
    frames = _frames(_text(data, "frames", "spec") or "", "spec")
    nodes_data = data.get("nodes") or []
    if not isinstance(nodes_data, Sequence) or isinstance(nodes_data, str):
        raise FarmSpecError("spec: 'nodes' must be a list of matte nodes")
    nodes = tuple(_matte_node(n, i, frames) for i, n in enumerate(nodes_data))
    names = [n.name for n in nodes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise FarmSpecError(f"spec: node names must be unique; repeated: {', '.join(duplicates)}")
    chunk_size = _whole(data, "chunk_size", 10, 1, "spec")
    comp = _comp(data["comp"], chunk_size) if data.get("comp") else None
    if not nodes and comp is None:
        raise FarmSpecError("spec: no matte node and no comp step: nothing to render")
    memory = data.get("gpu_memory_gib", 0) or 0
    if isinstance(memory, bool) or not isinstance(memory, (int, float)) or memory < 0:
        raise FarmSpecError(f"spec: 'gpu_memory_gib' is {memory!r}; give a number >= 0")
    return FarmJob(name=name, frames=frames, nodes=nodes, chunk_size=chunk_size,
                   target_runtime=_whole(data, "target_runtime", 0, 0, "spec"),
                   ocio_config=_text(data, "ocio_config", "spec", required=False),
                   cache_dir=_text(data, "cache_dir", "spec", required=False),
                   gpus=_whole(data, "gpus", 1, 0, "spec"), gpu_memory_gib=float(memory),
                   mattekit=_text(data, "mattekit", "spec", required=False) or "mattekit",
                   comp=comp)


def load_job(path: Path) -> FarmJob:
    """Read a spec file (YAML or JSON) into a checked FarmJob."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise FarmSpecError(f"{path}: cannot read the farm spec ({exc.strerror or exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FarmSpecError(f"{path}: not valid YAML/JSON ({exc})".replace("\n", " ")) from exc
    try:
        return job_from_dict(data)
    except FarmSpecError as exc:
        raise FarmSpecError(f"{path}: {exc}") from None
