"""video-matte dev benchmark: a moving target, a second object in the background (issue #5).

    .venv/bin/python benchmarks/bench_video_matte.py [--clips 13] [--size 640] [--frames 16]

Each clip is built from the 13 alphamatting.com training photos (../shared/data/alphamatting-dev)
with exact ground truth. Clip k: the target is photo k's object (foreground estimated once with
pymatting's estimate_foreground_ml, alpha from the ground truth); it moves right by 12 % of the
frame width and grows by 12 % over the clip. The distractor is photo (k + 4) % 13's object,
drifting slowly on the right; the background is the largest object-free crop of photo
(k + 8) % 13. Composited in linear light, I = a_t F_t + (1 - a_t)(a_d F_d + (1 - a_d) B); the
ground truth is a_t alone (the distractor is not the target). Every clip is used, in order: no
clip is chosen by its result.

Methods: RVM alone (engine `rvm`) on the clip without and with the distractor, and the default
engine (`rvm-guided`) with a rough Roto of frame 1 (the ground truth of frame 1 binarised,
dilated by 2 % of the diagonal and blurred), without and with the distractor; with the
distractor also the default engine with `focus_view=false` (whole-frame RVM only, half the
cost). Metrics per clip
(mattekit.inference.metrics): MAD, MSE (x1e3), Grad (/1e3) averaged over the frames, dtSSD (x1e2)
over the clip; the table averages the clips. "Excess" is what the distractor costs RVM:
MAD(RVM, distractor) - MAD(RVM, no distractor); "removed" is the share of it the default engine
takes away, over all clips (sums).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from alphamatting import DATA, linear_to_srgb, load, print_mean_table, srgb_to_linear

from mattekit.inference import metrics
from mattekit.inference.engines.registry import create_engine

WORK = Path(__file__).resolve().parent / "_work" / "video"
ASPECT = 16 / 9
FG_SIZE = 480  # long side at which each photo's foreground colour is estimated (cached)
TARGET_BOX = (0.46, 0.62)      # the target fits in this fraction of (width, height)
DISTRACTOR_BOX = (0.36, 0.50)
TARGET_PATH = ((0.25, 0.37), (1.0, 1.12))   # centre x (fraction of width), scale: start, end
DISTRACTOR_PATH = ((0.80, 0.76), (1.0, 1.0))
METHODS = ("RVM alone", "default engine, frame-1 mask",
           "default engine, frame-1 mask, focus_view=false")


@dataclass
class Cutout:
    """An object: linear foreground colour and alpha, cropped to its bounding box."""

    fg: np.ndarray
    alpha: np.ndarray


def cutout(name: str) -> Cutout:
    """Photo `name`'s object; F is estimated once (pymatting) and cached under _work."""
    photo, alpha = load(name, FG_SIZE)
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"{Path(name).stem}_{photo.shape[1]}x{photo.shape[0]}_fg.npy"
    if path.exists():
        fg = np.load(path)
    else:
        from pymatting import estimate_foreground_ml

        fg = estimate_foreground_ml(photo.astype(np.float64), alpha.astype(np.float64))
        fg = srgb_to_linear(np.clip(fg, 0, 1).astype(np.float32))
        np.save(path, fg)
    ys, xs = np.nonzero(alpha > 0.01)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    return Cutout(fg=fg[box], alpha=alpha[box])


