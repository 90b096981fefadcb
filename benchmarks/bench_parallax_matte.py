"""parallax-matte dev benchmark on real photos with real ground-truth alpha.

    .venv/bin/python benchmarks/bench_parallax_matte.py [--images 13] [--size 640]
    .venv/bin/python benchmarks/bench_parallax_matte.py --timing-only   # 1080p pair only

Each of the 13 alphamatting.com training photos (../shared/data/alphamatting-dev) is
re-composited exactly, I = aF + (1 - a)B in linear light, over another photo of the set as
background (F estimated once by pymatting's estimate_foreground_ml). The second view moves the
camera: the background shifts by 1-4 px, the subject by 6-14 px (nearer the camera), both in a
random direction, plus a smooth random sub-pixel (<= 0.5 px) wobble on each motion. Ground truth
is the first view's alpha and premultiplied foreground.

Methods: RVM alone (single frame), the default engine (`parallax`, as the node runs it) with the
second view, and with the same frame twice; each without and with a rough mask (the ground truth
binarised at 0.5 and dilated by 7 px; RVM alone with the mask = RVM's alpha times the mask).
Also the engine's own single-frame estimate, and the second view with a random 4 px error added
to the foreground flow. Metrics: MAD, MSE (x1e3), Grad, Conn (/1e3) over the whole frame, and
the MSE (x1e3) of the premultiplied foreground (linear).
"""
from __future__ import annotations

import argparse
import warnings

import cv2
import numpy as np
from alphamatting import DATA, best_seconds, linear_to_srgb, load, print_mean_table, srgb_to_linear
from bench_background_matte import foreground, metrics_for

from mattekit.inference.engines.registry import create_engine
from mattekit.inference.parallax import (
    dense_flow,
    motion_subject,
    parallax_flows,
    two_view_matte,
)

MARGIN = 24  # pixels of background beyond the frame on every side (room for the motion)


def smooth_wobble(rng: np.random.Generator, shape: tuple[int, int], amplitude: float
                  ) -> np.ndarray:
    """A smooth random displacement field (H, W, 2) of at most ``amplitude`` pixels."""
    h, w = shape
    coarse = rng.uniform(-1, 1, (4, 4, 2)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).clip(-1, 1) * amplitude


