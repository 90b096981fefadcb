"""Headless completeness: matte frames are computed BEFORE a render, and checked during it.

Nuke refuses a ``nuke.execute`` nested in another one, so a render never computes mattes
itself. Instead:

- ``precompute(writes, first, last)`` finds every mattekit node upstream of the Writes (walking
  ``dependencies()``, through Groups and Dots, upstream nodes first) and processes the frames
  each one lacks, in the calling thread (``nuke -t``: ``mattekit_precompute.py``; a render
  wrapper; the Script Editor);
- the render callbacks ``init.py`` registers only CHECK: ``before_render`` that every upstream
  node has results made with its current knobs (and, for a Write with a frame limit, every
  frame of it), ``before_frame_render`` that the frame being rendered exists for each of them.
  Otherwise they raise ``RuntimeError`` naming node and frames: never a black or stale frame.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence

from mattekit_host import knobs, nodes
from mattekit_host.client import WorkerClient
from mattekit_host.errors import MattekitHostError

if TYPE_CHECKING:
    import nuke

HOW_TO_FIX = ("process it (Process Range) or render through `nuke -t "
              "mattekit_precompute.py SCRIPT --frames A-B`")


class PrecomputeError(MattekitHostError):
    """Some mattekit node could not produce its frames; the message lists which and why."""


def upstream_mattekit_nodes(writes: Sequence[nuke.Node]) -> List[nuke.Node]:
    """Every mattekit node the Writes depend on, each once, upstream ones first."""
    import nuke

    mask = nuke.INPUTS | nuke.HIDDEN_INPUTS
    found: List[nuke.Node] = []
    seen: Dict[str, bool] = {}

    def inputs_of(node: nuke.Node) -> List[nuke.Node]:
        cls = node.Class()
        if cls == "Input":  # inside a Group: continue with the Group's own input
            parent = node.parent()
            number = node.knob("number")
            index = int(number.value()) if number is not None else 0
            upstream = parent.input(index) if parent is not None else None
            return [upstream] if upstream is not None else []
        if isinstance(node, nuke.Group) and not nodes.is_mattekit_node(node):
            outputs = [n for n in node.nodes() if n.Class() == "Output"]
            return outputs + list(node.dependencies(mask))
        return list(node.dependencies(mask))

    def visit(node: nuke.Node) -> None:
        key = node.fullName()
        if key in seen:
            return
        seen[key] = True
        for upstream in inputs_of(node):
            visit(upstream)
        if nodes.is_mattekit_node(node) and not _disabled(node):
            found.append(node)

    for write in writes:
        visit(write)
    return found


def _disabled(node: nuke.Node) -> bool:
    knob = node.knob("disable")
    return bool(knob.value()) if knob is not None else False


def result_pattern(node: nuke.Node) -> str:
    """The node's results pattern ('' before its first Process)."""
    knob = node.knob(knobs.RESULT_FILE)
    if knob is not None:
        return str(knob.value() or "")
    read = nodes.inner(node, knobs.RESULT_READ).knob("file")
    return str(read.value() or "") if read is not None else ""


def is_current(node: nuke.Node) -> bool:
    """True when the node has results and they were made with its current knobs."""
    stored = node.knob(knobs.SIGNATURE)
    if not result_pattern(node) or stored is None or not stored.value():
        return False
    try:
        return str(stored.value()) == knobs.signature(nodes.snapshot(node))
    except MattekitHostError:
        return False


def missing_frames(node: nuke.Node, frames: Sequence[int]) -> List[int]:
    """The frames among ``frames`` whose result file does not exist (all of them when the
    node has no results, or results made with other knob values)."""
    if not is_current(node):
        return list(frames)
    pattern = result_pattern(node)
    return [f for f in frames if not os.path.isfile(knobs.frame_path(pattern, f))]


def precompute(writes: Sequence[nuke.Node], first: int, last: int, force: bool = False,
               client: Optional[WorkerClient] = None,
               log: Optional[Callable[[str], None]] = None) -> List[nodes.Outcome]:
    """Compute the missing matte frames first..last of every mattekit node upstream of
    ``writes`` (or among them: a mattekit node counts too), in the calling thread, before they
    are rendered. A node whose plate goes
    through its internal Write is always processed (the host cannot see whether upstream
    pixels changed; the worker's cache makes unchanged frames a hit). Raises PrecomputeError
    naming every node that failed."""
    import nuke

    say = log or nuke.tprint
    frames = list(range(first, last + 1))
    outcomes: List[nodes.Outcome] = []
    for node in upstream_mattekit_nodes(writes):
        name = node.fullName()
        missing = missing_frames(node, frames)
        through_write = nodes.snapshot(node).plate_read is None
        if not (force or missing or through_write):
            say(f"mattekit: {name}: frames {first}-{last} are up to date")
            continue
        say(f"mattekit: {name}: computing frames {first}-{last}")
        outcome = nodes.process_now(node, first, last, client=client)
        outcomes.append(outcome)
        if not outcome.ok:
            raise PrecomputeError(f"{name}: frames {first}-{last}: {outcome.code}: "
                                  f"{outcome.error}")
        say(f"mattekit: {name}: {len(outcome.computed)} computed, {len(outcome.cached)} "
            "from cache")
    return outcomes


# -- render-time checks (registered by init.py) ----------------------------------------------

def check(writes: Sequence[nuke.Node], frames: Optional[Sequence[int]] = None) -> None:
    """Raise RuntimeError unless every mattekit node upstream of ``writes`` has current
    results (and, when ``frames`` is given, each of those frames)."""
    problems = []
    for node in upstream_mattekit_nodes(writes):
        name = node.fullName()
        try:
            if not result_pattern(node):
                problems.append(f"{name} has no results yet")
                continue
            if not is_current(node):
                problems.append(f"{name}: its knobs changed since its frames were computed")
                continue
            if frames:
                missing = missing_frames(node, frames)
                if missing:
                    problems.append(f"{name} is missing frames "
                                    f"{knobs.frames_summary(missing)} "
                                    f"({result_pattern(node)})")
        except MattekitHostError as exc:
            problems.append(f"{name}: {exc}")
    if problems:
        raise RuntimeError("mattekit: " + "; ".join(problems) + f"; {HOW_TO_FIX}")


def _limit_frames(write: nuke.Node) -> Optional[List[int]]:
    """The frames of a Write's own frame limit, when it has one on."""
    use_limit = write.knob("use_limit")
    if use_limit is None or not use_limit.value():
        return None
    first, last = write.knob("first"), write.knob("last")
    if first is None or last is None:
        return None
    return list(range(int(first.value()), int(last.value()) + 1))


def before_render() -> None:
    """beforeRender callback: the Write's upstream mattes exist and are current."""
    import nuke

    write = nuke.thisNode()
    check([write], _limit_frames(write))


def before_frame_render() -> None:
    """beforeFrameRender callback: the frame being rendered exists for every upstream node."""
    import nuke

    check([nuke.thisNode()], [int(nuke.frame())])


def register_callbacks() -> None:
    """Called by init.py in every mode (GUI, -x, -t): the render checks, and the restoring
    of each mattekit node's results when a script loads."""
    import nuke

    nuke.addBeforeRender(before_render, nodeClass="Write")
    nuke.addBeforeFrameRender(before_frame_render, nodeClass="Write")
    for gizmo in knobs.NODE_TYPES:
        nuke.addOnCreate(nodes.restore_result, nodeClass=gizmo)
