"""Knobs <-> worker jobs: pure functions over plain dicts of knob values (no ``nuke`` here).

What each of the four gizmos exposes (``NODE_TYPES``), how its knob values become the
``params`` of a worker job, and how a job is laid out on disk:

- results: ``<work>/<NodeName>.####.exr`` where ``<work>`` is
  ``<cache_root>/nodes/<node id>`` (``<cache folder knob>/<node id>`` when the node names a
  folder of its own; the worker must allow it, see ``$MATTEKIT_WORK_ROOTS``);
- inputs the host renders itself (internal Writes, raw EXR): ``<work>/inputs/<Input>.####.exr``;
- the plate: a plain Read's own files when the Plate input is one (the worker reads them in the
  Read's colour space), else the internal Write's files (the script's working space);
- a temporal node (VideoMatte) needs the plate before the processed frames too (the worker
  warms its recurrent state on them, ``warmup_frames``), and its Mask input on key frames only
  (``mask_frames``): the internal Writes render exactly those frames.

``nodes.py`` reads the knobs in Nuke's main thread into a ``NodeState`` and hands it here;
everything below is unit-testable without Nuke.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from mattekit_host.errors import MattekitHostError

#: Knob names every mattekit gizmo has (the Python code reads or writes each of them).
ENGINE = "engine"
DEVICE = "device"
INPUT_COLORSPACE = "input_colorspace"
FRAME_RANGE = "frame_range"
OUTPUT = "output"
CACHE_FOLDER = "cache_folder"
CLEAR_CACHE = "clear_cache"
PROCESS_FRAME = "process_frame"
PROCESS_RANGE = "process_range"
STATUS = "status"
SUBMIT_FARM = "submit_farm"          # the Submit to Farm button (farm.py)
NODE_KIND = "mattekit_node"          # hidden: the worker's node name ("video-matte")
SIGNATURE = "result_signature"       # hidden: the job signature the results were made with
# Hidden knobs that remember the results: a gizmo's internal nodes are rebuilt from the .gizmo
# file when a script loads (their knob values are not saved), so the internal Read is set
# again from these (``nodes.restore_result``, an onCreate callback).
RESULT_FILE = "result_file"
RESULT_FIRST = "result_first"
RESULT_LAST = "result_last"
RESULT_COLORSPACE = "result_colorspace"  # empty: read the results raw
RESULT_KNOBS = (RESULT_FILE, RESULT_FIRST, RESULT_LAST, RESULT_COLORSPACE)
# The "Shot model" tab (shot.py): scribble fine-tuning of the node's engine, then rendering
# with the result (engine ``shot:NAME`` of the worker's cache folder).
SHOT_MODEL = "shot_model"            # the shot model's name; empty = the node's name
SHOT_FRAMES = "shot_frames"          # the frames the Scribbles input is painted on
SHOT_STEPS = "shot_steps"            # fine-tuning steps
TRAIN_SHOT = "train_shot"            # the Train button
USE_SHOT = "use_shot_model"          # render with shot:NAME instead of the Engine knob's
SHOT_KNOBS = (SHOT_MODEL, SHOT_FRAMES, SHOT_STEPS, TRAIN_SHOT, USE_SHOT)
COMMON_KNOBS = (ENGINE, DEVICE, INPUT_COLORSPACE, FRAME_RANGE, OUTPUT, CACHE_FOLDER,
                CLEAR_CACHE, PROCESS_FRAME, PROCESS_RANGE, STATUS, NODE_KIND, SIGNATURE,
                RESULT_FILE, RESULT_FIRST, RESULT_LAST, RESULT_COLORSPACE, SUBMIT_FARM
                ) + SHOT_KNOBS

#: Internal nodes of every gizmo, by name.
RESULT_READ = "Result"
PLATE = "Plate"
DEFAULT_ENGINE = "default"
DEVICES = ("auto", "cpu", "cuda")
OUTPUTS = ("premultiplied", "unpremultiplied", "alpha")
#: File types the worker reads directly (anything else goes through the internal Write).
WORKER_READABLE = (".exr", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: Extra inputs a job carries, per worker node: gizmo input name -> job field. Inputs not
#: listed are not used by that node's engine yet (the status line says so).
JOB_INPUT_FIELDS: Dict[str, Dict[str, str]] = {
    "background-matte": {"CleanPlate": "clean_plate", "Mask": "mask"},
    "video-matte": {"Mask": "mask"},
    "parallax-matte": {"Reference": "reference", "Mask": "mask"},
    "sparse-4k-refine": {"Coarse": "coarse", "Mask": "mask"},
}
#: Inputs every gizmo has for training its shot model only: never part of a render job.
SCRIBBLES = "Scribbles"
TRAINING_INPUTS = (SCRIBBLES,)
SHOT_PREFIX = "shot:"                # the worker's engine name of a shot model
DEFAULT_SHOT_STEPS = 200
#: The node whose plate also serves as its own second view, ``reference_offset`` frames away,
#: when its Reference input is not connected (the internal Write renders those frames too).
OFFSET_REFERENCE = {"parallax-matte": ("Reference", "reference_offset")}
#: VideoMatte's key frames of the Mask input: empty = the first frame of the Frame range
#: (the project's when empty), "all" = every frame, else a list such as "1001, 1050".
MASK_FRAMES = "mask_frames"
ALL_FRAMES = "all"
#: The engine parameter that says how many frames before the first processed one the worker
#: runs (-1: from the start of the shot).
WARMUP = "warmup_frames"
FRAME_TOKEN = "####"
_DEFAULT_SPACE = re.compile(r"^\s*default\s*(?:\((?P<inner>.*)\))?\s*$", re.IGNORECASE)


class KnobError(MattekitHostError):
    """A knob holds a value the node cannot use; the message names node, knob and fix."""


@dataclass(frozen=True)
class ParamKnob:
    """One engine parameter shown as a knob: knob name = parameter name."""

    name: str
    kind: str            # "int", "float" or "bool"
    default: Any
    minimum: Optional[float] = None
    engines: Tuple[str, ...] = ()   # engines that take it (empty: every engine of the node)


@dataclass(frozen=True)
class NodeType:
    """One gizmo: its worker node name, labelled inputs (Plate first), engines, parameters."""

    gizmo: str
    worker_node: str
    inputs: Tuple[str, ...]
    engines: Tuple[str, ...]
    params: Tuple[ParamKnob, ...]
    temporal: bool = False               # frames depend on the frames before them
    key_inputs: Tuple[str, ...] = ()     # inputs rendered on key frames only
    host_knobs: Tuple[str, ...] = ()     # knobs of this node read by the plugin itself

    def internal_write(self, input_name: str) -> str:
        return internal_write_name(input_name)

    @property
    def knobs(self) -> Tuple[str, ...]:
        return COMMON_KNOBS + self.host_knobs + tuple(p.name for p in self.params)


def internal_write_name(input_name: str) -> str:
    return f"Write_{input_name}"


_GUIDED = (DEFAULT_ENGINE, "rvm-guided")  # VideoMatte knobs only the guided engine takes
NODE_TYPES: Dict[str, NodeType] = {t.gizmo: t for t in (
    NodeType("BackgroundMatte", "background-matte", ("Plate", "CleanPlate", "Mask", SCRIBBLES),
             (DEFAULT_ENGINE,),
             (ParamKnob("register", "bool", True),
              ParamKnob("max_shift", "float", 0.25, 0.0),
              ParamKnob("shadow_tolerance", "float", 0.6, 0.0),
              ParamKnob("prior_strength", "float", 0.5, 0.0),
              ParamKnob("edge_softness", "float", 1.0, 0.0),
              ParamKnob("noise_level", "float", 0.0, 0.0))),
    NodeType("ParallaxMatte", "parallax-matte", ("Plate", "Reference", "Mask", SCRIBBLES),
             (DEFAULT_ENGINE,),
             (ParamKnob("reference_offset", "int", 2),
              ParamKnob("trimap_band", "int", 16, 1),
              ParamKnob("flow_size", "int", 1024, 64),
              ParamKnob("motion_trimap", "bool", True),
              ParamKnob("patch_size", "int", 0, 0))),
    NodeType("VideoMatte", "video-matte", ("Plate", "Mask", SCRIBBLES),
             (DEFAULT_ENGINE, "rvm-guided", "rvm"),
             (ParamKnob("downsample_target", "int", 512, 64),
              ParamKnob("cut_threshold", "float", 0.25, 0.0),
              ParamKnob(WARMUP, "int", -1, -1),
              ParamKnob("focus_view", "bool", True, engines=_GUIDED),
              ParamKnob("flicker_strength", "float", 0.5, 0.0, engines=_GUIDED),
              ParamKnob("flicker_motion", "float", 0.005, 0.0, engines=_GUIDED),
              ParamKnob("memory_threshold", "float", 0.6, 0.0, engines=_GUIDED),
              ParamKnob("key_tolerance", "float", 0.03, 0.0, engines=_GUIDED)),
             temporal=True, key_inputs=("Mask",), host_knobs=(MASK_FRAMES,)),
    NodeType("Sparse4KRefine", "sparse-4k-refine", ("Plate", "Coarse", "Mask", SCRIBBLES),
             (DEFAULT_ENGINE,),
             (ParamKnob("coarse_size", "int", 512, 64),
              ParamKnob("low_threshold", "float", 0.02, 0.0),
              ParamKnob("high_threshold", "float", 0.98, 0.0),
              ParamKnob("band_width", "int", 16, 0),
              ParamKnob("feather", "int", 8, 0),
              ParamKnob("radius", "int", 16, 1),
              ParamKnob("clip_length", "int", 4, 1),
              ParamKnob(WARMUP, "int", -1, -1)),
             temporal=True),
)}
WORKER_NODES = {t.worker_node: t for t in NODE_TYPES.values()}


def node_type(kind: str) -> NodeType:
    """The NodeType for a gizmo class ("VideoMatte") or worker node name ("video-matte")."""
    found = NODE_TYPES.get(kind) or WORKER_NODES.get(kind)
    if found is None:
        raise KnobError(f"'{kind}' is not a mattekit node; known: "
                        f"{', '.join(sorted(NODE_TYPES))}")
    return found


# -- knob values -> job fields ---------------------------------------------------------------

def params_from_knobs(kind: str, values: Mapping[str, Any], node: str = "") -> Dict[str, Any]:
    """The engine ``params`` of a job from the node's knob values (missing knob = default);
    a knob only some engines take is left out for the others."""
    where = node or kind
    params: Dict[str, Any] = {}
    engine = engine_from_knobs(values) or DEFAULT_ENGINE
    for spec in node_type(kind).params:
        if spec.engines and engine not in spec.engines:
            continue
        raw = values.get(spec.name, spec.default)
        try:
            if spec.kind == "bool":
                value: Any = bool(raw)
            elif spec.kind == "int":
                number = float(raw)
                if number != int(number):
                    raise ValueError(raw)
                value = int(number)
            else:
                value = float(raw)
            if not math.isfinite(value):  # NaN or infinity: not JSON, not a setting
                raise ValueError(raw)
        except (TypeError, ValueError, OverflowError):
            raise KnobError(f"{where}: knob '{spec.name}' must be a {spec.kind}, not "
                            f"{raw!r}") from None
        if spec.minimum is not None and value < spec.minimum:
            raise KnobError(f"{where}: knob '{spec.name}' is {value}; it must be at least "
                            f"{spec.minimum:g}")
        params[spec.name] = value
    return params


def engine_from_knobs(values: Mapping[str, Any]) -> Optional[str]:
    """The job's ``engine``: None (the node's default) for "default" or an empty knob."""
    text = str(values.get(ENGINE) or "").strip()
    return None if text in ("", DEFAULT_ENGINE) else text


def shot_model_name(values: Mapping[str, Any], node_name: str) -> str:
    """The node's shot model: the ``shot_model`` knob, else the node's own name."""
    name = str(values.get(SHOT_MODEL) or "").strip() or node_name
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", name) or name.endswith(".pt"):
        raise KnobError(f"knob '{SHOT_MODEL}' is {name!r}; name the shot model with letters, "
                        "digits, '_', '.' and '-'")
    return name


def job_engine(values: Mapping[str, Any], node_name: str) -> Optional[str]:
    """The engine a job names: ``shot:NAME`` when "Use shot model" is on, else the Engine
    knob's (None: the node's default). The parameters stay those of the Engine knob's engine:
    the shot model runs after it (its base engine)."""
    if values.get(USE_SHOT):
        return SHOT_PREFIX + shot_model_name(values, node_name)
    return engine_from_knobs(values)


def device_from_knobs(values: Mapping[str, Any]) -> str:
    text = str(values.get(DEVICE) or "auto").strip().lower()
    if text not in DEVICES:
        raise KnobError(f"knob '{DEVICE}' is {text!r}; choose one of {', '.join(DEVICES)}")
    return text


def normalise_colorspace(text: Any) -> Optional[str]:
    """A colour space knob value as a name the worker resolves: "default (sRGB)" -> "sRGB",
    "default" or "" -> None (the worker's own default)."""
    value = str(text or "").strip()
    if not value:
        return None
    match = _DEFAULT_SPACE.match(value)
    if match:
        inner = (match.group("inner") or "").strip()
        return inner or None
    return value


def parse_frame_range(text: Any, fallback: Tuple[int, int]) -> Tuple[int, int]:
    """"1001-1100" or "1001" -> (first, last); empty -> ``fallback`` (the project range)."""
    value = str(text or "").strip()
    if not value:
        first, last = fallback
    else:
        match = re.match(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+))?\s*$", value)
        if not match:
            raise KnobError(f"knob '{FRAME_RANGE}' is {value!r}; write first-last, e.g. "
                            "1001-1100, or leave it empty for the project range")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
    if last < first:
        raise KnobError(f"frame range {first}-{last} ends before it starts")
    return int(first), int(last)


