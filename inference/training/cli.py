"""`mattekit train scribbles`: fine-tune a shot's alpha-correction network from scribbles.

    mattekit train scribbles --plate plate.####.exr --alpha matte.####.exr \
        --scribbles strokes.####.png --frames 1001,1012 [--reference clean.####.exr] \
        [--base ../shared/data/alphamatting-dev] [--steps 300] [--name shotA]

Reads, on each scribbled frame, the plate (converted to the engines' sRGB 0..1 like a render),
the alpha an engine made (--alpha: its A channel, else its first), the scribbles (red = subject,
blue = background; rules in training/scribbles.py) and, when given, the clean plate or second
frame. Writes ``<cache>/shot-models/<name>.pt`` (an ``alphacorrection`` checkpoint) and its loss
curve beside it, and prints the path. With --base (a folder with input/ and alpha/ images of
the same names, e.g. alphamatting-dev) 80 % of every batch is base composites of those
foregrounds over this shot's own backgrounds (the reference frames, else the plates); without
it the network learns from the scribbles alone (a warning says so). The checkpoint is never an
engine by itself: nothing uses it unless it is configured.
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mattekit.inference.errors import InputError

SHOT_MODELS = "shot-models"


def add_train_parser(commands: Any) -> argparse.ArgumentParser:
    train = commands.add_parser("train", help="fine-tune a per-shot model from scribbles")
    kinds = train.add_subparsers(dest="train_kind", required=True, metavar="KIND")
    scribbles = kinds.add_parser("scribbles", help="fine-tune an alpha correction from "
                                                   "red (subject) / blue (background) strokes")
    scribbles.add_argument("--plate", required=True, help="plate file or sequence")
    scribbles.add_argument("--alpha", required=True, help="the engine's matte to correct")
    scribbles.add_argument("--scribbles", required=True,
                           help="scribble images: red = foreground, blue = background")
    scribbles.add_argument("--frames", required=True, help="the scribbled frames (1001,1012)")
    scribbles.add_argument("--reference", help="clean plate or second frame (file or sequence)")
    scribbles.add_argument("--base", type=Path,
                           help="folder with input/ and alpha/ images for the 80 %% base "
                                "composites")
    scribbles.add_argument("--name", default="shot", help="checkpoint name (default: shot)")
    scribbles.add_argument("--steps", type=int, default=300)
    scribbles.add_argument("--crop", type=int, default=128, help="training crop size (px)")
    scribbles.add_argument("--seed", type=int, default=0)
    scribbles.add_argument("--colorspace", help="input colour space (default: scene_linear for "
                                                "EXR, sRGB for 8/16-bit files)")
    scribbles.add_argument("--cache-dir", type=Path, help="cache folder (default: "
                                                          "$MATTEKIT_CACHE or the user cache)")
    scribbles.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    scribbles.add_argument("--quiet", action="store_true", help="no progress bar")
    return train


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
    from mattekit.inference.cache import FrameCache
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
    frames = parse_frame_range(args.frames)
    plate, matte, strokes = (parse_pattern(p) for p in (args.plate, args.alpha, args.scribbles))
    reference = parse_pattern(args.reference) if args.reference else None
    config = ocio.load_config()
    to_engine = ocio.Converter(config, default_input_space(config, plate.path_for(frames[0]),
                                                           args.colorspace), ocio.ENGINE_SRGB)

    def engine_rgb(path: Path, frame: int) -> np.ndarray:
        rgb = load_plate(path, frame).rgb
        assert rgb is not None  # load_plate refuses an image without RGB
        return np.clip(to_engine.apply(np.ascontiguousarray(rgb, np.float32)), 0.0, 1.0)

    shot = []
    for frame in frames:
        alpha_path = matte.path_for(frame)
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
    folder = (args.cache_dir or FrameCache.default_root()) / SHOT_MODELS
    path = save_checkpoint(model.cpu(), folder / f"{args.name}.pt", extra={
        "kind": "scribble-correction", "frames": list(frames), "steps": args.steps,
        "scribbled_pixels": sum(item.scribbles.count for item in shot),
        "base": str(args.base) if args.base else "", "losses": losses})
    write_loss_curve(losses, folder / f"{args.name}.loss.png")
    print(path)
    return 0
