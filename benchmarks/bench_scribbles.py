"""Scribble fine-tuning on a dev clip where the default prior fails in a known region (issue #10).

A clip of 8 frames at 320 px: a real subject (alphamatting GT photo + its true alpha) moving over
a background that holds a second real subject standing still (part of the background, so also
in the clean plate). RVM, the prior of the default engines, mattes both; the truth is the first
only. Strokes are drawn on frames 0 and 4 (blue across the standing subject, red on the moving
one); the alpha-correction network is fine-tuned on them with 80 % base composites (the other
dev photos over this clip's clean plate) and then corrects every frame. Reports MAD (x1e3) of
RVM and of the corrected alpha on the whole clip and on the 6 unscribbled frames, and the
fine-tuning time.

    .venv/bin/python benchmarks/bench_scribbles.py [--steps 200]
"""
from __future__ import annotations

import argparse
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from alphamatting import DATA, load  # noqa: E402

from mattekit.inference.engines.registry import create_engine  # noqa: E402
from mattekit.inference.models import build_model  # noqa: E402
from mattekit.inference.training.dataset import AugmentOptions, CompositeDataset  # noqa: E402
from mattekit.inference.training.scribbles import (  # noqa: E402
    FinetuneConfig,
    ScribbledFrame,
    Scribbles,
    correct_alpha,
    finetune_scribbles,
)

SUBJECT, STANDING, BACKDROP = "GT04.png", "GT13.png", "GT05.png"
FRAMES, SCRIBBLED, LONG_SIDE = 8, (0, 4), 320


def paste(canvas_shape, fg, alpha, top, left):
    """fg / alpha placed at (top, left) on a canvas, cropped to it."""
    h, w = canvas_shape
    out_fg, out_a = np.zeros((h, w, 3), np.float32), np.zeros((h, w), np.float32)
    fh, fw = alpha.shape
    t0, l0 = max(top, 0), max(left, 0)
    t1, l1 = min(top + fh, h), min(left + fw, w)
    out_fg[t0:t1, l0:l1] = fg[t0 - top:t1 - top, l0 - left:l1 - left]
    out_a[t0:t1, l0:l1] = alpha[t0 - top:t1 - top, l0 - left:l1 - left]
    return out_fg, out_a


def strokes(region: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` short 2 px strokes (12 px long) at random places inside `region`."""
    mask = np.zeros(region.shape, np.uint8)
    ys, xs = np.nonzero(region)
    for i in rng.choice(len(ys), size=count, replace=False):
        angle = rng.uniform(0, np.pi)
        dy, dx = int(6 * np.sin(angle)), int(6 * np.cos(angle))
        cv2.line(mask, (int(xs[i] - dx), int(ys[i] - dy)), (int(xs[i] + dx), int(ys[i] + dy)),
                 1, 2)
    return (mask > 0) & region


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"needs {DATA}")
        return 1
    subject, subject_alpha = load(SUBJECT, 200)
    standing, standing_alpha = load(STANDING, 180)
    backdrop, _ = load(BACKDROP, 480)
    height, width = 200, LONG_SIDE
    backdrop = cv2.GaussianBlur(backdrop[:height, :width], (0, 0), 3)
    s_fg, s_a = paste((height, width), standing, standing_alpha, 20, width - standing.shape[1])
    clean = (s_a[..., None] * s_fg + (1 - s_a[..., None]) * backdrop).astype(np.float32)
    rvm = create_engine("rvm", "cpu")
    rvm.reset()
    clip = []
    for t in range(FRAMES):
        fg, alpha = paste((height, width), subject, subject_alpha, 0, 10 + 6 * t)
        plate = (alpha[..., None] * fg + (1 - alpha[..., None]) * clean).astype(np.float32)
        prior = rvm.process(np.ascontiguousarray(plate)).alpha.astype(np.float32)
        clip.append((plate, prior, alpha))
    rng = np.random.default_rng(0)
    scribbled, stroke_count = [], 0
    for t in SCRIBBLED:
        plate, prior, alpha = clip[t]
        wrong = (prior > 0.5) & (alpha < 0.02)
        right = alpha > 0.98
        bg, fg = strokes(wrong, 5, rng), strokes(right, 3, rng)
        stroke_count += 8
        scribbled.append(ScribbledFrame(plate, clean, prior, Scribbles(fg, bg), f"frame {t}"))
    others = [p.name for p in sorted((DATA / "input").glob("GT*.png"))
              if p.name not in (SUBJECT, STANDING)]
    layers = [load(name, 128) for name in others]
    base = CompositeDataset(layers, [clean], (128, 128), options=AugmentOptions(noise_sigma=0.02))
    model = build_model("alphacorrection")
    start = time.perf_counter()
    finetune_scribbles(model, scribbled, base, FinetuneConfig(steps=args.steps, crop=(128, 128)),
                       device="cpu", progress=False)
    seconds = time.perf_counter() - start
    before, after = [], []
    for plate, prior, alpha in clip:
        before.append(np.abs(prior - alpha).mean() * 1e3)
        after.append(np.abs(correct_alpha(model, plate, clean, prior) - alpha).mean() * 1e3)
    unscribbled = [t for t in range(FRAMES) if t not in SCRIBBLED]
    print(f"strokes: {stroke_count} on frames {SCRIBBLED}; steps {args.steps}; "
          f"fine-tuning {seconds:.1f} s")
    print("| frames | RVM MAD x1e3 | corrected MAD x1e3 | change |")
    print("|---|---|---|---|")
    for label, frames in (("all 8", range(FRAMES)), ("6 unscribbled", unscribbled)):
        b = float(np.mean([before[t] for t in frames]))
        a = float(np.mean([after[t] for t in frames]))
        print(f"| {label} | {b:.1f} | {a:.1f} | {100 * (a - b) / b:+.0f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
