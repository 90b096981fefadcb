"""The mattekit nodes inside Nuke: Process Frame, Process Range, Clear Cache, Process selected.

One Process runs in three steps, and never blocks Nuke's UI thread in a GUI session:

1. in the main thread: read the node's knobs and inputs into a ``knobs.NodeState``;
2. on a background ``threading.Thread`` with a ``nuke.ProgressTask`` (its cancel button
   cancels the request): ask the worker for its cache root, render the internal Writes when
   the plate is not a plain Read (``nuke.execute`` runs in the main thread through
   ``nuke.executeInMainThreadWithResult``), then ``WorkerClient.process`` the job;
3. in the main thread again: point the internal ``Result`` Read at the results, reload it and
   write the outcome on the node's status line.

Failures land on the node's status line and in the terminal (``nuke.tprint``: node, frames,
cause), never silently. Headless (``nuke -t``, ``precompute.py``) the same steps run in the
calling thread with ``process_now``.

``nuke`` is imported inside the functions, so this module loads (and its logic can be
checked) in a Python without Nuke.
"""
from __future__ import annotations

import os
import re
import shutil
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from mattekit_host import knobs
from mattekit_host.client import WorkerClient
from mattekit_host.errors import MattekitHostError, WorkerError

if TYPE_CHECKING:
    import nuke

#: call(function, *args) -> result, in Nuke's main thread.
MainCaller = Callable[..., Any]
CANCELLED = "cancelled"
_RUNNING: Dict[str, threading.Thread] = {}   # node key -> its Process thread (one at a time)
_RUNNING_LOCK = threading.Lock()


@dataclass
class Outcome:
    """What one Process did: frames asked, computed and taken from the cache, the results."""

    node: str
    first: int
    last: int
    result: str = ""
    computed: List[int] = field(default_factory=list)
    cached: List[int] = field(default_factory=list)
    engine: str = ""
    seconds: float = 0.0
    warnings: List[str] = field(default_factory=list)
    error: Optional[str] = None
    code: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None


class TaskCancel(threading.Event):
    """The cancel Event the client polls, set as soon as the ProgressTask's cancel is hit."""

    def __init__(self, task: Any = None):
        super().__init__()
        self._task = task

    def is_set(self) -> bool:
        if not super().is_set() and self._task is not None:
            try:
                if self._task.isCancelled():
                    self.set()
            except Exception:  # noqa: BLE001 - a closed task must not break the render
                pass
        return super().is_set()


# -- which nodes are ours --------------------------------------------------------------------

def kind_of(node: nuke.Node) -> Optional[str]:
    """The gizmo class ("VideoMatte") of a mattekit node, else None."""
    marker = node.knob(knobs.NODE_KIND)
    if marker is not None:
        value = str(marker.value() or "")
        if value in knobs.WORKER_NODES:
            return knobs.WORKER_NODES[value].gizmo
    cls = node.Class()
    return cls if cls in knobs.NODE_TYPES else None


def is_mattekit_node(node: nuke.Node) -> bool:
    return kind_of(node) is not None


def inner(node: nuke.Node, name: str) -> nuke.Node:
    """An internal node of a mattekit gizmo (``Result``, ``Write_Plate``, ...)."""
    import nuke

    found = node.node(name) if isinstance(node, nuke.Group) else None
    if found is None:
        raise MattekitHostError(f"{node.fullName()}: internal node '{name}' is missing; the "
                                "gizmo was edited or is from another mattekit version: "
                                "create the node again")
    return found


def _value(node: nuke.Node, name: str, default: Any = None) -> Any:
    knob = node.knob(name)
    return default if knob is None else knob.value()


def node_key(node: nuke.Node) -> str:
    import nuke

    return f"{nuke.root().name()}::{node.fullName()}"


# -- step 1: the node's state (main thread) --------------------------------------------------

def _source(node: Optional[nuke.Node]) -> Optional[nuke.Node]:
    """The node behind Dots (they change nothing)."""
    seen = 0
    while node is not None and node.Class() == "Dot" and seen < 1000:
        node = node.input(0)
        seen += 1
    return node


def _plate_read(node: nuke.Node) -> Optional[knobs.ReadSource]:
    import nuke

    source = _source(node.input(0))
    if source is None or source.Class() != "Read":
        return None
    values = {name: _value(source, name) for name in
              ("disable", "frame", "premultiplied", "raw", "colorspace")}
    pattern = nuke.filename(source) or str(_value(source, "file", "") or "")
    return knobs.plain_read_source(values, pattern)


