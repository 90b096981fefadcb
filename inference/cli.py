"""mattekit: machine-learning matting for compositing, from the command line and on the farm.

    mattekit render video-matte --plate plate.####.exr --frames 1001-1020 --out matte.####.exr
    mattekit render video-matte --plate plate.####.exr --mask roto.####.exr --out matte.####.exr
    mattekit render parallax-matte --plate plate.####.exr --reference-offset 2 --out matte.####.exr
    mattekit render sparse-4k-refine --plate plate.####.exr --coarse rough.####.exr --out a.####.exr
    mattekit demo
    mattekit models [--cache-dir DIR]
    mattekit render video-matte --plate plate.####.exr --engine shot:shotA --out a.####.exr
    mattekit cache ls | gc | clear
    mattekit worker start | stop | status
    mattekit farm openjd | opencue --spec job.yaml ...
    mattekit train scribbles --plate plate.####.exr --alpha matte.####.exr --scribbles s.####.png
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

from mattekit.inference import __version__
from mattekit.inference.errors import MattekitError

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def _parse_param(text: str) -> tuple[str, Any]:
    """`name=value` with value read as YAML (numbers, booleans, strings)."""
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--param '{text}': expected name=value")
    name, value = text.split("=", 1)
    return name.strip(), yaml.safe_load(value)


def _gigabytes(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of gigabytes") from None
    if value < 0:
        raise argparse.ArgumentTypeError("a cache size cannot be negative")
    return int(value * 1024**3)


def _parsed_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    from mattekit.inference.engines.registry import load_manifest

    nodes = sorted(load_manifest().default_engines)
    parser = argparse.ArgumentParser(prog="mattekit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mattekit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    render = commands.add_parser("render", help="render a matte node over a plate sequence")
    render.add_argument("node", choices=nodes, help="which node to render")
    render.add_argument("--plate", required=True,
                        help="plate file or sequence (####, %%04d, $F4, @ patterns)")
    render.add_argument("--clean-plate", help="background-matte: the clean plate, a still or a "
                                              "sequence covering the range (same colour space "
                                              "as the plate)")
    render.add_argument("--mask", help="optional rough matte (Roto) naming the target: its "
                                       "alpha, else its first channel. video-matte: a sequence "
                                       "holds key frames only (e.g. just roto.1001.exr); a "
                                       "still is the key of the plate's first frame")
    second_view = render.add_mutually_exclusive_group()
    second_view.add_argument("--reference", help="parallax-matte: the second view, a still or a "
                                                 "sequence covering the range (same colour "
                                                 "space as the plate)")
    second_view.add_argument("--reference-offset", type=int, metavar="N",
                             help="parallax-matte: use the plate N frames away as the second "
                                  "view (default 2; -N where +N is past the end of the shot)")
    render.add_argument("--coarse", help="sparse-4k-refine: a coarse alpha from any node (its "
                                         "alpha, else its first channel), a still or a "
                                         "sequence, any resolution of the plate's aspect "
                                         "(default: RVM at coarse_size)")
    render.add_argument("--frames", help="frame range: 1001-1100, 1001-1100x2, 1,5,9-12 "
                                         "(default: every frame on disk)")
    render.add_argument("--out", help="output EXR file or sequence (default: results stay in "
                                      "the cache and their paths are printed)")
    render.add_argument("--colorspace", help="plate colour space: a name, alias or role of the "
                                             "OCIO config (default: scene_linear for EXR, sRGB "
                                             "for 8/16-bit images)")
    render.add_argument("--ocio", dest="ocio_config", help="OCIO config path or URI "
                                                           "(default: $OCIO, else mattekit's "
                                                           "pinned built-in config)")
    render.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    render.add_argument("--engine", help="engine name (default: the node's default engine); "
                                         "shot:NAME = the shot model NAME of the cache folder "
                                         "(mattekit train scribbles --name NAME)")
    render.add_argument("--param", action="append", type=_parse_param, default=[],
                        metavar="NAME=VALUE", help="engine parameter (repeatable)")
    render.add_argument("--compression", default="piz",
                        choices=["none", "rle", "zips", "zip", "piz", "pxr24", "dwaa", "dwab"])
    render.add_argument("--pixel-type", default="half", choices=["half", "float"])
    render.add_argument("--cache-dir", type=Path, help="cache folder (default: $MATTEKIT_CACHE "
                                                       "or the user cache folder)")
    render.add_argument("--no-cache", action="store_true",
                        help="compute every frame and write straight to --out")
    render.add_argument("--quiet", action="store_true", help="no progress bar")
    render.add_argument("--all-or-nothing", action="store_true",
                        help="on error, remove the outputs this render already wrote (a farm "
                             "task's chunk; the cache keeps them, so a retry is a cache hit)")

    demo = commands.add_parser("demo", help="render the bundled demo clip and a contact sheet")
    demo.add_argument("--out", type=Path, default=Path("mattekit-demo"),
                      help="folder for the demo's files (default: ./mattekit-demo)")
    demo.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")

    models = commands.add_parser("models", help="list engines and model files with licence and "
                                                "checksum, and the shot models of the cache")
    models.add_argument("--cache-dir", type=Path, help="cache folder whose shot models are "
                                                       "listed (default: $MATTEKIT_CACHE or the "
                                                       "user cache folder)")

    cache = commands.add_parser("cache", help="inspect or trim the result cache")
    cache.add_argument("action", choices=["ls", "gc", "clear"])
    cache.add_argument("--cache-dir", type=Path)
    cache.add_argument("--max-gb", type=_gigabytes,
                       help="with gc: evict least-recently-used entries down to this size "
                            "(default: $MATTEKIT_CACHE_MAX_GB, else 100)")

    evaluate = commands.add_parser(
        "eval", help="score predicted mattes against ground truth (MAD, MSE, Grad, Conn, dtSSD)",
        description="Score predicted alpha mattes against ground truth, per frame and on "
                    "average, in the units of the RVM/VideoMatte240K tables: MAD and MSE x1e3, "
                    "Grad and Conn /1e3, dtSSD x1e2 (2+ frames; the first frame counts 0 in "
                    "its mean, as in RVM's evaluation). EXR mattes are read from alpha (A), "
                    "PNG/TIFF from channel 0 (or their alpha channel).")
    evaluate.add_argument("--pred", required=True, help="predicted matte file or sequence")
    evaluate.add_argument("--gt", required=True, help="ground-truth matte file or sequence")
    evaluate.add_argument("--frames", help="frame range (default: every ground-truth frame "
                                           "on disk)")
    evaluate.add_argument("--trimap", help="trimap file or sequence: MAD, MSE, Grad and Conn "
                                           "only over its unknown region")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")

    from mattekit.inference.worker.cli import add_worker_parser

    add_worker_parser(commands)
    from mattekit.inference.farm.cli import add_farm_parser

    add_farm_parser(commands)
    from mattekit.inference.training.cli import add_train_parser

    add_train_parser(commands)
    return parser.parse_args(argv)


def _show_warning(message: Any, category: Any, filename: str, lineno: int,
                  file: Any = None, line: Optional[str] = None) -> None:
    print(f"mattekit: warning: {message}", file=sys.stderr)


def _render(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mattekit.inference.render import RenderJob, frame_count, render

    if args.out is None and args.no_cache:
        raise MattekitError("--no-cache needs --out: without the cache there is nowhere to "
                            "keep the results")
    params = dict(args.param)
    if args.reference_offset is not None:
        if args.node != "parallax-matte":
            raise MattekitError(f"--reference-offset is an option of parallax-matte, not "
                                f"{args.node}")
        params["reference_offset"] = args.reference_offset
    job = RenderJob(node=args.node, plate=args.plate, out=args.out, frames=args.frames,
                    clean_plate=args.clean_plate, mask=args.mask, reference=args.reference,
                    coarse=args.coarse,
                    engine=args.engine, colorspace=args.colorspace,
                    ocio_config=args.ocio_config, device=args.device, params=params,
                    compression=args.compression, pixel_type=args.pixel_type,
                    cache_root=args.cache_dir, use_cache=not args.no_cache,
                    all_or_nothing=args.all_or_nothing)
    with tqdm(total=frame_count(job), unit="frame", disable=args.quiet or None,
              desc=args.node, file=sys.stderr) as bar:
        report = render(job, on_frame=lambda _: bar.update(1))
    hits = len(report.cached)
    print(f"{args.node}: {len(report.frames)} frames ({len(report.frames) - hits} computed, "
          f"{hits} from cache), engine {report.engine}, colour space '{report.colorspace}'"
          + (f", {report.scene_cuts} scene cut(s)" if report.scene_cuts else ""))
    if args.out:
        print(f"wrote {args.out}")
    else:
        for result in report.frames:
            print(f"{result.frame}\t{result.path}")
    return 0


def _models(cache_dir: Optional[Path] = None) -> int:
    from mattekit.inference.engines.registry import load_manifest, model_path

    manifest = load_manifest()
    for name, engine in sorted(manifest.engines.items()):
        print(f"engine {name}  (node {engine.node}; input space '{engine.input_space}')")
        if engine.model is None and "checkpoint" in engine.defaults:
            print("  model: none shipped; runs a trained checkpoint "
                  "(--param checkpoint=PATH, needs the train extra)")
            continue
        if engine.model is None:
            print("  model: none (classical)")
            continue
        if "checkpoint" in engine.defaults:
            print("  runs a trained checkpoint (--param checkpoint=PATH, needs the train "
                  "extra); this model is its prior:")
        model = manifest.models[engine.model]
        try:
            where = str(model_path(model))
        except MattekitError as exc:
            where = f"NOT INSTALLED: {exc}"
        print(f"  model {model.model_id}: {model.description}")
        print(f"    licence {model.licence}; sha256 {model.sha256}")
        print(f"    file {where}")
    _shot_models(cache_dir, manifest)
    return 0


def _shot_models(cache_dir: Optional[Path], manifest: Any) -> None:
    """The shot models of the cache folder (engines shot:NAME), or why one cannot run."""
    from mattekit.inference.engines.shot import list_shot_models, shot_models_folder

    found = list_shot_models(cache_dir, manifest)
    print(f"shot models in {shot_models_folder(cache_dir)}: {len(found) or 'none'}")
    for name, spec in found:
        if isinstance(spec, MattekitError):
            print(f"engine {name}  UNUSABLE: {spec}")
            continue
        assert spec.shot is not None
        base = f"; base engine {spec.shot.base_engine}" if spec.shot.base_engine else ""
        print(f"engine {name}  (node {spec.node}; {spec.shot.kind}{base})")
        print(f"  file {spec.shot.path}; sha256 {spec.shot.sha256}")


def _cache(args: argparse.Namespace) -> int:
    from mattekit.inference.cache import FrameCache

    cache = FrameCache(args.cache_dir or FrameCache.default_root(),
                       max_bytes=FrameCache.default_max_bytes())
    if args.action == "ls":
        entries = sorted(cache.entries(), key=lambda e: e.last_used)
        for entry in entries:
            meta = entry.metadata
            print(f"{entry.key[:16]}  {entry.size / 1e6:9.1f} MB  {meta.get('node', '?')}"
                  f"  {meta.get('engine', '?')}  frame {meta.get('frame', '?')}")
        print(f"{len(entries)} entries, {cache.total_bytes() / 1e6:.1f} MB in {cache.root}")
    elif args.action == "gc":
        evicted = cache.gc(args.max_gb)
        print(f"evicted {len(evicted)} entries; {cache.total_bytes() / 1e6:.1f} MB left")
    else:
        print(f"removed {cache.clear()} entries from {cache.root}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `mattekit` command; errors are one line on stderr and exit 1."""
    args = _parsed_args(argv)
    warnings.showwarning = _show_warning
    try:
        if args.command == "render":
            return _render(args)
        if args.command == "demo":
            from mattekit.inference.demo import run_demo

            run_demo(args.out, device=args.device)
            return 0
        if args.command == "models":
            return _models(args.cache_dir)
        if args.command == "eval":
            from mattekit.inference.evaluate import run as run_eval

            return run_eval(args)
        if args.command == "worker":
            from mattekit.inference.worker.cli import run as run_worker

            return run_worker(args)
        if args.command == "farm":
            from mattekit.inference.farm.cli import run as run_farm

            return run_farm(args)
        if args.command == "train":
            from mattekit.inference.training.cli import run as run_train

            return run_train(args)
        return _cache(args)
    except MattekitError as exc:
        print(f"mattekit: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("mattekit: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
