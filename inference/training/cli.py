"""`mattekit train scribbles`: fine-tune a shot's alpha-correction network from scribbles.

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
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mattekit.inference.errors import InputError, MattekitError


def add_train_parser(commands: Any) -> argparse.ArgumentParser:
    from mattekit.inference.cli import _parse_param

    train = commands.add_parser("train", help="fine-tune a per-shot model from scribbles")
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
    scribbles.add_argument("--mask", help="the node's mask input, for the base engine's render")
    scribbles.add_argument("--clean-plate", help="the node's clean plate (still or sequence): "
                                                 "the base engine's and the correction's")
    scribbles.add_argument("--reference", help="clean plate or second view (file or sequence)")
    scribbles.add_argument("--coarse", help="the node's coarse alpha, for the base engine")
    scribbles.add_argument("--param", action="append", type=_parse_param, default=[],
                           metavar="NAME=VALUE", help="base engine parameter (repeatable)")
    scribbles.add_argument("--base", type=Path,
                           help="folder with input/ and alpha/ images for the 80 %% base "
                                "composites")
    scribbles.add_argument("--name", default="shot", help="checkpoint name (default: shot)")
    scribbles.add_argument("--steps", type=int, default=300)
    scribbles.add_argument("--crop", type=int, default=128, help="training crop size (px)")
    scribbles.add_argument("--seed", type=int, default=0)
    scribbles.add_argument("--colorspace", help="input colour space (default: scene_linear for "
                                                "EXR, sRGB for 8/16-bit files)")
    scribbles.add_argument("--ocio", dest="ocio_config", help="OCIO config path or URI "
                                                              "(default: $OCIO, else the "
                                                              "pinned built-in config)")
    scribbles.add_argument("--cache-dir", type=Path, help="cache folder (default: "
                                                          "$MATTEKIT_CACHE or the user cache)")
    scribbles.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    scribbles.add_argument("--quiet", action="store_true", help="no progress bar")
    return train


@dataclasses.dataclass(frozen=True)
class BaseEngine:
    """The engine a shot model corrects, and the node input its reference comes from."""

    node: str
    engine: str
    reference_input: Optional[str]   # "clean_plate", "reference" or None


def resolve_base(args: argparse.Namespace) -> BaseEngine:
    """The base engine of `train scribbles` (--engine, else --node's default); MattekitError
    when it belongs to another node, or when a reference is given to an engine that has none
    (the shot model would never get one at render)."""
    from mattekit.inference.engines.registry import (
        SHOT_PREFIX,
        default_engine,
        engine_spec,
        load_manifest,
    )

    manifest = load_manifest()
    if args.engine and args.engine.startswith(SHOT_PREFIX):
        raise MattekitError(f"--engine {args.engine}: the base engine of a shot model is one of "
                            "the manifest's (mattekit models lists them), not a shot model")
    spec = (engine_spec(args.engine, manifest) if args.engine
            else default_engine(args.node, manifest))
    if spec.node != args.node:
        raise MattekitError(f"engine '{spec.name}' belongs to node '{spec.node}', not "
                            f"'{args.node}'; give --node {spec.node}")
    reference_input = next((name for name in ("clean_plate", "reference")
                            if name in spec.inputs), None)
    if reference_input is None and (args.reference or args.clean_plate):
        raise MattekitError(f"engine '{spec.name}' ({args.node}) takes no clean plate or second "
                            "view, so a shot model trained with one could not get it at render: "
                            "leave out --reference / --clean-plate")
    return BaseEngine(node=args.node, engine=spec.name, reference_input=reference_input)


def reference_pattern(args: argparse.Namespace, base: BaseEngine) -> Optional[str]:
    """The file or sequence the correction sees as its reference (None: zeros)."""
    if base.reference_input == "clean_plate":
        return args.clean_plate or args.reference
    return args.reference if base.reference_input == "reference" else None


def base_alpha_paths(args: argparse.Namespace, base: BaseEngine) -> dict[int, Path]:
    """Frame -> the base engine's matte on each scribbled frame: --alpha's files, else a
    render of those frames with the node's inputs (through the cache: a shot already
    rendered costs nothing; a temporal engine warms up as in any render)."""
    from mattekit.inference.render import RenderJob, render
    from mattekit.inference.sequence import parse_frame_range, parse_pattern

    frames = parse_frame_range(args.frames)
    if args.alpha:
        matte = parse_pattern(args.alpha)
        return {frame: matte.path_for(frame) for frame in frames}
    clean = reference_pattern(args, base) if base.reference_input == "clean_plate" else None
    job = RenderJob(node=base.node, plate=args.plate, frames=args.frames, engine=base.engine,
                    mask=args.mask, clean_plate=clean,
                    reference=args.reference if base.reference_input == "reference" else None,
                    coarse=args.coarse, colorspace=args.colorspace,
                    ocio_config=args.ocio_config, device=args.device, params=dict(args.param),
                    cache_root=args.cache_dir)
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


def run(args: argparse.Namespace) -> int:
    from mattekit import ocio
    from mattekit.inference.engines.shot import check_name, shot_extra, shot_model_path
    from mattekit.inference.exrio import read_image
    from mattekit.inference.models import build_model
    from mattekit.inference.models.checkpoint import save_checkpoint
    from mattekit.inference.plate import load_plate
    from mattekit.inference.render import default_input_space, mask_of
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
    plate, strokes = parse_pattern(args.plate), parse_pattern(args.scribbles)
    base_engine = resolve_base(args)
    reference_text = reference_pattern(args, base_engine)
    reference = parse_pattern(reference_text) if reference_text else None
    config = ocio.load_config(args.ocio_config)
    to_engine = ocio.Converter(config, default_input_space(config, plate.path_for(frames[0]),
                                                           args.colorspace), ocio.ENGINE_SRGB)

    def engine_rgb(path: Path, frame: int) -> np.ndarray:
        rgb = load_plate(path, frame).rgb
        assert rgb is not None  # load_plate refuses an image without RGB
        return np.clip(to_engine.apply(np.ascontiguousarray(rgb, np.float32)), 0.0, 1.0)

    alphas = base_alpha_paths(args, base_engine)
    shot = []
    for frame in frames:
        alpha_path = alphas[frame]
        scribble_path = strokes.path_for(frame)
        shot.append(ScribbledFrame(
            plate=engine_rgb(plate.path_for(frame), frame),
            reference=engine_rgb(reference.path_for(frame), frame) if reference else None,
            alpha=mask_of(read_image(alpha_path, frame), alpha_path, frame),
            scribbles=read_scribbles(scribble_path, frame),
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
    model = build_model("alphacorrection")
    losses = finetune_scribbles(model, shot, base,
                                FinetuneConfig(steps=args.steps, crop=crop, seed=args.seed),
                                device=args.device, progress=not args.quiet)
    path = save_checkpoint(model.cpu(), shot_model_path(name, args.cache_dir), extra=shot_extra(
        base_engine.node, base_engine.engine, reference is not None, frames=list(frames),
        steps=args.steps, scribbled_pixels=sum(item.scribbles.count for item in shot),
        base=str(args.base) if args.base else "", base_params=dict(args.param),
        losses=losses))
    write_loss_curve(losses, path.with_name(f"{name}.loss.png"))
    print(path)
    return 0
