"""The "Shot model" tab: Train a node's shot model from scribbles, then render with it.

The user paints red (subject) and blue (background) strokes on a few frames (a RotoPaint into
the node's Scribbles input), lists those frames, and presses Train. Like Process, it never
blocks Nuke's UI thread:

1. main thread: read the node's knobs and inputs (``nodes.snapshot``);
2. a background thread with a ``nuke.ProgressTask``: ask the worker for its cache root, render
   the Scribbles input on the scribbled frames and the inputs the node's engine needs (plate,
   mask, clean plate, reference, coarse: the internal Writes, in the main thread, exactly as a
   Process of those frames would), then run ``mattekit train scribbles`` with the worker's
   Python (``$MATTEKIT_PYTHON -m mattekit.inference.cli``): the node's engine renders its own
   alpha on those frames and the correction is fine-tuned. Its progress line goes to the node's
   status (and the ProgressTask; cancelling it stops the training);
3. main thread: the outcome on the status line. The shot model is
   ``<worker cache>/shot-models/<name>.pt``; with "Use shot model" on, the node's jobs name the
   engine ``shot:<name>`` and the worker runs the node's engine, then the correction. A Train of
   a node that uses its shot model forgets its results (they were made with the old one).

``train_plan`` is pure (no Nuke, no worker): the writes and the command line.
"""
from __future__ import annotations

import dataclasses
import json
import os
import queue
import re
import subprocess
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from mattekit_host import knobs, nodes, paths
from mattekit_host.client import WorkerClient, worker_environment
from mattekit_host.errors import MattekitHostError, WorkerError

if TYPE_CHECKING:
    import nuke

CLI = ("-m", "mattekit.inference.cli")
SHOT_MODELS = "shot-models"        # the folder of the worker's cache root (engines/shot.py)
#: call(function, *args) -> result, in Nuke's main thread.
MainCaller = Callable[..., Any]


class TrainError(MattekitHostError):
    """The training could not start or failed; the message says why."""


@dataclass
class TrainPlan:
    """One Train: the inputs the host renders and the `mattekit` arguments that train."""

    name: str
    frames: List[int]
    args: List[str]                                   # after ``python -m mattekit.inference.cli``
    model_path: str                                   # the shot model it writes
    writes: List[Tuple[str, str]] = field(default_factory=list)   # (internal Write, pattern)
    write_frames: Dict[str, List[int]] = field(default_factory=dict)
    replace_writes: List[str] = field(default_factory=list)


def scribbled_frames(values: Dict[str, Any]) -> List[int]:
    """The ``shot_frames`` knob as frames; KnobError when it lists none."""
    text = str(values.get(knobs.SHOT_FRAMES) or "").strip()
    frames = knobs.parse_frame_list(text) if text else []
    if not frames:
        raise knobs.KnobError(f"knob '{knobs.SHOT_FRAMES}' is empty: list the frames the "
                              "Scribbles input is painted on, e.g. 1001, 1012")
    return frames


def _steps(values: Dict[str, Any]) -> int:
    raw = values.get(knobs.SHOT_STEPS)
    try:
        steps = int(raw if raw not in (None, "") else knobs.DEFAULT_SHOT_STEPS)
    except (TypeError, ValueError):
        steps = 0
    if steps < 1:
        raise knobs.KnobError(f"knob '{knobs.SHOT_STEPS}' is {raw!r}; give the fine-tuning "
                              "steps, e.g. 200")
    return steps