def frames_text(first: int, last: int) -> str:
    return f"{first}-{last}"


def frames_summary(frames: Sequence[int]) -> str:
    """[1, 2, 3, 7] -> "1-3, 7" (for messages)."""
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in frame_runs(frames))


# -- Read nodes ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReadSource:
    """A plain Read feeding the Plate input: its file pattern and how it is interpreted."""

    pattern: str
    colorspace: Optional[str]
    raw: bool


def plain_read_source(values: Mapping[str, Any], pattern: Optional[str]) -> Optional[ReadSource]:
    """A ReadSource when a Read with these knob values hands the worker nothing but its
    files (so the worker may read them itself), else None. Not plain: disabled, a frame
    offset, a file type the worker cannot read, or premultiplied colour handling."""
    if not pattern or values.get("disable"):
        return None
    if str(values.get("frame") or "").strip():  # "start at" / "offset" frame modes
        return None
    if values.get("premultiplied"):
        return None
    if os.path.splitext(pattern)[1].lower() not in WORKER_READABLE:
        return None
    if not os.path.isabs(pattern):
        return None
    raw = bool(values.get("raw"))
    return ReadSource(pattern=pattern, raw=raw,
                      colorspace=None if raw else normalise_colorspace(values.get("colorspace")))


# -- node identity and folders ---------------------------------------------------------------

