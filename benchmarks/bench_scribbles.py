"""Scribble fine-tuning on a dev clip where the default engine fails in a known region (issue #10).

The case: a prop was dressed into the set after the clean plate was shot. A clip of 8 frames at
320x200: a real subject (alphamatting GT04 + its true alpha) moving across the frame, in front
of a set whose clean plate (a blurred GT05) lacks the prop (GT13, a potted plant, standing still
at the bottom right). BackgroundMatte's default engine (`cleanplate`) rightly takes everything
that is not in the clean plate as subject, so it mattes the plant too; the truth is the subject
only. Strokes are drawn on frames 0 and 4 (blue on the plant, red on the subject); the
alpha-correction network is fine-tuned on them with 80 % base composites (the other dev photos
over this clip's clean plate) and then corrects every frame, including those where the subject
passes in front of the plant. Reports MAD (x1e3) of the engine and of the corrected alpha on the
whole clip and on the 6 unscribbled frames, and the fine-tuning time.

    .venv/bin/python benchmarks/bench_scribbles.py [--steps 300] [--seed 0]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from alphamatting import DATA, load, srgb_to_linear  # noqa: E402

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

SUBJECT, PROP, BACKDROP = "GT04.png", "GT13.png", "GT05.png"
FRAMES, SCRIBBLED, HEIGHT, WIDTH = 8, (0, 4), 200, 320


@dataclasses.dataclass
class ClipFrame:
    plate: np.ndarray   # (H, W, 3) sRGB 0..1, as the correction network sees it
    engine: np.ndarray  # (H, W) the default engine's alpha
    truth: np.ndarray   # (H, W) the subject's true alpha


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


def over(fg: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    return (alpha[..., None] * fg + (1 - alpha[..., None]) * background).astype(np.float32)


def build_clip() -> tuple[list[ClipFrame], np.ndarray]:
    """The clip's frames (plate, engine alpha, truth) and its clean plate (sRGB 0..1)."""
    subject, subject_alpha = load(SUBJECT, 200)
    prop, prop_alpha = load(PROP, 150)
    backdrop, _ = load(BACKDROP, 480)
    clean = cv2.GaussianBlur(backdrop[:HEIGHT, :WIDTH], (0, 0), 3).astype(np.float32)
    dressed = over(*paste((HEIGHT, WIDTH), prop, prop_alpha, HEIGHT - prop.shape[0],
                          WIDTH - prop.shape[1]), clean)
    engine = create_engine("cleanplate", "cpu")  # BackgroundMatte's default, as the node runs it
    clip = []
    for t in range(FRAMES):
        fg, alpha = paste((HEIGHT, WIDTH), subject, subject_alpha, 10, 12 * t)
        plate = over(fg, alpha, dressed)
        matte = engine.process(srgb_to_linear(plate), {"clean_plate": srgb_to_linear(clean)})
        clip.append(ClipFrame(plate, matte.alpha.astype(np.float32), alpha))
    return clip, clean


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


def scribble(clip: list[ClipFrame], clean: np.ndarray, seed: int) -> list[ScribbledFrame]:
    """What a compositor paints on frames SCRIBBLED: 5 blue strokes where the engine wrongly
    says subject, 3 red ones on the subject, per frame."""
    rng = np.random.default_rng(seed)
    frames = []
    for t in SCRIBBLED:
        item = clip[t]
        wrong = (item.engine > 0.5) & (item.truth < 0.02)
        right = item.truth > 0.98
        frames.append(ScribbledFrame(item.plate, clean, item.engine,
                                     Scribbles(strokes(right, 3, rng), strokes(wrong, 5, rng)),
                                     f"frame {t}"))
    return frames


def scribbled_case(seed: int) -> tuple[list[ClipFrame], np.ndarray, list[ScribbledFrame]]:
    """The clip, its clean plate and the strokes of `seed`; exits when the dev data is absent."""
    if not DATA.is_dir():
        raise SystemExit(f"needs {DATA}")
    clip, clean = build_clip()
    return clip, clean, scribble(clip, clean, seed)


def fine_tuned_correction(clean: np.ndarray, scribbled: list[ScribbledFrame], steps: int,
                          seed: int) -> tuple[object, float]:
    """The correction fine-tuned on the strokes with 80 % base composites (the other dev photos
    over the clean plate), and the seconds the fine-tuning took."""
    others = [p.name for p in sorted((DATA / "input").glob("GT*.png"))
              if p.name not in (SUBJECT, PROP)]
    base = CompositeDataset([load(name, 128) for name in others], [clean], (128, 128),
                            seed=seed, options=AugmentOptions(noise_sigma=0.02))
    model = build_model("alphacorrection", seed=seed)
    start = time.perf_counter()
    finetune_scribbles(model, scribbled, base,
                       FinetuneConfig(steps=steps, crop=(128, 128), seed=seed),
                       device="cpu", progress=False)
    return model, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0, help="strokes and fine-tuning seed")
    args = parser.parse_args()
    clip, clean, scribbled = scribbled_case(args.seed)
    model, seconds = fine_tuned_correction(clean, scribbled, args.steps, args.seed)
    before = [np.abs(item.engine - item.truth).mean() * 1e3 for item in clip]
    after = [np.abs(correct_alpha(model, item.plate, clean, item.engine) - item.truth).mean()
             * 1e3 for item in clip]
    unscribbled = [t for t in range(FRAMES) if t not in SCRIBBLED]
    strokes_drawn = sum(len(np.unique(cv2.connectedComponents(
        (s.scribbles.foreground | s.scribbles.background).astype(np.uint8))[1])) - 1
        for s in scribbled)
    print(f"{strokes_drawn} strokes on frames {SCRIBBLED}; steps {args.steps}; seed {args.seed}; "
          f"fine-tuning {seconds:.1f} s")
    print("| frames | engine MAD x1e3 | corrected MAD x1e3 | change |")
    print("|---|---|---|---|")
    for label, frames in (("all 8", range(FRAMES)), ("6 unscribbled", unscribbled)):
        b = float(np.mean([before[t] for t in frames]))
        a = float(np.mean([after[t] for t in frames]))
        print(f"| {label} | {b:.1f} | {a:.1f} | {100 * (a - b) / b:+.0f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
