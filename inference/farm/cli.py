"""mattekit farm: matte nodes as render-farm jobs (Open Job Description / Deadline Cloud, OpenCue).

    mattekit farm openjd --spec job.yaml --bundle sh010_bundle
    mattekit farm openjd video-matte --plate plate.####.exr --out matte.####.exr \\
        --frames 1001-1100 --chunk-size 10 --bundle sh010_bundle
    mattekit farm opencue --spec job.yaml --xml sh010.xml [--launch]

A job is a spec file (YAML/JSON: see mattekit.inference.farm.spec; the Nuke plugin writes one)
or one node given like `mattekit render`'s; options on the command line override the spec's.
The OCIO config defaults to $OCIO at submit time. Every matte task runs `mattekit render` on
a chunk of frames; re-running a task is a cache hit when the cache is shared.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from mattekit.inference.errors import MattekitError


def _add_job_arguments(parser: argparse.ArgumentParser, nodes: list[str]) -> None:
    from mattekit.inference.cli import _parse_param

    parser.add_argument("node", nargs="?", choices=nodes,
                        help="one node to render (else the nodes of --spec)")
    parser.add_argument("--spec", type=Path, help="farm job spec (YAML or JSON)")
    parser.add_argument("--name", help="job name (default: the spec's, else the node's)")
    parser.add_argument("--frames", help="frames: 1001-1100, 1001-1100x2, 1,5,9-12")
    parser.add_argument("--chunk-size", type=int, help="frames per task (default 10)")
    parser.add_argument("--target-runtime", type=int, metavar="SECONDS",
                        help="seconds per task the farm aims for (OpenJD; 0 = fixed chunks)")
    parser.add_argument("--ocio", dest="ocio_config", help="OCIO config for every task "
                                                           "(default: $OCIO now)")
    parser.add_argument("--cache-dir", help="mattekit cache shared by the farm hosts "
                                            "(set as $MATTEKIT_CACHE in every task)")
    parser.add_argument("--gpus", type=int, help="GPUs a matte task needs (default 1; 0: any "
                                                 "host)")
    parser.add_argument("--gpu-memory", type=float, dest="gpu_memory_gib", metavar="GIB",
                        help="GPU memory a matte task needs, in GiB")
    parser.add_argument("--mattekit", help="the mattekit command on the farm hosts")
    single = parser.add_argument_group("one node (as `mattekit render` takes it)")
    single.add_argument("--plate")
    single.add_argument("--out")
    single.add_argument("--clean-plate")
    single.add_argument("--mask")
    single.add_argument("--reference", help="parallax-matte's second view (or --param "
                                            "reference_offset=N)")
    single.add_argument("--engine")
    single.add_argument("--colorspace")
    single.add_argument("--device", choices=["auto", "cpu", "cuda"])
    single.add_argument("--param", action="append", type=_parse_param, default=[],
                        metavar="NAME=VALUE")
    comp = parser.add_argument_group("Nuke comp step (after every matte step)")
    comp.add_argument("--comp-script", help="the .nk script to render with `nuke -t`")
    comp.add_argument("--writes", help="comma-separated Write nodes (default: every enabled "
                                       "Write)")
    comp.add_argument("--nuke", help="the Nuke executable on the farm hosts (default nuke)")


def add_farm_parser(commands: Any) -> argparse.ArgumentParser:
    """Add `farm openjd|opencue` to the `mattekit` command's subparsers."""
    from mattekit.inference.engines.registry import load_manifest

    nodes = sorted(load_manifest().default_engines)
    parser = commands.add_parser("farm", help="write render-farm jobs (OpenJD bundle, OpenCue)",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    formats = parser.add_subparsers(dest="farm_format", required=True, metavar="FORMAT")
    openjd = formats.add_parser("openjd", help="an Open Job Description job bundle (Deadline "
                                               "Cloud: `deadline bundle submit DIR`)")
    _add_job_arguments(openjd, nodes)
    openjd.add_argument("--bundle", type=Path, required=True, help="folder to write the bundle")
    opencue = formats.add_parser("opencue", help="an OpenCue job (pyoutline; XML spec)")
    _add_job_arguments(opencue, nodes)
    opencue.add_argument("--xml", type=Path, help="write the job spec here (default: stdout)")
    opencue.add_argument("--launch", action="store_true",
                         help="submit it to the Cuebot $CUEBOT_HOSTS names (pycue)")
    opencue.add_argument("--show", default=os.environ.get("SHOW"), help="OpenCue show "
                                                                        "(default $SHOW)")
    opencue.add_argument("--shot", default=os.environ.get("SHOT"), help="shot (default $SHOT)")
    opencue.add_argument("--user", help="job owner (default: you)")
    return parser


def _node_name(node: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", node) if part)


def spec_data(args: argparse.Namespace) -> dict[str, Any]:
    """The spec as a mapping: the file's, with the command line's values over it."""
    import yaml

    data: dict[str, Any] = {}
    if args.spec is not None:
        try:
            loaded = yaml.safe_load(Path(args.spec).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise MattekitError(f"{args.spec}: cannot read the farm spec "
                                f"({getattr(exc, 'strerror', None) or exc})") from exc
        if not isinstance(loaded, dict):
            raise MattekitError(f"{args.spec}: a farm spec is a mapping with name, frames and "
                                "nodes")
        data.update(loaded)
    if args.node:
        node = {"name": _node_name(args.node), "node": args.node, "plate": args.plate,
                "out": args.out, "clean_plate": args.clean_plate, "mask": args.mask,
                "reference": args.reference,
                "engine": args.engine, "colorspace": args.colorspace,
                "device": args.device or "auto", "params": dict(args.param)}
        data["nodes"] = [*data.get("nodes", []), node]
        data.setdefault("name", node["name"])
    elif args.spec is None:
        raise MattekitError("name a node (e.g. video-matte --plate ... --out ...) or give "
                            "--spec")
    for key in ("name", "frames", "chunk_size", "target_runtime", "ocio_config", "cache_dir",
                "gpus", "gpu_memory_gib", "mattekit"):
        value = getattr(args, key)
        if value is not None:
            data[key] = value
    if not data.get("ocio_config") and os.environ.get("OCIO"):
        data["ocio_config"] = os.environ["OCIO"]
    if args.comp_script:
        data["comp"] = {**(data.get("comp") or {}), "script": args.comp_script}
    for key in ("writes", "nuke"):
        if getattr(args, key):
            if not data.get("comp"):
                raise MattekitError(f"--{key} is for the Nuke comp step: give --comp-script "
                                    "too (or a comp in the spec)")
            data["comp"][key] = getattr(args, key)
    return data


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> int:
    from mattekit.inference.farm.spec import job_from_dict

    data = spec_data(args)
    try:
        job = job_from_dict(data)
    except MattekitError as exc:
        where = f"{args.spec}: " if args.spec is not None else ""
        raise MattekitError(f"{where}{exc}") from None
    steps = len(job.nodes) + (1 if job.comp else 0)
    if args.farm_format == "openjd":
        from mattekit.inference.farm.openjd import write_bundle

        folder = write_bundle(job, args.bundle)
        print(f"wrote the OpenJD job bundle {folder} ({steps} step(s), frames {job.frames}, "
              f"chunks of {job.chunk_size}); submit it with `deadline bundle submit {folder}` "
              f"or run it here with `openjd run {folder}/template.yaml`")
        return 0
    from mattekit.inference.farm.opencue import launch, serialize

    xml = serialize(job, show=args.show, shot=args.shot, user=args.user)
    if args.xml is not None:
        try:
            _write_text(args.xml, xml)
        except OSError as exc:
            raise MattekitError(f"{args.xml}: cannot write the job spec "
                                f"({exc.strerror or exc})") from exc
        print(f"wrote the OpenCue job spec {args.xml} ({steps} layer(s))")
    elif not args.launch:
        sys.stdout.write(xml + "\n")
    if args.launch:
        names = launch(xml)
        print(f"launched on OpenCue: {', '.join(names) or '(no job name returned)'}")
    return 0