def object_free_crop(name: str, height: int, width: int) -> np.ndarray:
    """The largest crop of photo `name` with the frame's aspect and no object pixel
    (alpha < 0.02), resized to the frame, linear. A background without the photo's object."""
    photo, alpha = load(name, 800)
    free = (alpha < 0.02).astype(np.int64)
    integral = np.pad(free.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h_img, w_img = free.shape
    for crop_h in range(h_img, 8, -4):
        crop_w = int(round(crop_h * width / height))
        if crop_w > w_img:
            continue
        ys, xs = np.arange(h_img - crop_h + 1)[:, None], np.arange(w_img - crop_w + 1)[None]
        sums = (integral[ys + crop_h, xs + crop_w] - integral[ys, xs + crop_w]
                - integral[ys + crop_h, xs] + integral[ys, xs])
        hits = np.argwhere(sums == crop_h * crop_w)
        if len(hits):
            y, x = hits[len(hits) // 2]
            crop = photo[y:y + crop_h, x:x + crop_w]
            return srgb_to_linear(cv2.resize(crop, (width, height),
                                             interpolation=cv2.INTER_CUBIC))
    raise RuntimeError(f"{name}: no object-free crop")


def placed(obj: Cutout, box: tuple[float, float], centre_x: float, scale: float,
           height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The object scaled to fit `box` (x `scale`), its bottom on the frame's bottom edge (where
    the photos cut their objects), centred at `centre_x`; returns full-frame (fg, alpha)."""
    fit = min(box[0] * width / obj.alpha.shape[1], box[1] * height / obj.alpha.shape[0]) * scale
    cx, bottom = centre_x * width, float(height)
    oh, ow = obj.alpha.shape
    m = np.float32([[fit, 0, cx - fit * ow / 2], [0, fit, bottom - fit * oh]])
    fg = cv2.warpAffine(obj.fg, m, (width, height), flags=cv2.INTER_AREA if fit < 1
                        else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(obj.alpha, m, (width, height), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return fg, np.clip(alpha, 0, 1)


def along(path: tuple[tuple[float, float], tuple[float, float]], t: float
          ) -> tuple[float, float]:
    (x0, x1), (s0, s1) = path
    return x0 + (x1 - x0) * t, s0 + (s1 - s0) * t


@dataclass
class Clip:
    name: str
    plain: list[np.ndarray]        # sRGB frames without the distractor
    distracted: list[np.ndarray]   # sRGB frames with it
    truth: list[np.ndarray]        # target alpha
    roto: np.ndarray               # rough mask of frame 1


def make_clip(k: int, names: list[str], size: int, count: int) -> Clip:
    width, height = size, int(round(size / ASPECT))
    target, distractor = cutout(names[k]), cutout(names[(k + 4) % len(names)])
    background = object_free_crop(names[(k + 8) % len(names)], height, width)
    plain, distracted, truth = [], [], []
    for i in range(count):
        t = i / max(count - 1, 1)
        t_fg, t_a = placed(target, TARGET_BOX, *along(TARGET_PATH, t), height, width)
        d_fg, d_a = placed(distractor, DISTRACTOR_BOX, *along(DISTRACTOR_PATH, t), height,
                           width)
        behind = d_a[..., None] * d_fg + (1 - d_a[..., None]) * background
        for base, frames in ((background, plain), (behind, distracted)):
            linear = t_a[..., None] * t_fg + (1 - t_a[..., None]) * base
            frames.append(np.ascontiguousarray(linear_to_srgb(linear)))
        truth.append(t_a)
    roto = rough_roto(truth[0])
    label = f"{Path(names[k]).stem} (+{Path(names[(k + 4) % len(names)]).stem})"
    return Clip(name=label, plain=plain, distracted=distracted, truth=truth, roto=roto)


def rough_roto(alpha: np.ndarray) -> np.ndarray:
    """What a quick Roto looks like: the matte binarised, grown by 2 % of the diagonal,
    feathered."""
    grow = 0.02 * float(np.hypot(*alpha.shape))
    outside = (alpha <= 0.5).astype(np.uint8)
    grown = cv2.distanceTransform(outside, cv2.DIST_L2, 5) <= grow
    return np.clip(cv2.GaussianBlur(grown.astype(np.float32), (0, 0), grow / 3), 0, 1)


def run(engine, frames: list[np.ndarray], roto=None) -> tuple[list[np.ndarray], float]:
    """Alpha per frame, in order from a fresh state; seconds per frame."""
    engine.reset()
    alphas = []
    t0 = time.perf_counter()
    for i, frame in enumerate(frames):
        inputs = {"mask": roto} if (roto is not None and i == 0) else None
        alphas.append(engine.process(frame, inputs).alpha.copy())
    return alphas, (time.perf_counter() - t0) / len(frames)


def scores(preds: list[np.ndarray], truth: list[np.ndarray]) -> dict[str, float]:
    row = {}
    for m in metrics.METRICS:
        if m.name == "conn":
            continue  # slow, and not asked for in this table
        if m.temporal:
            row[m.label] = m.report(m.function(preds, truth))
        else:
            row[m.label] = float(np.mean([m.report(m.function(p, g))
                                          for p, g in zip(preds, truth)]))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=13)
    parser.add_argument("--size", type=int, default=640, help="long side of the frames")
    parser.add_argument("--frames", type=int, default=16)
    args = parser.parse_args()
    started = time.perf_counter()
    names = sorted(p.name for p in (DATA / "input").glob("GT*.png"))
    rvm = create_engine("rvm", "cpu")
    guided = create_engine("rvm-guided", "cpu")
    single = create_engine("rvm-guided", "cpu", {"focus_view": False})
    rows: dict[tuple[str, str], list[dict[str, float]]] = {}
    seconds: dict[str, list[float]] = {m: [] for m in METHODS}
    per_clip = []
    for k in range(min(args.clips, len(names))):
        clip = make_clip(k, names, args.size, args.frames)
        mads = {}
        for setting, frames in (("no distractor", clip.plain), ("distractor", clip.distracted)):
            runs = [(METHODS[0], rvm, None), (METHODS[1], guided, clip.roto)]
            if setting == "distractor":
                runs.append((METHODS[2], single, clip.roto))
            for method, engine, roto in runs:
                preds, spent = run(engine, frames, roto)
                row = scores(preds, clip.truth)
                rows.setdefault((setting, method), []).append(row)
                mads[(setting, method)] = row["MAD"]
                seconds[method].append(spent)
        per_clip.append((clip.name, mads))
        print(f"{clip.name} done", flush=True)
    print_tables(rows, per_clip, args)
    for method, values in seconds.items():
        print(f"{method}: {np.mean(values):.3f} s/frame at {args.size} px (CPU)")
    print(f"total {time.perf_counter() - started:.0f} s")


def print_tables(rows, per_clip, args) -> None:
    print(f"\n{len(per_clip)} clips of {args.frames} frames, {args.size} px wide\n")
    print_mean_table(["clip", "method"], rows)
    rvm_plain = sum(m[("no distractor", "RVM alone")] for _, m in per_clip)
    rvm_dist = sum(m[("distractor", "RVM alone")] for _, m in per_clip)
    excess = rvm_dist - rvm_plain
    print(f"\nexcess MAD of the distractor for RVM: {excess / len(per_clip):.2f} per clip")
    for method in METHODS[1:]:
        ours = sum(m[("distractor", method)] for _, m in per_clip)
        removed = (rvm_dist - ours) / excess if excess > 0 else float("nan")
        # a clip's gain beyond its own excess (the engine also mattes a target RVM misses
        # without any distractor) does not pay for another clip's shortfall
        capped = sum(min(m[("distractor", "RVM alone")] - m[("distractor", method)],
                         max(m[("distractor", "RVM alone")] - m[("no distractor", "RVM alone")],
                             0.0))
                     for _, m in per_clip) / excess if excess > 0 else float("nan")
        print(f"{method}: removes {100 * removed:.0f} % of it "
              f"({100 * capped:.0f} % with each clip's gain capped at its own excess)")
    print("\nMAD per clip:\n")
    print("| clip (target + distractor) | RVM, no distractor | default engine, no distractor "
          "| RVM | default engine | excess removed | focus_view=false |")
    print("|---|---|---|---|---|---|---|")
    for name, m in per_clip:
        plain, dist = m[("no distractor", "RVM alone")], m[("distractor", "RVM alone")]
        ours_plain, ours = m[("no distractor", METHODS[1])], m[("distractor", METHODS[1])]
        share = f"{100 * (dist - ours) / (dist - plain):.0f} %" if dist - plain > 1 else "-"
        print(f"| {name} | {plain:.1f} | {ours_plain:.1f} | {dist:.1f} | {ours:.1f} | {share} "
              f"| {m[('distractor', METHODS[2])]:.1f} |")


if __name__ == "__main__":
    main()