def _ocio_config() -> Optional[str]:
    import nuke

    root = nuke.root()
    if str(_value(root, "OCIO_config", "") or "") == "custom":
        custom = str(_value(root, "customOCIOConfigPath", "") or "").strip()
        if custom:
            return custom
    return os.environ.get("OCIO") or None


def snapshot(node: nuke.Node) -> knobs.NodeState:
    """The node's knobs and inputs, read in the main thread."""
    import nuke

    kind = kind_of(node)
    if kind is None:
        raise MattekitHostError(f"{node.fullName()} ({node.Class()}) is not a mattekit node")
    spec = knobs.node_type(kind)
    values = {name: _value(node, name) for name in spec.knobs if node.knob(name) is not None}
    connected = tuple(label for index, label in enumerate(spec.inputs)
                      if node.input(index) is not None)
    root = nuke.root()
    return knobs.NodeState(
        kind=kind, name=node.name(), full_name=node.fullName(), script=root.name(),
        values=values, connected=connected, plate_read=_plate_read(node),
        working_space=str(_value(root, "workingSpaceLUT", "") or "scene_linear"),
        ocio_config=_ocio_config(), project_range=project_range(),
        plate_range=_input_range(node.input(0)))


def _input_range(source: Optional[nuke.Node]) -> Optional[Tuple[int, int]]:
    """The frame range an input node delivers, when Nuke can say."""
    try:
        return (int(source.firstFrame()), int(source.lastFrame())) if source else None
    except (AttributeError, TypeError, ValueError):
        return None


def project_range() -> Tuple[int, int]:
    import nuke

    root = nuke.root()
    return int(root["first_frame"].value()), int(root["last_frame"].value())


def node_range(node: nuke.Node) -> Tuple[int, int]:
    """The node's ``frame_range`` knob, else the project's range."""
    return knobs.parse_frame_range(_value(node, knobs.FRAME_RANGE, ""), project_range())


# -- step 3 and errors (main thread) ---------------------------------------------------------

def set_status(node: nuke.Node, text: str) -> None:
    knob = node.knob(knobs.STATUS)
    if knob is not None:
        knob.setValue(text)


def _report_failure(node: nuke.Node, outcome: Outcome) -> None:
    import nuke

    summary = knobs.frames_summary(range(outcome.first, outcome.last + 1))
    frames = f"frames {summary}: " if summary else ""
    what = "cancelled" if outcome.code == CANCELLED else f"error ({outcome.code or 'error'})"
    try:
        set_status(node, f"{what}: {frames}{outcome.error}")
    except ValueError:  # the node was deleted while it was processing
        pass
    nuke.tprint(f"mattekit: {outcome.node}: {frames}{outcome.code or 'error'}: {outcome.error}")


def _show_result(node: nuke.Node, plan: knobs.JobPlan, outcome: Outcome) -> None:
    """Remember the results on the node (frames first..last, merged with those it already
    shows of the same results), show them in the internal Read, tell the user."""
    first, last = outcome.first, outcome.last
    if str(_value(node, knobs.RESULT_FILE, "") or "") == plan.result:
        first = min(first, int(_value(node, knobs.RESULT_FIRST, first)))
        last = max(last, int(_value(node, knobs.RESULT_LAST, last)))
    for name, value in ((knobs.RESULT_FILE, plan.result), (knobs.RESULT_FIRST, first),
                        (knobs.RESULT_LAST, last),
                        (knobs.RESULT_COLORSPACE, plan.result_colorspace or ""),
                        (knobs.SIGNATURE, plan.signature)):
        knob = node.knob(name)
        if knob is not None:
            knob.setValue(value)
    apply_result(node)
    frames = knobs.frames_summary(range(outcome.first, outcome.last + 1))
    text = (f"done: frames {frames} ({len(outcome.computed)} computed, "
            f"{len(outcome.cached)} from cache) with {outcome.engine or 'engine'} "
            f"in {outcome.seconds:.1f} s")
    if outcome.warnings:
        text += "; note: " + "; ".join(outcome.warnings)
    set_status(node, text)


