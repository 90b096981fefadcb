"""Submit to Farm: mattekit nodes of a saved Nuke script as a render-farm job.

The host reads the nodes' knobs (main thread, ``nodes.snapshot``), turns them into a farm spec
(plain JSON, ``farm_spec``: pure, no Nuke), and has the worker environment's own `mattekit farm`
build the job, as a subprocess of ``$MATTEKIT_PYTHON`` (``python -m mattekit.inference.cli
farm ...``). The job formats live in one place (``mattekit.inference.farm``, with
openjd-model / pyoutline, which Nuke's Python does not have), and a TD gets the same job from
Nuke as from the command line.

Where a node runs on the farm:

- its Plate is a plain Read and no other input its engine uses is connected: a matte step of
  `mattekit render` tasks, reading the Read's files (no Nuke licence; the same job as the
  node's own Process, so the comp finds its frames in the shared cache);
- otherwise (a graded plate, a Roto mask, a clean plate: inputs only Nuke can render): the
  Nuke step, ``nuke -t mattekit_precompute.py --nodes ...``, computes it inside Nuke.

The GUI never waits: the knobs are read in the main thread, the job is built and submitted
on a background thread, and the outcome lands on each node's status line (and in a message).
Selected Writes become the comp step (after the matte steps), which computes every mattekit
node upstream of them and renders them. Settings come from the environment, so a studio sets
them once for everyone:

- ``MATTEKIT_FARM``: ``openjd`` (default: a job bundle, submitted with ``deadline bundle
  submit`` when the Deadline Cloud CLI is on PATH) or ``opencue`` (an XML job spec, launched
  through pycue when ``CUEBOT_HOSTS`` is set);
- ``MATTEKIT_FARM_FOLDER``: where jobs and the farm's mattes go (default: ``mattekit_farm``
  beside the script); ``MATTEKIT_FARM_CHUNK``: frames per task (default 10);
  ``MATTEKIT_FARM_CACHE``: a cache folder every farm host shares (default: each host's own);
  ``MATTEKIT_FARM_GPUS``: GPUs a matte task needs (default 1; 0: any host).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

from mattekit_host import knobs, nodes, paths
from mattekit_host.errors import MattekitHostError

if TYPE_CHECKING:
    import nuke

FARM_ENV = "MATTEKIT_FARM"
FOLDER_ENV = "MATTEKIT_FARM_FOLDER"
CHUNK_ENV = "MATTEKIT_FARM_CHUNK"
CACHE_ENV = "MATTEKIT_FARM_CACHE"
GPUS_ENV = "MATTEKIT_FARM_GPUS"
CUEBOT_ENV = "CUEBOT_HOSTS"
FARMS = ("openjd", "opencue")
SPEC_FILE = "spec.json"
BUNDLE_FOLDER = "bundle"
OPENCUE_FILE = "job.xml"
CLI_TIMEOUT_SECONDS = 180


class FarmSubmitError(MattekitHostError):
    """The job could not be built or submitted; the message says why and what to do."""


@dataclass
class FarmSettings:
    farm: str = "openjd"
    folder: str = ""
    chunk_size: int = 10
    cache_dir: Optional[str] = None
    gpus: Optional[int] = None        # None: the CLI's default (1)


@dataclass
class Submission:
    """What Submit to Farm did: the job folder, the farm's answer, notes for the user."""

    folder: str
    farm: str
    submitted: bool = False
    output: str = ""
    notes: List[str] = field(default_factory=list)


def settings_from_env(script: str) -> FarmSettings:
    """The farm settings from the environment, the folder defaulting to beside the script."""
    farm = os.environ.get(FARM_ENV, "openjd").strip().lower() or "openjd"
    if farm not in FARMS:
        raise FarmSubmitError(f"${FARM_ENV} is {farm!r}; set it to one of {', '.join(FARMS)}")
    chunk_text = os.environ.get(CHUNK_ENV, "10").strip() or "10"
    if not chunk_text.isdigit() or int(chunk_text) < 1:
        raise FarmSubmitError(f"${CHUNK_ENV} is {chunk_text!r}; give the frames per task, "
                              "e.g. 10")
    gpus_text = os.environ.get(GPUS_ENV, "").strip()
    if gpus_text and not gpus_text.isdigit():
        raise FarmSubmitError(f"${GPUS_ENV} is {gpus_text!r}; give the GPUs a matte task "
                              "needs (0: any host)")
    folder = os.environ.get(FOLDER_ENV, "").strip() or os.path.join(
        os.path.dirname(os.path.abspath(script)), "mattekit_farm")
    return FarmSettings(farm=farm, folder=folder, chunk_size=int(chunk_text),
                        cache_dir=os.environ.get(CACHE_ENV, "").strip() or None,
                        gpus=int(gpus_text) if gpus_text else None)


# -- the spec (pure) -----------------------------------------------------------------------------