def train_plan(state: knobs.NodeState, cache_root: str) -> TrainPlan:
    """What Train does for this node: the inputs rendered on the scribbled frames (and the
    frames the engine needs before them), and `mattekit train scribbles` on them, training the
    Engine knob's engine's correction into ``<cache_root>/shot-models/<name>.pt``."""
    if knobs.SCRIBBLES not in state.connected:
        raise knobs.KnobError(f"{state.full_name}: the Scribbles input is not connected; "
                              "connect a RotoPaint with red (subject) and blue (background) "
                              "strokes on the frames listed in Scribbled frames")
    name = knobs.shot_model_name(state.values, state.name)
    frames = scribbled_frames(state.values)
    kind = knobs.node_type(state.kind)
    base_values = dict(state.values)
    base_values[knobs.USE_SHOT] = False  # the base engine renders the alpha it corrects
    base_state = dataclasses.replace(state, values=base_values)
    job_plan = knobs.build_job(base_state, cache_root, frames[0], frames[-1])
    job = job_plan.job
    # as a Process of frames first..last renders them (a temporal engine's warm-up included)
    write_frames = {write: job_plan.write_frames.get(write, list(range(frames[0],
                                                                        frames[-1] + 1)))
                    for write, _ in job_plan.writes}
    if not kind.temporal:  # a per-frame engine needs the scribbled frames only
        offset = knobs.OFFSET_REFERENCE.get(kind.worker_node)
        if offset is not None and offset[0] not in state.connected:
            needed = sorted({f for frame in frames for f in knobs.offset_plate_frames(
                base_state, frame, frame, offset[1])})
        else:
            needed = list(frames)
        write_frames = {write: needed for write, _ in job_plan.writes}
    work = job_plan.work
    scribbles = knobs.input_pattern(work, knobs.SCRIBBLES)
    writes = list(job_plan.writes) + [(kind.internal_write(knobs.SCRIBBLES), scribbles)]
    write_frames[kind.internal_write(knobs.SCRIBBLES)] = list(frames)
    args = ["train", "scribbles", "--node", kind.worker_node, "--plate", job["plate"],
            "--scribbles", scribbles, "--frames", ",".join(str(f) for f in frames),
            "--name", name, "--steps", str(_steps(state.values)), "--cache-dir", cache_root,
            "--device", job["device"]]
    if job.get("engine"):
        args += ["--engine", job["engine"]]
    for field_name in ("mask", "clean_plate", "reference", "coarse"):
        if job.get(field_name):
            args += ["--" + field_name.replace("_", "-"), job[field_name]]
    if job.get("colorspace"):
        args += ["--colorspace", job["colorspace"]]
    if job.get("ocio_config"):
        args += ["--ocio", job["ocio_config"]]
    for param, value in sorted(job["params"].items()):
        args += ["--param", f"{param}={json.dumps(value)}"]
    return TrainPlan(name=name, frames=frames, args=args,
                     model_path=os.path.join(cache_root, SHOT_MODELS, f"{name}.pt"),
                     writes=writes, write_frames=write_frames,
                     replace_writes=list(job_plan.replace_writes)
                     + [kind.internal_write(knobs.SCRIBBLES)])


# -- running it ----------------------------------------------------------------------------------

def _lines(stream: IO[bytes], on_line: Callable[[str], None]) -> None:
    """Call ``on_line`` with each line of ``stream`` (a progress bar's \\r updates count as
    lines), until it ends."""
    pending = b""
    while True:
        chunk = stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096)
        if not chunk:
            break
        pending += chunk
        parts = re.split(rb"[\r\n]", pending)
        pending = parts.pop()
        for part in parts:
            text = part.decode("utf-8", "replace").strip()
            if text:
                on_line(text)
    text = pending.decode("utf-8", "replace").strip()
    if text:
        on_line(text)


def run_training(args: List[str], on_line: Callable[[str], None],
                 cancel: Optional[threading.Event] = None,
                 home: Optional[Path] = None) -> str:
    """Run ``$MATTEKIT_PYTHON -m mattekit.inference.cli ARGS``; its stderr lines go to
    ``on_line`` as they come, in the calling thread; returns the last line of its stdout (the
    shot model's path). TrainError with the command's own error line when it fails;
    WorkerError(cancelled) when ``cancel`` is set (the process is terminated)."""
    command = [paths.worker_python(), *CLI, *args]
    environment = worker_environment(paths.mattekit_home() if home is None else home)
    try:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, env=environment)
    except OSError as exc:
        raise TrainError(f"mattekit train could not start ({exc.strerror or exc}): check "
                         f"${paths.PYTHON_ENV}") from exc
    errors: List[str] = []
    lines: "queue.Queue[str]" = queue.Queue()  # read on a thread, handed on in this one

    def drain() -> None:
        while True:
            try:
                line = lines.get_nowait()
            except queue.Empty:
                return
            if line.startswith("mattekit: error:"):
                errors.append(line[len("mattekit: error:"):].strip())
            on_line(line)

    assert process.stderr is not None and process.stdout is not None
    reader = threading.Thread(target=_lines, args=(process.stderr, lines.put), daemon=True,
                              name="mattekit train output")
    reader.start()
    while process.poll() is None:
        drain()
        if cancel is not None and cancel.is_set():
            process.terminate()
            process.wait(timeout=30)
            reader.join(timeout=5)
            raise WorkerError(nodes.CANCELLED, "training cancelled")
        time.sleep(0.2)
    reader.join(timeout=5)
    drain()
    output = process.stdout.read().decode("utf-8", "replace").strip().splitlines()
    if process.returncode != 0:
        raise TrainError(errors[-1] if errors else
                         f"mattekit train scribbles ended with exit status {process.returncode}")
    return output[-1] if output else ""