def apply_result(node: nuke.Node) -> None:
    """Set the internal Read from the node's result knobs (main thread) and reload it."""
    read = inner(node, knobs.RESULT_READ)
    pattern = str(_value(node, knobs.RESULT_FILE, "") or "")
    read["file"].setValue(pattern)
    if not pattern:
        return
    first = int(_value(node, knobs.RESULT_FIRST, 1) or 1)
    last = max(first, int(_value(node, knobs.RESULT_LAST, first) or first))
    for name, frame in (("first", first), ("last", last), ("origfirst", first),
                        ("origlast", last)):
        if read.knob(name) is not None:
            read[name].setValue(frame)
    colorspace = str(_value(node, knobs.RESULT_COLORSPACE, "") or "")
    if colorspace:
        read["raw"].setValue(False)
        read["colorspace"].setValue(colorspace)
        if read.knob("premultiplied") is not None:
            read["premultiplied"].setValue(True)
    else:
        read["raw"].setValue(True)
    _reload(read)


def restore_result() -> None:
    """onCreate callback (init.py): a loaded script's mattekit node shows its results again
    (a gizmo's internal knob values are not saved with the script; its own knobs are)."""
    import nuke

    node = nuke.thisNode()
    try:
        if is_mattekit_node(node) and _value(node, knobs.RESULT_FILE):
            apply_result(node)
    except Exception:  # noqa: BLE001 - never break a script load; say what went wrong
        nuke.tprint(f"mattekit: {node.fullName()}: cannot restore its results:\n"
                    + traceback.format_exc())


def _reload(read: nuke.Node) -> None:
    import nuke

    knob = read.knob("reload")
    if isinstance(knob, nuke.Script_Knob):
        knob.execute()


def _render_input(node: nuke.Node, write_name: str, pattern: str, first: int,
                  last: int) -> None:
    """Render one internal Write (raw EXR) over first..last; main thread only."""
    import nuke

    write = inner(node, write_name)
    os.makedirs(os.path.dirname(pattern), exist_ok=True)
    write["file"].setValue(pattern)
    nuke.execute(write, first, last, 1)


def remove_input_frames(pattern: str) -> int:
    """Delete the files an internal Write rendered earlier for ``pattern`` (a ####
    sequence): key frames of an earlier Process must not count as key frames now."""
    folder, name = os.path.split(pattern)
    head, _, tail = name.partition(knobs.FRAME_TOKEN)
    matcher = re.compile(re.escape(head) + r"-?\d+" + re.escape(tail) + "$")
    removed = 0
    if not os.path.isdir(folder):
        return 0
    for entry in os.listdir(folder):
        if matcher.match(entry):
            try:
                os.remove(os.path.join(folder, entry))
                removed += 1
            except OSError:
                pass
    return removed


def render_input_frames(node: nuke.Node, write_name: str, pattern: str, frames: List[int],
                         replace: bool) -> None:
    """Render one internal Write on ``frames`` (contiguous runs, one execute each); with
    ``replace``, its earlier files go first. Main thread only."""
    if replace:
        remove_input_frames(pattern)
    for run_first, run_last in knobs.frame_runs(frames):
        _render_input(node, write_name, pattern, run_first, run_last)


def call_here(function: Callable[..., Any], *args: Any) -> Any:
    return function(*args)


def _captured(function: Callable[..., Any], *args: Any) -> Tuple[bool, Any]:
    """Run in the main thread; hand any exception back instead of letting Nuke print it."""
    try:
        return True, function(*args)
    except Exception as exc:  # noqa: BLE001 - re-raised in the calling thread
        return False, exc


def in_main_thread(function: Callable[..., Any], *args: Any) -> Any:
    """Call ``function(*args)`` in Nuke's main thread and return its result; its exception
    is raised here (whatever Nuke itself does with exceptions of such calls)."""
    import nuke

    if threading.current_thread() is threading.main_thread():
        return function(*args)
    answer = nuke.executeInMainThreadWithResult(_captured, args=(function,) + args)
    if not isinstance(answer, tuple) or len(answer) != 2:
        raise MattekitHostError(f"Nuke's main thread did not run {function.__name__}")
    ok, value = answer
    if not ok:
        raise value
    return value


def post_to_main_thread(function: Callable[..., Any], *args: Any) -> None:
    """Fire and forget (progress on the status line must not slow the render down)."""
    import nuke

    if threading.current_thread() is threading.main_thread():
        function(*args)
    else:
        nuke.executeInMainThread(function, args=args)


# -- step 2: the work ------------------------------------------------------------------------

def remove_results(work: str, node_name: str) -> int:
    """Delete one node's result files (not its inputs) from its work folder; how many."""
    removed = 0
    if not os.path.isdir(work):
        return 0
    pattern = re.compile(re.escape(node_name) + r"\.-?\d+\.exr$")
    for name in os.listdir(work):
        if pattern.match(name):
            try:
                os.remove(os.path.join(work, name))
                removed += 1
            except OSError:
                pass
    return removed