def needs_nuke(state: knobs.NodeState) -> Optional[str]:
    """Why the node must be computed inside Nuke on the farm, or None when `mattekit render`
    can read its inputs itself."""
    if state.plate_read is None:
        return "its Plate is not a plain Read of image files"
    fields = knobs.JOB_INPUT_FIELDS.get(knobs.node_type(state.kind).worker_node, {})
    used = [name for name in state.connected if name in fields]
    if used:
        return f"its {', '.join(used)} input is rendered by Nuke"
    return None


def spec_name(full_name: str) -> str:
    """A node's name in the job ("Group1.VideoMatte1" -> "Group1_VideoMatte1")."""
    name = re.sub(r"[^A-Za-z0-9_]+", "_", full_name).strip("_") or "node"
    return name if name[0].isalpha() else f"N{name}"


def job_name(script: str) -> str:
    stem = os.path.splitext(os.path.basename(script))[0]
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_") or "mattekit"


def matte_entry(state: knobs.NodeState, out: str, project: Tuple[int, int]) -> Dict[str, Any]:
    """A node of the farm spec: the job its own Process would send the worker, over the node's
    frame range (left out when it is the project's: the job's frames then apply), writing
    ``out``."""
    if state.plate_read is None:
        raise FarmSubmitError(f"{state.full_name}: {needs_nuke(state)}")
    first, last = knobs.parse_frame_range(state.values.get(knobs.FRAME_RANGE), project)
    entry: Dict[str, Any] = {
        "name": spec_name(state.full_name),
        "node": knobs.node_type(state.kind).worker_node,
        "plate": state.plate_read.pattern,
        "out": out,
        "frames": knobs.frames_text(first, last),
        "engine": knobs.job_engine(state.values, state.name),
        "colorspace": knobs.job_colorspace(state),
        "device": knobs.device_from_knobs(state.values),
        "params": knobs.params_from_knobs(state.kind, state.values, state.full_name),
    }
    if (first, last) == tuple(project):
        del entry["frames"]
    return entry


def farm_spec(script: str, states: Sequence[knobs.NodeState], writes: Sequence[str],
              settings: FarmSettings, project: Tuple[int, int],
              folder: str) -> Tuple[Dict[str, Any], List[str]]:
    """The farm spec for these nodes and Writes of ``script``, and notes for the user."""
    notes: List[str] = []
    entries: List[Dict[str, Any]] = []
    in_nuke: List[str] = []
    for state in states:
        reason = needs_nuke(state)
        if reason:
            in_nuke.append(state.full_name)
            notes.append(f"{state.full_name}: computed inside Nuke on the farm ({reason})")
            continue
        name = spec_name(state.full_name)
        entries.append(matte_entry(state, knobs.result_pattern(os.path.join(folder, name), name),
                                   project))
    spec: Dict[str, Any] = {"name": job_name(script),
                            "frames": knobs.frames_text(*project),
                            "chunk_size": settings.chunk_size, "nodes": entries}
    ocio = next((s.ocio_config for s in states if s.ocio_config), None)
    if ocio:
        spec["ocio_config"] = ocio
    if settings.cache_dir:
        spec["cache_dir"] = settings.cache_dir
    if settings.gpus is not None:
        spec["gpus"] = settings.gpus
    if writes or in_nuke:
        spec["comp"] = {"script": script, "writes": list(writes), "nodes": in_nuke,
                        "render": bool(writes)}
    if not entries and not writes and not in_nuke:
        raise FarmSubmitError("nothing to submit: select mattekit nodes or Writes")
    return spec, notes


# -- building and submitting (subprocesses) -----------------------------------------------------

def _write_json(path: str, data: Dict[str, Any]) -> None:
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".spec.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=1)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _run(command: List[str], what: str) -> str:
    """Run a command; FarmSubmitError with its error line when it fails."""
    try:
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=CLI_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise FarmSubmitError(f"{what} could not run ({exc})") from exc
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower()]
        cause = (errors or lines or [f"exit status {done.returncode}"])[-1]
        raise FarmSubmitError(f"{what} failed: {cause}")
    return done.stdout.strip()


def build_and_submit(spec: Dict[str, Any], folder: str, farm: str) -> Submission:
    """Write the spec into ``folder``, build the job with `mattekit farm`, and hand it to the
    farm when its client is set up here (Deadline Cloud CLI on PATH; $CUEBOT_HOSTS)."""
    spec_path = os.path.join(folder, SPEC_FILE)
    try:
        _write_json(spec_path, spec)
    except OSError as exc:
        raise FarmSubmitError(f"{folder}: cannot write the farm job ({exc.strerror or exc}); "
                              f"set ${FOLDER_ENV} to a folder you can write") from exc
    cli = [paths.worker_python(), "-m", "mattekit.inference.cli", "farm", farm,
           "--spec", spec_path]
    submission = Submission(folder=folder, farm=farm)
    if farm == "openjd":
        bundle = os.path.join(folder, BUNDLE_FOLDER)
        submission.output = _run(cli + ["--bundle", bundle], "mattekit farm openjd")
        deadline = shutil.which("deadline")
        if deadline:
            submission.output += "\n" + _run([deadline, "bundle", "submit", "--yes", bundle],
                                             "deadline bundle submit")
            submission.submitted = True
        return submission
    launch = bool(os.environ.get(CUEBOT_ENV))
    submission.output = _run(cli + ["--xml", os.path.join(folder, OPENCUE_FILE)]
                             + (["--launch"] if launch else []), "mattekit farm opencue")
    submission.submitted = launch
    return submission