def node_id(script: str, full_name: str) -> str:
    """A folder name stable for one node of one script: readable name + hash of both."""
    digest = hashlib.sha1(f"{script}\n{full_name}".encode("utf-8")).hexdigest()[:12]
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", full_name).strip("_") or "node"
    return f"{safe}-{digest}"


def work_folder(cache_root: str, cache_folder: Any, ident: str) -> str:
    """Where one node's results and rendered inputs live."""
    own = str(cache_folder or "").strip()
    if own:
        own = os.path.expanduser(own)
        if not os.path.isabs(own):
            raise KnobError(f"knob '{CACHE_FOLDER}' is {own!r}; give an absolute folder or "
                            "leave it empty for the worker's cache")
        return os.path.join(own, ident)
    return os.path.join(cache_root, "nodes", ident)


def result_pattern(work: str, node_name: str) -> str:
    return os.path.join(work, f"{node_name}.{FRAME_TOKEN}.exr")


def input_pattern(work: str, input_name: str) -> str:
    return os.path.join(work, "inputs", f"{input_name}.{FRAME_TOKEN}.exr")


def frame_path(pattern: str, frame: int) -> str:
    """A ``####`` / ``%04d`` / ``$F4`` / ``@`` pattern resolved for one frame."""
    def hashes(match: "re.Match[str]") -> str:
        return f"{frame:0{len(match.group(0))}d}"

    def printf(match: "re.Match[str]") -> str:
        width = int(match.group(1) or 0)
        return f"{frame:0{width}d}"

    folder, name = os.path.split(pattern)
    name = re.sub(r"#+", hashes, name)
    name = re.sub(r"%0?(\d*)d", printf, name)
    name = re.sub(r"\$F(\d*)", printf, name)
    name = re.sub(r"@+", hashes, name)
    return os.path.join(folder, name)