def _trained(node: nuke.Node, plan: TrainPlan, path: str, seconds: float) -> None:
    """Main thread: say so; a node that renders with this shot model forgets its results."""
    use = node.knob(knobs.USE_SHOT)
    if use is not None and use.value():
        knob = node.knob(knobs.SIGNATURE)
        if knob is not None:
            knob.setValue("")  # made with the previous shot model: Process again
        after = "Process again to render with it"
    else:
        after = "turn on Use shot model to render with it"
    nodes.set_status(node, f"shot model {plan.name} trained on frames "
                           f"{knobs.frames_summary(plan.frames)} in {seconds:.0f} s "
                           f"({path or plan.model_path}); {after}")


def _train_failed(node: nuke.Node, full_name: str, code: str, text: str) -> None:
    import nuke

    what = "training cancelled" if code == nodes.CANCELLED else f"training failed ({code})"
    try:
        nodes.set_status(node, f"{what}: {text}")
    except ValueError:  # the node was deleted meanwhile
        pass
    nuke.tprint(f"mattekit: {full_name}: {what}: {text}")


def train(node: nuke.Node, state: knobs.NodeState, main: MainCaller = nodes.call_here,
          post: Optional[MainCaller] = None, task: Any = None,
          cancel: Optional[threading.Event] = None,
          client: Optional[WorkerClient] = None) -> Optional[str]:
    """Steps 2 and 3 of a Train; the shot model's path, or None when it failed (the node's
    status says why)."""
    cancel = cancel if cancel is not None else nodes.TaskCancel(task)
    started = time.monotonic()

    message = nodes.reporter(node, task, post or main)
    try:
        worker = client or WorkerClient()
        message("connecting to the mattekit worker", 0)
        hello = worker.hello()
        plan = train_plan(state, str(hello["cache_root"]))
        for write_name, pattern in plan.writes:
            if cancel.is_set():
                raise WorkerError(nodes.CANCELLED, "cancelled before the training started")
            frames = plan.write_frames.get(write_name, plan.frames)
            message(f"rendering the {write_name[len('Write_'):]} input, frames "
                    f"{knobs.frames_summary(frames)}", 0)
            main(nodes.render_input_frames, node, write_name, pattern, frames,
                 write_name in plan.replace_writes)
        message(f"training shot model {plan.name} on frames {knobs.frames_summary(plan.frames)}",
                0)
        path = run_training(plan.args, lambda line: message(f"training {plan.name}: {line}"),
                            cancel, home=worker.home)
        if task is not None:
            task.setProgress(100)
        main(_trained, node, plan, path, time.monotonic() - started)
        return path or plan.model_path
    except WorkerError as exc:
        main(_train_failed, node, state.full_name, exc.code, exc.message)
    except MattekitHostError as exc:
        main(_train_failed, node, state.full_name, type(exc).__name__, str(exc))
    except RuntimeError as exc:  # nuke.execute of an internal Write failed
        main(_train_failed, node, state.full_name, "render_error", str(exc) or "render failed")
    except Exception as exc:  # noqa: BLE001 - a bug: keep the traceback, tell the user
        traceback.print_exc()
        main(_train_failed, node, state.full_name, "internal", f"{type(exc).__name__}: {exc}")
    return None


def train_shot(node: Optional[nuke.Node] = None,
               client: Optional[WorkerClient] = None) -> Optional[threading.Thread]:
    """The Train button: in the GUI on a background thread (returned), headless in this one."""
    import nuke

    node = node if node is not None else nuke.thisNode()
    try:
        state = nodes.snapshot(node)
    except MattekitHostError as exc:
        _train_failed(node, node.fullName(), type(exc).__name__, str(exc))
        return None
    if not nuke.GUI:
        train(node, state, client=client)
        return None
    return nodes.start_background(
        node, "train", f"training shot model of {state.full_name}",
        lambda task: train(node, state, main=nodes.in_main_thread,
                           post=nodes.post_to_main_thread, task=task, client=client))