# -- in Nuke ---------------------------------------------------------------------------------

@dataclass
class _Prepared:
    """A job read from the script in the main thread, ready to build off it."""

    spec: Dict[str, Any]
    folder: str
    farm: str
    notes: List[str]


def _prepare(matte_nodes: Sequence[nuke.Node], writes: Sequence[nuke.Node]) -> _Prepared:
    """Read the script and the nodes' knobs (main thread only)."""
    import nuke

    script = nuke.root().name()
    if not script or script == "Root":
        raise FarmSubmitError("save the script first: the farm renders the saved script")
    settings = settings_from_env(script)
    folder = os.path.join(settings.folder, f"{job_name(script)}_{time.strftime('%Y%m%d_%H%M%S')}")
    states = [nodes.snapshot(node) for node in matte_nodes]
    spec, notes = farm_spec(script, states, [w.fullName() for w in writes], settings,
                            nodes.project_range(), os.path.join(settings.folder, "mattes"))
    return _Prepared(spec=spec, folder=folder, farm=settings.farm, notes=notes)


def _build(prepared: _Prepared) -> Submission:
    submission = build_and_submit(prepared.spec, prepared.folder, prepared.farm)
    submission.notes = prepared.notes
    return submission


def submit(matte_nodes: Sequence[nuke.Node], writes: Sequence[nuke.Node]) -> Submission:
    """Submit these mattekit nodes (and Writes, as the comp) of the saved script, in the
    calling thread (for scripts and ``nuke -t``)."""
    return _build(_prepare(matte_nodes, writes))


def _report(matte_nodes: Sequence[nuke.Node], submission: Optional[Submission],
            error: Optional[str]) -> None:
    """The outcome on each node's status line, in the terminal and (GUI) in a message."""
    import nuke

    if submission is None:
        text = f"farm submission failed: {error}"
    elif submission.submitted:
        text = f"submitted to the farm ({submission.farm}): {submission.folder}"
    else:
        text = (f"farm job written ({submission.farm}; no farm client set up here to submit "
                f"it): {submission.folder}")
    for node in matte_nodes:
        try:
            nodes.set_status(node, text)
        except ValueError:  # the node was deleted meanwhile
            pass
    lines = [f"mattekit: {text}", *(f"mattekit: {n}" for n in
                                    (submission.notes if submission else []))]
    for line in lines:
        nuke.tprint(line)
    if nuke.GUI:
        nuke.message("\n".join(lines))


def _submit_and_report(matte_nodes: Sequence[nuke.Node], writes: Sequence[nuke.Node]
                       ) -> Union[Submission, threading.Thread, None]:
    """Submit and report. In the GUI the job is built on a background thread (the CLI and a
    farm client take seconds) and the thread is returned; headless, the Submission."""
    import nuke

    try:
        prepared = _prepare(matte_nodes, writes)
    except MattekitHostError as exc:
        _report(matte_nodes, None, str(exc))
        return None
    if not nuke.GUI:
        try:
            submission = _build(prepared)
        except MattekitHostError as exc:
            _report(matte_nodes, None, str(exc))
            return None
        _report(matte_nodes, submission, None)
        return submission
    for node in matte_nodes:
        nodes.set_status(node, f"submitting to the farm ({prepared.farm})...")

    def work() -> None:
        try:
            built: Optional[Submission] = _build(prepared)
            error = None
        except MattekitHostError as exc:
            built, error = None, str(exc)
        nuke.executeInMainThread(_report, args=(matte_nodes, built, error))

    thread = threading.Thread(target=work, name="mattekit farm submission", daemon=True)
    thread.start()
    return thread


def submit_node(node: Optional[nuke.Node] = None) -> Union[Submission, threading.Thread, None]:
    """The Submit to Farm button: this node's frame range as a farm job."""
    import nuke

    return _submit_and_report([node if node is not None else nuke.thisNode()], [])


def submit_selected() -> Union[Submission, threading.Thread, None]:
    """Menu "Submit selected to farm": every selected mattekit node, and the selected Writes
    as the comp step."""
    import nuke

    selected = nuke.selectedNodes()
    mattes = [n for n in selected if nodes.is_mattekit_node(n)]
    writes = [n for n in selected if n.Class() == "Write"]
    if not mattes and not writes:
        nuke.message("mattekit: select mattekit nodes (and the Writes to render) first")
        return None
    return _submit_and_report(mattes, writes)