def reporter(node: nuke.Node, task: Any, post: MainCaller) -> Callable[..., None]:
    """``message(text, percent=None)``: progress on the ProgressTask (when there is one) and
    on the node's status line (through ``post``: the main thread)."""
    def message(text: str, percent: Optional[int] = None) -> None:
        if task is not None:
            task.setMessage(text)
            if percent is not None:
                task.setProgress(int(percent))
        post(set_status, node, text)

    return message


def run(node: nuke.Node, state: knobs.NodeState, first: int, last: int,
        main: MainCaller = call_here, post: Optional[MainCaller] = None,
        task: Any = None, cancel: Optional[threading.Event] = None,
        client: Optional[WorkerClient] = None) -> Outcome:
    """Process frames first..last of one node (steps 2 and 3); never raises for a failure
    of the node itself: the Outcome carries it, and it is already on the node."""
    post = post or main
    cancel = cancel if cancel is not None else TaskCancel(task)
    outcome = Outcome(node=state.full_name, first=first, last=last)
    started = time.monotonic()
    message = reporter(node, task, post)
    try:
        worker = client or WorkerClient()
        message("connecting to the mattekit worker", 0)
        cache_root = str(worker.hello()["cache_root"])
        plan = knobs.build_job(state, cache_root, first, last)
        outcome.result = plan.result
        outcome.warnings = list(plan.warnings)
        stored = str(state.values.get(knobs.SIGNATURE) or "")
        if stored and stored != plan.signature:
            remove_results(plan.work, state.name)  # made with other settings: never show them
        for write_name, pattern in plan.writes:
            if cancel.is_set():
                raise WorkerError(CANCELLED, "cancelled before the worker started")
            frames = plan.write_frames.get(write_name, list(range(first, last + 1)))
            message(f"rendering the {write_name[len('Write_'):]} input, frames "
                    f"{knobs.frames_summary(frames)}", 0)
            main(render_input_frames, node, write_name, pattern, frames,
                 write_name in plan.replace_writes)

        def on_event(event: Dict[str, Any]) -> None:
            kind = event.get("event")
            if kind == "queued":
                message(f"queued (position {event.get('position', 0)})", 0)
            elif kind == "started":
                message(f"started: {event.get('total')} frames", 0)
            elif kind == "frame":
                done, total = int(event.get("done", 0)), int(event.get("total") or 1)
                message(f"frame {event.get('frame')} ({done}/{total})",
                        int(100 * done / max(total, 1)))

        done = worker.process(plan.job, on_event=on_event, cancel=cancel)
        outcome.computed = [int(f) for f in done.get("computed", [])]
        outcome.cached = [int(f) for f in done.get("cached", [])]
        outcome.engine = str(done.get("engine") or "")
        outcome.seconds = time.monotonic() - started
        if task is not None:
            task.setProgress(100)
        main(_show_result, node, plan, outcome)
        for warning in plan.warnings:
            main(_tprint, f"mattekit: {state.full_name}: {warning}")
    except WorkerError as exc:
        outcome.error, outcome.code = exc.message, exc.code
    except MattekitHostError as exc:
        outcome.error, outcome.code = str(exc), type(exc).__name__
    except RuntimeError as exc:  # nuke.execute of an internal Write failed
        outcome.error, outcome.code = str(exc) or "the render failed", "render_error"
    except Exception as exc:  # noqa: BLE001 - a bug: keep the traceback, tell the user
        traceback.print_exc()
        outcome.error, outcome.code = f"{type(exc).__name__}: {exc}", "internal"
    if outcome.error is not None:
        outcome.seconds = time.monotonic() - started
        main(_report_failure, node, outcome)
    return outcome


def _tprint(text: str) -> None:
    import nuke

    nuke.tprint(text)


def process_now(node: nuke.Node, first: int, last: int,
                client: Optional[WorkerClient] = None) -> Outcome:
    """Process in the calling (main) thread: for ``nuke -t`` and precompute passes."""
    return run(node, snapshot(node), first, last, client=client)