# -- the job ---------------------------------------------------------------------------------

@dataclass
class NodeState:
    """What the host read from one node in Nuke's main thread (nothing here touches Nuke)."""

    kind: str                      # gizmo class, e.g. "VideoMatte"
    name: str                      # node name, e.g. "VideoMatte1"
    full_name: str                 # with its groups, e.g. "Group1.VideoMatte1"
    script: str                    # the script's path ("Root" when unsaved)
    values: Dict[str, Any]         # knob name -> value
    connected: Tuple[str, ...]     # the labels of the connected inputs
    plate_read: Optional[ReadSource] = None
    working_space: str = "scene_linear"
    ocio_config: Optional[str] = None
    project_range: Optional[Tuple[int, int]] = None   # the script's frame range
    plate_range: Optional[Tuple[int, int]] = None     # frames the Plate input has


@dataclass
class JobPlan:
    """One Process: the job for the worker and what the host does around it."""

    job: Dict[str, Any]
    work: str
    result: str                                  # result pattern (the job's out)
    writes: List[Tuple[str, str]] = field(default_factory=list)   # (internal Write, pattern)
    result_colorspace: Optional[str] = None      # None: read the result raw
    signature: str = ""
    warnings: List[str] = field(default_factory=list)
    # frames an internal Write renders when not the processed ones (warm-up, key frames)
    write_frames: Dict[str, List[int]] = field(default_factory=dict)
    # internal Writes whose earlier files are deleted first (a key frame must not linger)
    replace_writes: List[str] = field(default_factory=list)