def random_shift(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    return (rng.uniform(low, high) * np.array([np.cos(angle), np.sin(angle)])).astype(np.float32)


def remap(image: np.ndarray, displacement: np.ndarray, offset: tuple[int, int] = (0, 0),
          border: int = cv2.BORDER_CONSTANT) -> np.ndarray:
    """image sampled at x + offset + displacement(x) (bilinear)."""
    h, w = displacement.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(image, gx + offset[0] + displacement[..., 0],
                     gy + offset[1] + displacement[..., 1], cv2.INTER_LINEAR, borderMode=border)


def parallax_pair(photo_alpha: np.ndarray, fg: np.ndarray, bg_photo: np.ndarray,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(plate, reference) in linear light: the reference sees the scene from a camera moved
    so that the background shifts 1-4 px and the subject 6-14 px, with sub-pixel wobble."""
    h, w = photo_alpha.shape
    big = cv2.resize(srgb_to_linear(bg_photo), (w + 2 * MARGIN, h + 2 * MARGIN),
                     interpolation=cv2.INTER_AREA)
    plate_bg = big[MARGIN:MARGIN + h, MARGIN:MARGIN + w]
    premult = fg * photo_alpha[..., None]
    plate = premult + (1 - photo_alpha[..., None]) * plate_bg
    bg_motion = random_shift(rng, 1, 4) + smooth_wobble(rng, (h, w), 0.5)
    fg_motion = random_shift(rng, 6, 14) + smooth_wobble(rng, (h, w), 0.5)
    ref_bg = remap(big, bg_motion, (MARGIN, MARGIN), cv2.BORDER_REFLECT)
    ref_alpha = remap(photo_alpha, fg_motion, border=cv2.BORDER_REPLICATE)
    ref_premult = remap(premult, fg_motion, border=cv2.BORDER_REPLICATE)
    reference = ref_premult + (1 - ref_alpha[..., None]) * ref_bg
    return plate.astype(np.float32), reference.astype(np.float32)


def rough_mask(alpha: np.ndarray, grow: int = 7) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    return cv2.dilate((alpha > 0.5).astype(np.uint8), kernel).astype(np.float32)


def scores(alpha: np.ndarray, fg: np.ndarray, gt_alpha: np.ndarray, gt_fg: np.ndarray
           ) -> dict[str, float]:
    row = metrics_for(alpha, gt_alpha)
    premult = np.clip(fg, 0, None) * alpha[..., None]
    gt_premult = gt_fg * gt_alpha[..., None]
    row["FG MSE"] = float(np.mean((premult - gt_premult) ** 2)) * 1e3
    return row


def perturbed(flows, rng: np.random.Generator, pixels: float):
    """The flows with a random error of ``pixels`` added to the foreground motion."""
    flows.foreground = flows.foreground + random_shift(rng, pixels, pixels)
    return flows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=13)
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--timing-only", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    names = sorted(p.name for p in (DATA / "input").glob("GT*.png"))[: args.images]
    rvm = create_engine("rvm", "cpu")
    engine = create_engine("parallax", "cpu")
    if args.timing_only:
        print(timing_1080p(rvm, engine, names[0], names[5]))
        return
    rng = np.random.default_rng(11)
    results: dict[str, list[dict[str, float]]] = {}
    for k, name in enumerate(names):
        photo, gt = load(name, args.size)
        fg = foreground(name, photo, gt)
        bg_photo, _ = load(names[(k + 5) % len(names)], args.size)
        plate, reference = parallax_pair(gt, fg, bg_photo, rng)
        rvm.reset()
        rvm_alpha = rvm.process(np.ascontiguousarray(linear_to_srgb(plate))).alpha
        for masked in (False, True):
            mask = rough_mask(gt) if masked else None
            tag = ", mask" if masked else ""
            prior = rvm_alpha * mask if mask is not None else rvm_alpha
            rvm_fg = plate  # RVM's own foreground is sRGB: the plate stands in for it
            rows = {f"RVM alone{tag}": (prior, rvm_fg)}
            inputs = {"mask": mask} if masked else {}
            single, trimap = engine.single_frame(plate, mask)
            rows[f"engine, single frame{tag}"] = (single.alpha, single.foreground)
            two = engine.process(plate, {**inputs, "reference": reference})
            rows[f"engine, second frame{tag}"] = (two.alpha, two.foreground)
            same = engine.process(plate, {**inputs, "reference": plate})
            rows[f"engine, same frame twice{tag}"] = (same.alpha, same.foreground)
            # the engine's own stages, as in process(), with the foreground flow perturbed
            motion = dense_flow(plate, reference, engine.flow_size)
            subject = None if masked or motion is None else motion_subject(motion, gt.shape)
            two_single, two_trimap = engine.single_frame(plate, mask, subject)
            flows = (None if motion is None else
                     parallax_flows(plate, reference, two_trimap, engine.flow_size, motion))
            if flows is not None:
                noisy = two_view_matte(plate, reference, two_trimap,
                                       perturbed(flows, rng, 4.0), two_single)
                rows[f"engine, second frame, fg flow +4 px{tag}"] = (noisy.alpha,
                                                                     noisy.foreground)
            for method, (alpha, fgr) in rows.items():
                results.setdefault(method, []).append(scores(alpha, fgr, gt, fg))
        print(f"{name} done: MAD single {results['engine, single frame'][-1]['MAD']:.1f} "
              f"two {results['engine, second frame'][-1]['MAD']:.1f}; mask: single "
              f"{results['engine, single frame, mask'][-1]['MAD']:.1f} two "
              f"{results['engine, second frame, mask'][-1]['MAD']:.1f}", flush=True)
    print(f"\n{len(names)} images, long side {args.size} px\n")
    print_mean_table(["method"], results)
    if not args.no_timing:
        print(timing_1080p(rvm, engine, names[0], names[5]))


def timing_1080p(rvm, engine, name: str, bg_name: str, repeats: int = 3) -> str:
    """Seconds per 1920x1080 pair, best of ``repeats``: RVM alone vs the default engine."""
    photo, gt = load(name, 1920)
    gt = cv2.resize(gt, (1920, 1080))
    fg = cv2.resize(srgb_to_linear(photo), (1920, 1080))
    bg_photo, _ = load(bg_name, 1920)
    plate, reference = parallax_pair(gt, fg, bg_photo, np.random.default_rng(3))
    rvm_s, engine_s = best_seconds(rvm, engine, plate, {"reference": reference}, repeats)
    return (f"at 1920x1080: RVM alone {rvm_s:.3f} s/frame, default engine {engine_s:.3f} "
            f"s/pair ({engine_s / rvm_s:.2f}x RVM)")

if __name__ == "__main__":
    main()
