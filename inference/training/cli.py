"""`mattekit train scribbles|distill`: per-shot models, a scribble correction or a student.

    mattekit train scribbles --plate plate.####.exr --scribbles strokes.####.png \
        --frames 1001,1012 [--node video-matte] [--engine rvm-guided] [--alpha matte.####.exr] \
        [--mask roto.####.exr] [--clean-plate clean.exr] [--reference other.####.exr] \
        [--base ../shared/data/alphamatting-dev] [--steps 300] [--name shotA]

Reads, on each scribbled frame, the plate (converted to the engines' sRGB 0..1 like a render),
the alpha of the base engine (``--engine``, default the default engine of ``--node``, itself
video-matte by default): ``--alpha`` when given (that engine's matte: its A channel, else its
first), else the base engine renders the scribbled frames itself, through the render cache,
with the node's inputs (--mask, --clean-plate, --reference, --coarse, --param) and its warm-up;
the scribbles (red = subject, blue = background; rules in training/scribbles.py) and the
reference the correction sees: the clean plate (--clean-plate, else --reference) for a base
engine that takes one, the second view (--reference) for one that takes that, none otherwise.

Writes ``<cache>/shot-models/<name>.pt`` (an ``alphacorrection`` checkpoint whose extra names
its node, base engine and whether it saw a reference) and its loss curve beside it, and prints
the path. That file is the engine ``shot:<name>`` (engines/shot.py): `mattekit render <node>
--engine shot:<name>` runs the base engine, then the correction. With --base (a folder with
input/ and alpha/ images of the same names, e.g. alphamatting-dev) 80 % of every batch is base
composites of those foregrounds over this shot's own backgrounds (the reference frames, else the
plates); without it the network learns from the scribbles alone (a warning says so).

`mattekit train distill` trains a fast student on a teacher's alpha of the whole shot:

    mattekit train distill --plate plate.####.exr --frames 1001-1040 [--teacher shot:hero] \
        [--node background-matte] [--clean-plate clean.exr] [--mask ...] [--reference ...] \
        [--holdout 5] [--steps 400] [--crop 256] [--width 16] [--name hero-fast]

The teacher (--teacher: a manifest engine or a scribble-corrected ``shot:NAME``; default the
default engine of --node) renders --frames through the render cache with the node's inputs; a
`student` network (models/student) learns that alpha (training/distill.py) on every frame but
each --holdout-th, which are held back to measure agreement. Writes
``<cache>/shot-models/<name>.pt`` (extra.kind "student": its node, teacher, frames, agreement,
losses, seconds per frame) and its loss curve, prints the path and one line: agreement with the
teacher on the held-back frames (MSE x1e3, SAD /1e3) and seconds per frame of student and
teacher (each engine alone, on up to 4 held-back frames). `mattekit render <node> --engine
shot:<name>` then renders the student.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from mattekit.inference.errors import InputError, MattekitError


def add_train_parser(commands: Any) -> argparse.ArgumentParser:
    train = commands.add_parser("train", help="train a per-shot model: a scribble correction "
                                              "or a distilled student")
    kinds = train.add_subparsers(dest="train_kind", required=True, metavar="KIND")
    scribbles = kinds.add_parser("scribbles", help="fine-tune an alpha correction from "
                                                   "red (subject) / blue (background) strokes")
    scribbles.add_argument("--plate", required=True, help="plate file or sequence")
    scribbles.add_argument("--scribbles", required=True,
                           help="scribble images: red = foreground, blue = background")
    scribbles.add_argument("--frames", required=True, help="the scribbled frames (1001,1012)")
    scribbles.add_argument("--node", default="video-matte",
                           help="the node the shot model renders for (default: video-matte)")
    scribbles.add_argument("--engine", help="the base engine whose alpha is corrected (default: "
                                            "the node's default engine)")
    scribbles.add_argument("--alpha", help="the base engine's matte on the scribbled frames "
                                           "(default: the base engine renders them)")
    _add_node_inputs(scribbles, "base engine")
    scribbles.add_argument("--base", type=Path,
                           help="folder with input/ and alpha/ images for the 80 %% base "
                                "composites")
    scribbles.add_argument("--name", default="shot", help="checkpoint name (default: shot)")
    scribbles.add_argument("--steps", type=int, default=300)
    scribbles.add_argument("--crop", type=int, default=128, help="training crop size (px)")
    _add_run_options(scribbles)

    distill = kinds.add_parser("distill", help="train a fast student on a teacher's alpha of "
                                               "the shot")
    distill.add_argument("--plate", required=True, help="plate sequence")
    distill.add_argument("--frames", required=True, help="the shot's frames (1001-1040)")
    distill.add_argument("--teacher", help="the engine whose alpha the student learns, e.g. "
                                           "shot:NAME (default: the node's default engine)")
    distill.add_argument("--node", help="the node the student renders for (default: the "
                                        "teacher's, else video-matte)")
    _add_node_inputs(distill, "teacher")
    distill.add_argument("--holdout", type=int, default=5,
                         help="hold back every K-th frame to measure agreement (default: 5)")
    distill.add_argument("--name", default="student", help="checkpoint name (default: student)")
    distill.add_argument("--steps", type=int, default=400)
    distill.add_argument("--crop", type=int, default=256, help="training crop size (px)")
    distill.add_argument("--width", type=int, default=16, help="student width (channels at "
                                                                "1/2 resolution; default: 16)")
    _add_run_options(distill)
    return train


def _add_node_inputs(parser: argparse.ArgumentParser, engine: str) -> None:
    """The node's inputs and parameters, for the render of `engine`'s alpha."""
    from mattekit.inference.cli import _parse_param

    parser.add_argument("--mask", help=f"the node's mask input, for the {engine}'s render")
    parser.add_argument("--clean-plate", help="the node's clean plate (still or sequence): "
                                              f"the {engine}'s and the shot model's")
    parser.add_argument("--reference", help="clean plate or second view (file or sequence)")
    parser.add_argument("--coarse", help=f"the node's coarse alpha, for the {engine}")
    parser.add_argument("--param", action="append", type=_parse_param, default=[],
                        metavar="NAME=VALUE", help=f"{engine} parameter (repeatable)")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--colorspace", help="input colour space (default: scene_linear for "
                                             "EXR, sRGB for 8/16-bit files)")
    parser.add_argument("--ocio", dest="ocio_config", help="OCIO config path or URI (default: "
                                                           "$OCIO, else the pinned built-in "
                                                           "config)")
    parser.add_argument("--cache-dir", type=Path, help="cache folder (default: "
                                                       "$MATTEKIT_CACHE or the user cache)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


@dataclasses.dataclass(frozen=True)
class BaseEngine:
    """The engine a shot model corrects, and the node input its reference comes from."""

    node: str
    engine: str
    reference_input: Optional[str]   # "clean_plate", "reference" or None


def resolve_base(args: argparse.Namespace) -> BaseEngine:
    """The base engine of `train scribbles` (--engine, else --node's default); MattekitError
    when it is a shot model, belongs to another node, or when a reference is given to an
    engine that has none (the shot model would never get one at render)."""
    from mattekit.inference.engines.registry import SHOT_PREFIX

    if args.engine and args.engine.startswith(SHOT_PREFIX):
        raise MattekitError(f"--engine {args.engine}: the base engine of a shot model is one of "
                            "the manifest's (mattekit models lists them), not a shot model")
    return _node_engine(args.engine, args.node, args)


def resolve_teacher(args: argparse.Namespace) -> BaseEngine:
    """The teacher of `train distill`: --teacher (a manifest engine or a scribble-corrected
    ``shot:NAME``), else the default engine of --node (video-matte when neither is given);
    the node defaults to the teacher's. MattekitError for a student as teacher, a teacher of
    another node, or a reference the teacher takes no input for."""
    from mattekit.inference.engines.registry import SHOT_PREFIX, engine_spec, load_manifest
    from mattekit.inference.engines.shot import STUDENT, read_shot_model

    teacher = args.teacher
    if teacher and teacher.startswith(SHOT_PREFIX):
        model = read_shot_model(teacher[len(SHOT_PREFIX):], args.cache_dir)
        if model.kind == STUDENT:
            raise MattekitError(f"--teacher {teacher} is itself a student ({model.path}); "
                                "distil from a manifest engine or a scribble correction")
    node = args.node or (engine_spec(teacher, load_manifest(), args.cache_dir).node if teacher
                         else "video-matte")
    return _node_engine(teacher, node, args)


def _node_engine(engine: Optional[str], node: str, args: argparse.Namespace) -> BaseEngine:
    """`engine` (else `node`'s default) checked against `node` and the references given."""
    from mattekit.inference.engines.registry import default_engine, engine_spec, load_manifest

    manifest = load_manifest()
    spec = (engine_spec(engine, manifest, args.cache_dir) if engine
            else default_engine(node, manifest))
    if spec.node != node:
        raise MattekitError(f"engine '{spec.name}' belongs to node '{spec.node}', not "
                            f"'{node}'; give --node {spec.node}")
    reference_input = next((name for name in ("clean_plate", "reference")
                            if name in spec.inputs), None)
    if reference_input is None and (args.reference or args.clean_plate):
        raise MattekitError(f"engine '{spec.name}' ({node}) takes no clean plate or second "
                            "view, so a shot model trained with one could not get it at render: "
                            "leave out --reference / --clean-plate")
    return BaseEngine(node=node, engine=spec.name, reference_input=reference_input)


def reference_pattern(args: argparse.Namespace, base: BaseEngine) -> Optional[str]:
    """The file or sequence the correction sees as its reference (None: zeros)."""
    if base.reference_input == "clean_plate":
        return args.clean_plate or args.reference
    return args.reference if base.reference_input == "reference" else None


def base_render_job(args: argparse.Namespace, base: BaseEngine) -> Any:
    """The RenderJob of the base engine (or teacher) on --frames with the node's inputs."""
    from mattekit.inference.render import RenderJob

    clean = reference_pattern(args, base) if base.reference_input == "clean_plate" else None
    return RenderJob(node=base.node, plate=args.plate, frames=args.frames, engine=base.engine,
                     mask=args.mask, clean_plate=clean,
                     reference=args.reference if base.reference_input == "reference" else None,
                     coarse=args.coarse, colorspace=args.colorspace,
                     ocio_config=args.ocio_config, device=args.device,
                     params=dict(args.param), cache_root=args.cache_dir)


def base_alpha_paths(args: argparse.Namespace, base: BaseEngine) -> dict[int, Path]:
    """Frame -> the base engine's matte on each scribbled frame: --alpha's files, else a
    render of those frames with the node's inputs (through the cache: a shot already
    rendered costs nothing; a temporal engine warms up as in any render)."""
    from mattekit.inference.render import render
    from mattekit.inference.sequence import parse_frame_range, parse_pattern

    frames = parse_frame_range(args.frames)
    if getattr(args, "alpha", None):
        matte = parse_pattern(args.alpha)
        return {frame: matte.path_for(frame) for frame in frames}
    job = base_render_job(args, base)
    if not args.quiet:
        print(f"mattekit: rendering {base.engine} on frames {args.frames}", file=sys.stderr)
    report = render(job)
    return {result.frame: result.path for result in report.frames}


def base_layers(folder: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(foreground, alpha) pairs from folder/input/* and folder/alpha/* of the same names."""
    from mattekit.inference.training.dataset import read_layer

    images = sorted(p for p in (folder / "input").glob("*") if p.is_file())
    pairs = [(image, folder / "alpha" / image.name) for image in images
             if (folder / "alpha" / image.name).is_file()]
    if not pairs:
        raise InputError("holds no input/NAME with a matching alpha/NAME image", folder)
    try:
        return [read_layer(image, alpha) for image, alpha in pairs]
    except ValueError as exc:
        raise InputError(str(exc)) from None


def srgb_reader(args: argparse.Namespace, first: Path) -> Callable[[Path, int], np.ndarray]:
    """A reader of a frame's RGB in the engines' sRGB 0..1, as a render hands it to an sRGB
    engine: from the input space of `first` (the plate), or --colorspace."""
    from mattekit import ocio
    from mattekit.inference.plate import load_plate
    from mattekit.inference.render import default_input_space

    config = ocio.load_config(args.ocio_config)
    to_engine = ocio.Converter(config, default_input_space(config, first, args.colorspace),
                               ocio.ENGINE_SRGB)

    def read(path: Path, frame: int) -> np.ndarray:
        rgb = load_plate(path, frame).rgb
        assert rgb is not None  # load_plate refuses an image without RGB
        return np.clip(to_engine.apply(np.ascontiguousarray(rgb, np.float32)), 0.0, 1.0)

    return read


def shot_planes(args: argparse.Namespace, engine: BaseEngine, frames: list[int]
                ) -> Callable[[int], tuple[np.ndarray, Optional[np.ndarray], np.ndarray]]:
    """A reader of a frame's (plate, reference or None, engine alpha) as a shot model sees
    them: plate and reference in the engines' sRGB 0..1, the alpha of `engine` on `frames`
    (--alpha's files, else rendered through the cache)."""
    from mattekit.inference.exrio import read_image
    from mattekit.inference.render import mask_of
    from mattekit.inference.sequence import parse_pattern

    plate = parse_pattern(args.plate)
    reference_text = reference_pattern(args, engine)
    reference = parse_pattern(reference_text) if reference_text else None
    engine_rgb = srgb_reader(args, plate.path_for(frames[0]))
    alphas = base_alpha_paths(args, engine)

    def read(frame: int) -> tuple[np.ndarray, Optional[np.ndarray], np.ndarray]:
        alpha_path = alphas[frame]
        return (engine_rgb(plate.path_for(frame), frame),
                engine_rgb(reference.path_for(frame), frame) if reference else None,
                mask_of(read_image(alpha_path, frame), alpha_path, frame))

    return read


def run(args: argparse.Namespace) -> int:
    """`mattekit train KIND`: the scribble correction or the distilled student."""
    if args.train_kind == "distill":
        return run_distill(args)
    return run_scribbles(args)


def run_scribbles(args: argparse.Namespace) -> int:
    from mattekit.inference.engines.shot import check_name, shot_extra, shot_model_path
    from mattekit.inference.models import build_model
    from mattekit.inference.models.checkpoint import save_checkpoint
    from mattekit.inference.sequence import parse_frame_range, parse_pattern
    from mattekit.inference.training.curve import write_loss_curve
    from mattekit.inference.training.dataset import AugmentOptions, CompositeDataset
    from mattekit.inference.training.scribbles import (
        FinetuneConfig,
        ScribbledFrame,
        finetune_scribbles,
        read_scribbles,
    )

    if args.steps < 1:
        raise InputError(f"--steps must be at least 1, not {args.steps}")
    name = check_name(args.name)
    frames = parse_frame_range(args.frames)
    strokes = parse_pattern(args.scribbles)
    base_engine = resolve_base(args)
    planes = shot_planes(args, base_engine, frames)
    shot = []
    for frame in frames:
        scribble_path = strokes.path_for(frame)
        shot.append(ScribbledFrame(*planes(frame), scribbles=read_scribbles(scribble_path, frame),
                                   name=f"{scribble_path}, frame {frame}"))
    height, width = shot[0].plate.shape[:2]
    crop = (min(args.crop, height), min(args.crop, width))
    base: Optional[CompositeDataset] = None
    if args.base is not None:
        backgrounds = [item.reference if item.reference is not None else item.plate
                       for item in shot]
        base = CompositeDataset(base_layers(args.base), backgrounds, crop, seed=args.seed,
                                options=AugmentOptions(noise_sigma=0.02))
    else:
        warnings.warn("no --base: fine-tuning on the scribbles alone (no 80 % base composites "
                      "to keep the rest of the matte as it was)", stacklevel=1)
    model = build_model("alphacorrection", seed=args.seed)
    losses = finetune_scribbles(model, shot, base,
                                FinetuneConfig(steps=args.steps, crop=crop, seed=args.seed),
                                device=args.device, progress=not args.quiet)
    path = save_checkpoint(model.cpu(), shot_model_path(name, args.cache_dir), extra=shot_extra(
        base_engine.node, base_engine.engine, bool(reference_pattern(args, base_engine)),
        frames=list(frames),
        steps=args.steps, scribbled_pixels=sum(item.scribbles.count for item in shot),
        base=str(args.base) if args.base else "", base_params=dict(args.param),
        losses=losses))
    write_loss_curve(losses, path.with_name(f"{name}.loss.png"))
    print(path)
    return 0


class TimedEngine:
    """An engine whose `process` calls are timed (`seconds`); everything else is the
    engine's own."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.seconds: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def process(self, src: np.ndarray, inputs: Any = None) -> Any:
        started = time.perf_counter()
        result = self.engine.process(src, inputs)
        self.seconds.append(time.perf_counter() - started)
        return result


def engine_seconds(job: Any, frames: list[int]) -> float:
    """Seconds per frame of the job's engine alone (no file I/O) over `frames`, rendered
    without the cache into a scratch folder: the median after the first frame (which pays
    for lazy set-up). A temporal engine renders no warm-up frames for this."""
    import tempfile

    from mattekit.inference.engines.registry import create_engine, engine_spec, load_manifest
    from mattekit.inference.render import render

    manifest = load_manifest()
    spec = engine_spec(job.engine, manifest, job.cache_root)
    params = {k: v for k, v in job.params.items() if k in spec.defaults}
    if "warmup_frames" in spec.defaults:
        params["warmup_frames"] = 0
    engine = TimedEngine(create_engine(job.engine, job.device, params, manifest, job.cache_root))
    with tempfile.TemporaryDirectory(prefix="mattekit-timing-") as folder:
        render(dataclasses.replace(job, frames=",".join(str(f) for f in frames), params=params,
                                   out=str(Path(folder) / "t.####.exr"), use_cache=False),
               engine=engine)
    timed = engine.seconds[1:] or engine.seconds
    return float(np.median(timed))


def run_distill(args: argparse.Namespace) -> int:
    """`mattekit train distill`: the teacher renders the shot (through the cache), a student
    learns its alpha on the frames not held back, and lands as ``shot:NAME``."""
    from mattekit.inference.engines.registry import SHOT_PREFIX
    from mattekit.inference.engines.shot import STUDENT, check_name, shot_model_path
    from mattekit.inference.models import build_model
    from mattekit.inference.models.checkpoint import save_checkpoint
    from mattekit.inference.sequence import parse_frame_range, parse_pattern
    from mattekit.inference.training.curve import write_loss_curve
    from mattekit.inference.training.distill import (
        DistillConfig,
        DistillFrame,
        distill_student,
        holdout_split,
        mean_agreement,
        predict_student,
    )

    for option, value, least in (("--steps", args.steps, 1), ("--crop", args.crop, 16),
                                 ("--width", args.width, 1)):
        if value < least:
            raise InputError(f"{option} must be at least {least}, not {value}")
    name = check_name(args.name)
    frames = parse_frame_range(args.frames)
    training, held = holdout_split(frames, args.holdout)
    teacher = resolve_teacher(args)
    plate = parse_pattern(args.plate)
    planes = shot_planes(args, teacher, frames)
    shot = {frame: DistillFrame(*planes(frame), name=f"{plate.path_for(frame)}, frame {frame}")
            for frame in frames}
    model = build_model("student", {"width": args.width}, seed=args.seed)
    losses = distill_student(model, [shot[f] for f in training],
                             DistillConfig(steps=args.steps, crop=args.crop, seed=args.seed),
                             device=args.device, progress=not args.quiet)
    agreement = mean_agreement([(predict_student(model, shot[f].plate, shot[f].reference),
                                 shot[f].alpha) for f in held])
    extra = {"kind": STUDENT, "node": teacher.node, "teacher": teacher.engine,
             "with_reference": bool(reference_pattern(args, teacher)), "frames": list(frames),
             "holdout": args.holdout, "held_back": held, "steps": args.steps,
             "teacher_params": dict(args.param), "agreement": agreement, "losses": losses}
    path = save_checkpoint(model.cpu(), shot_model_path(name, args.cache_dir), extra=extra)
    write_loss_curve(losses, path.with_name(f"{name}.loss.png"))
    # speed: both engines alone, on the held-back frames (the student as `shot:NAME` renders)
    job = base_render_job(args, teacher)
    timing = held[:4]
    speed = {"teacher": engine_seconds(job, timing),
             "student": engine_seconds(dataclasses.replace(job, engine=SHOT_PREFIX + name),
                                       timing)}
    path = save_checkpoint(model, path, extra={**extra, "seconds_per_frame": speed})
    print(path)
    print(f"held-back frames {','.join(str(f) for f in held)}: agreement with {teacher.engine} "
          f"MSE x1e3 {agreement['mse']:.3f}, SAD /1e3 {agreement['sad']:.3f}; seconds per frame "
          f"student {speed['student']:.3f}, teacher {speed['teacher']:.3f} "
          f"({speed['teacher'] / max(speed['student'], 1e-9):.1f}x)")
    return 0