def parse_frame_list(text: Any) -> List[int]:
    """"1001, 1050, 1060-1062" -> [1001, 1050, 1060, 1061, 1062] (sorted, unique)."""
    frames: List[int] = []
    for item in str(text or "").replace(" ", ",").split(","):
        if not item:
            continue
        match = re.match(r"^(-?\d+)(?:-(-?\d+))?$", item)
        if not match:
            raise KnobError(f"knob '{MASK_FRAMES}' has {item!r}; list frames such as "
                            "1001, 1050 or 1001-1010, write 'all', or leave it empty for "
                            "the first frame")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        frames.extend(range(first, last + 1))
    return sorted(set(frames))


def frame_runs(frames: Sequence[int]) -> List[Tuple[int, int]]:
    """[1, 2, 3, 7] -> [(1, 3), (7, 7)]: what one ``nuke.execute`` each renders."""
    runs: List[Tuple[int, int]] = []
    for frame in sorted(set(frames)):
        if runs and frame == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], frame)
        else:
            runs.append((frame, frame))
    return runs


def shot_start(state: NodeState, first: int) -> int:
    """The first frame of the shot: where both the project and the plate have begun
    (``first`` when neither is known)."""
    floors = [r[0] for r in (state.project_range, state.plate_range) if r is not None]
    return min(first, max(floors)) if floors else first


def warmup_start(state: NodeState, first: int) -> int:
    """The first plate frame a temporal node needs for frames first..: ``warmup_frames``
    before ``first`` (-1: the start of the shot), never before the shot."""
    params = params_from_knobs(state.kind, state.values, state.full_name)
    warmup = int(params.get(WARMUP, 0))
    floor = shot_start(state, first)
    return floor if warmup < 0 else max(first - warmup, floor)


def mask_key_frames(state: NodeState, start: int, last: int) -> List[int]:
    """The frames the Mask input is rendered on (``MASK_FRAMES``), up to ``last``."""
    text = str(state.values.get(MASK_FRAMES) or "").strip()
    if text.lower() == ALL_FRAMES:
        return list(range(start, last + 1))
    if text:
        return [f for f in parse_frame_list(text) if f <= last]
    key = parse_frame_range(state.values.get(FRAME_RANGE), (shot_start(state, start), last))[0]
    return [key] if key <= last else []


def offset_plate_frames(state: NodeState, first: int, last: int, knob: str) -> List[int]:
    """The plate frames a node that is its own reference needs: first..last and each frame's
    reference ``offset`` away, or the other way where that is outside the plate's (or the
    project's) range, as the worker does."""
    offset = int(params_from_knobs(state.kind, state.values, state.full_name).get(knob, 0))
    bounds = state.plate_range or state.project_range
    frames = set(range(first, last + 1))
    for frame in range(first, last + 1):
        ahead = frame + offset
        inside = bounds is None or bounds[0] <= ahead <= bounds[1]
        frames.add(ahead if inside else frame - offset)
    return sorted(frames)


