"""Compute the mattes of a Nuke script, then render its Writes (the `nuke -t` entry point).

    nuke -t mattekit_precompute.py SCRIPT.nk [--frames A-B] [--writes W1,W2] [--no-render]
    nuke -t mattekit_precompute.py SCRIPT.nk --frames A-B --nodes BackgroundMatte1 --no-render

Every mattekit node upstream of the Writes gets its missing frames from the mattekit worker
first (internal Writes + worker), then the Writes render: a farm task needs nothing else.
Without --frames the script's own range is used; without --writes every enabled Write at the
top level of the script (none when --nodes names the mattekit nodes to compute: a farm matte
task whose inputs only Nuke can render). Errors go to stderr and the exit status is 1.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, List, Optional, Sequence

if TYPE_CHECKING:
    import nuke

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # `nuke -t` runs this file by path: find mattekit_host beside it
    sys.path.insert(0, _HERE)


def _parsed_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mattekit_precompute.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("script", help="the .nk script to render")
    parser.add_argument("--frames", help="first-last (default: the script's frame range)")
    parser.add_argument("--writes", help="comma-separated Write node names (default: every "
                                         "enabled top-level Write)")
    parser.add_argument("--nodes", help="comma-separated mattekit nodes to compute too (with "
                                        "their upstream mattekit nodes)")
    parser.add_argument("--force", action="store_true",
                        help="process every upstream mattekit node even if up to date")
    parser.add_argument("--no-render", action="store_true",
                        help="only compute the mattes; do not render the Writes")
    return parser.parse_args(argv)


def _named_nodes(names: Optional[str]) -> List[nuke.Node]:
    """The mattekit nodes --nodes names (full names, e.g. Group1.VideoMatte1)."""
    import nuke
    from mattekit_host import nodes

    found = []
    for name in (n.strip() for n in (names or "").split(",") if n.strip()):
        node = nuke.toNode(name)
        if node is None or not nodes.is_mattekit_node(node):
            raise ValueError(f"--nodes: no mattekit node named '{name}' in the script")
        found.append(node)
    return found


def _writes(names: Optional[str], required: bool = True) -> List[nuke.Node]:
    import nuke

    if not required and not names:
        return []
    if names:
        found = []
        for name in (n.strip() for n in names.split(",") if n.strip()):
            node = nuke.toNode(name)
            if node is None or node.Class() != "Write":
                raise ValueError(f"--writes: no Write node named '{name}' in the script")
            found.append(node)
        return found
    found = [n for n in nuke.allNodes("Write")
             if not (n.knob("disable") is not None and n["disable"].value())]
    if not found:
        raise ValueError("the script has no enabled Write node; name one with --writes")
    return found


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parsed_args(argv)
    import nuke
    from mattekit_host import knobs, nodes, precompute
    from mattekit_host.errors import MattekitHostError

    try:
        if not os.path.isfile(args.script):
            raise ValueError(f"{args.script}: no such script")
        nuke.scriptOpen(args.script)
        named = _named_nodes(args.nodes)
        writes = _writes(args.writes, required=not named)
        first, last = knobs.parse_frame_range(args.frames or "", nodes.project_range())
        precompute.precompute([*writes, *named], first, last, force=args.force)
        if not args.no_render:
            for write in writes:
                nuke.tprint(f"mattekit: rendering {write.fullName()} frames {first}-{last}")
                nuke.execute(write, first, last, 1)
    except (MattekitHostError, ValueError, RuntimeError) as exc:
        print(f"mattekit_precompute: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