def process_in_background(node: nuke.Node, first: int, last: int,
                          client: Optional[WorkerClient] = None) -> Optional[threading.Thread]:
    """Start a Process on a background thread with a ProgressTask; None if the node is
    already processing or its knobs are unusable (the status line says why)."""
    try:
        state = snapshot(node)
    except MattekitHostError as exc:
        _report_failure(node, Outcome(node=node.fullName(), first=first, last=last,
                                      error=str(exc), code=type(exc).__name__))
        return None
    return start_background(
        node, "process", f"processing frames {first}-{last}",
        lambda task: run(node, state, first, last, main=in_main_thread,
                         post=post_to_main_thread, task=task, client=client))


def start_background(node: nuke.Node, purpose: str, status: str,
                     work: Callable[[Any], Any]) -> Optional[threading.Thread]:
    """Run ``work(task)`` on a background thread with a ``nuke.ProgressTask`` named after the
    node; None (and the status says so) while the node is already busy with the same purpose
    (a Process, a Train)."""
    import nuke

    key = f"{node_key(node)}::{purpose}"
    full_name = node.fullName()
    with _RUNNING_LOCK:
        running = _RUNNING.get(key)
        if running is not None and running.is_alive():
            set_status(node, f"already {status.split()[0]}; wait for it or cancel it in the "
                             "progress bar")
            return None
        set_status(node, status)

        def body() -> None:
            task = nuke.ProgressTask(f"mattekit {full_name}")
            try:
                work(task)
            finally:
                del task
                with _RUNNING_LOCK:
                    if _RUNNING.get(key) is thread:
                        del _RUNNING[key]

        thread = threading.Thread(target=body, name=f"mattekit {full_name}", daemon=True)
        _RUNNING[key] = thread
    thread.start()
    return thread


def _this(node: Optional[nuke.Node]) -> nuke.Node:
    import nuke

    return node if node is not None else nuke.thisNode()


def process_frame(node: Optional[nuke.Node] = None) -> Optional[threading.Thread]:
    """The Process Frame button: the current frame."""
    import nuke

    node = _this(node)
    frame = int(nuke.frame())
    return _start(node, frame, frame)


def process_range(node: Optional[nuke.Node] = None) -> Optional[threading.Thread]:
    """The Process Range button: the node's frame range knob, else the project's range."""
    node = _this(node)
    try:
        first, last = node_range(node)
    except MattekitHostError as exc:
        _report_failure(node, Outcome(node=node.fullName(), first=1, last=0, error=str(exc),
                                      code=type(exc).__name__))
        return None
    return _start(node, first, last)


def _start(node: nuke.Node, first: int, last: int) -> Optional[threading.Thread]:
    import nuke

    if nuke.GUI:
        return process_in_background(node, first, last)
    process_now(node, first, last)
    return None


def process_selected() -> List[threading.Thread]:
    """Menu "Process selected": Process Range on every selected mattekit node."""
    import nuke

    threads = []
    chosen = [n for n in nuke.selectedNodes() if is_mattekit_node(n)]
    if not chosen:
        nuke.message("mattekit: select one or more mattekit nodes first")
        return []
    for node in chosen:
        thread = process_range(node)
        if thread is not None:
            threads.append(thread)
    return threads


def clear_cache(node: Optional[nuke.Node] = None) -> List[str]:
    """The Clear Cache button: delete this node's results folder (its hard links; the
    worker's content-addressed cache keeps its own entries) and unset its Result Read."""
    node = _this(node)
    folders = set()
    read = inner(node, knobs.RESULT_READ)
    current = str(_value(node, knobs.RESULT_FILE, "") or _value(read, "file", "") or "")
    if current:
        folders.add(os.path.dirname(current))
    try:
        cache_root = str(WorkerClient(spawn=False, request_timeout=10).hello()["cache_root"])
        state = snapshot(node)
        folders.add(knobs.work_folder(cache_root, state.values.get(knobs.CACHE_FOLDER),
                                      knobs.node_id(state.script, state.full_name)))
    except MattekitHostError:
        pass  # no worker running: the Read's folder is all we know
    removed = []
    for folder in sorted(folders):
        if _is_node_folder(folder) and os.path.isdir(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    for name in (knobs.RESULT_FILE, knobs.RESULT_COLORSPACE, knobs.SIGNATURE):
        knob = node.knob(name)
        if knob is not None:
            knob.setValue("")
    read["file"].setValue("")
    set_status(node, f"cache cleared ({len(removed)} folder(s) removed)")
    return removed


def _is_node_folder(folder: str) -> bool:
    """Only folders named like ``knobs.node_id`` are ever deleted."""
    return re.match(r"^[A-Za-z0-9_-]+-[0-9a-f]{12}$", os.path.basename(folder)) is not None