def job_colorspace(state: NodeState) -> Optional[str]:
    """The plate's colour space as the job states it: the node's knob, else the plain Read's,
    else the working space (internal Writes and raw Reads carry working-space pixels)."""
    override = normalise_colorspace(state.values.get(INPUT_COLORSPACE))
    if override:
        return override
    if state.plate_read is not None and not state.plate_read.raw:
        return state.plate_read.colorspace
    return normalise_colorspace(state.working_space) or "scene_linear"


def signature(state: NodeState) -> str:
    """A digest of everything the results depend on that the host can see (not pixels: the
    worker's cache keys those): node, engine, params, colour, the plate's source."""
    kind = node_type(state.kind)
    plate = state.plate_read.pattern if state.plate_read is not None else "<internal Write>"
    payload = {
        "node": kind.worker_node,
        "engine": job_engine(state.values, state.name),
        "params": params_from_knobs(state.kind, state.values, state.full_name),
        "colorspace": job_colorspace(state),
        "plate": plate,
        "ocio_config": state.ocio_config,
    }
    mask_frames = str(state.values.get(MASK_FRAMES) or "").strip()
    if mask_frames and MASK_FRAMES in kind.host_knobs:
        payload["mask_frames"] = mask_frames
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def build_job(state: NodeState, cache_root: str, first: int, last: int) -> JobPlan:
    """The worker job for frames first..last of one node, and the host's side of it."""
    kind = node_type(state.kind)
    if PLATE not in state.connected:
        raise KnobError(f"{state.full_name}: the Plate input is not connected; connect the "
                        "plate to process")
    work = work_folder(cache_root, state.values.get(CACHE_FOLDER),
                       node_id(state.script, state.full_name))
    result = result_pattern(work, state.name)
    writes: List[Tuple[str, str]] = []
    fields = JOB_INPUT_FIELDS.get(kind.worker_node, {})
    extras: Dict[str, str] = {}
    warnings: List[str] = []
    for extra in kind.inputs[1:]:
        if extra not in state.connected or extra in TRAINING_INPUTS:
            continue
        if extra in fields:
            pattern = input_pattern(work, extra)
            writes.append((kind.internal_write(extra), pattern))
            extras[fields[extra]] = pattern
        else:
            warnings.append(f"the {extra} input is not used by this node's engine yet")
    write_frames: Dict[str, List[int]] = {}
    replace: List[str] = []
    if kind.temporal:
        start = warmup_start(state, first)
        plate_frames = set(range(start, last + 1))
        for extra in kind.key_inputs:
            if fields.get(extra) not in extras:
                continue
            name = kind.internal_write(extra)
            keys = mask_key_frames(state, start, last)
            if not keys:
                writes = [w for w in writes if w[0] != name]
                del extras[fields[extra]]
                warnings.append(f"the {extra} input's key frames come after frame {last}: "
                                "these frames are not locked to a target")
                continue
            write_frames[name] = keys
            replace.append(name)
            plate_frames.update(keys)
        write_frames[kind.internal_write(PLATE)] = sorted(plate_frames)
    offset_input = OFFSET_REFERENCE.get(kind.worker_node)
    if offset_input is not None and offset_input[0] not in state.connected:
        write_frames[kind.internal_write(PLATE)] = offset_plate_frames(state, first, last,
                                                                       offset_input[1])
    # with other inputs rendered by the internal Writes, the plate goes the same way so all
    # of them reach the worker in one colour space (the working space)
    if state.plate_read is not None and not extras:
        plate = state.plate_read.pattern
        result_space = None if state.plate_read.raw else job_colorspace(state)
    else:
        plate = input_pattern(work, PLATE)
        writes.append((kind.internal_write(PLATE), plate))
        result_space = None
    job: Dict[str, Any] = {
        "node": kind.worker_node,
        "plate": plate,
        "frames": frames_text(first, last),
        "out": result,
        "engine": job_engine(state.values, state.name),
        "colorspace": job_colorspace(state),
        "device": device_from_knobs(state.values),
        "params": params_from_knobs(state.kind, state.values, state.full_name),
        **extras,
    }
    if state.ocio_config:
        job["ocio_config"] = state.ocio_config
    written = {name for name, _ in writes}
    return JobPlan(job=job, work=work, result=result, writes=writes,
                   result_colorspace=result_space, signature=signature(state),
                   warnings=warnings,
                   write_frames={k: v for k, v in write_frames.items() if k in written},
                   replace_writes=[r for r in replace if r in written])
