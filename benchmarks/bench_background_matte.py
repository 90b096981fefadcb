"""background-matte dev benchmark on real photos with real ground-truth alpha.

    .venv/bin/python benchmarks/bench_background_matte.py [--images 13] [--size 640]
    .venv/bin/python benchmarks/bench_background_matte.py --timing-only --repeats 5

Each of the 13 alphamatting.com training photos (../shared/data/alphamatting-dev) is
re-composited exactly, I = aF + (1 - a)B, over another photo of the set as background (real
scenes with their own objects), with F estimated once by pymatting's estimate_foreground_ml.
The clean plate is the same background, then: misregistered (mild: +-2 deg, +-5 % scale, 0.02
shear; strong: +-5 deg, +-10 %, 0.07), with sensor noise and an exposure change, and with a cast
shadow present in the plate only. Methods: RVM alone, a plain difference key, the default
engine (`cleanplate`, run as the node runs it, with its RVM prior). Metrics: MAD, MSE
(x1e3), Grad, Conn (/1e3), over the whole frame.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
from alphamatting import DATA, best_seconds, linear_to_srgb, load, print_mean_table, srgb_to_linear

from mattekit.inference import cleanplate
from mattekit.inference.engines.registry import create_engine

WORK = Path(__file__).resolve().parent / "_work" / "background"


def foreground(name: str, photo: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """F in linear light, estimated once and cached."""
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"{Path(name).stem}_{photo.shape[1]}x{photo.shape[0]}_fg.npy"
    if path.exists():
        return np.load(path)
    from pymatting import estimate_foreground_ml

    fg = estimate_foreground_ml(photo.astype(np.float64), alpha.astype(np.float64))
    fg = srgb_to_linear(np.clip(fg, 0, 1).astype(np.float32))
    np.save(path, fg)
    return fg


def affine(rotate_deg: float, scale: float, shear: float, centre: tuple[float, float]):
    cx, cy = centre
    theta = np.deg2rad(rotate_deg)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) * scale
    sh = np.array([[1.0, shear], [0.0, 1.0]])
    m = rot @ sh
    t = np.array([cx, cy]) - m @ np.array([cx, cy])
    return np.hstack([m, t[:, None]]).astype(np.float32)


def backgrounds(bg_photo: np.ndarray, height: int, width: int, warp):
    """Plate background (a centre crop) and clean plate (the same scene, warped) without
    borders: both come from a 1.35x larger copy of the background photo."""
    big = cv2.resize(srgb_to_linear(bg_photo), (int(width * 1.35), int(height * 1.35)),
                     interpolation=cv2.INTER_CUBIC)
    y0, x0 = (big.shape[0] - height) // 2, (big.shape[1] - width) // 2
    plate_bg = big[y0:y0 + height, x0:x0 + width]
    if warp is None:
        return plate_bg, plate_bg.copy()
    m = affine(*warp, centre=(big.shape[1] / 2, big.shape[0] / 2))
    warped = cv2.warpAffine(big, m, (big.shape[1], big.shape[0]), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT)
    return plate_bg, warped[y0:y0 + height, x0:x0 + width]


def shadow_map(alpha: np.ndarray, strength: float = 0.5) -> np.ndarray:
    """A soft cast shadow: the subject's matte, shifted down-right and blurred."""
    h, w = alpha.shape
    m = np.float32([[1, 0, 0.12 * w], [0, 1, 0.06 * h]])
    cast = cv2.warpAffine(alpha, m, (w, h))
    cast = cv2.GaussianBlur(cast, (0, 0), 0.02 * max(h, w))
    return 1.0 - strength * np.clip(cast, 0, 1)


CONDITIONS = {
    "exact plate": dict(warp=None),
    "mild misregistration": dict(warp=(2.0, 1.05, 0.02)),
    "strong misregistration": dict(warp=(5.0, 1.10, 0.07)),
    "noise + exposure": dict(warp=None, noise=0.02, exposure=1.25),
    "cast shadow": dict(warp=None, shadow=0.5),
}


def difference_key(plate: np.ndarray, clean: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """A plain difference key: alpha = max channel |I - B| / threshold, clipped."""
    return np.clip(np.max(np.abs(plate - clean), axis=2) / threshold, 0, 1).astype(np.float32)


def metrics_for(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    from mattekit.inference import metrics

    return {m.label: m.report(m.function(pred, gt)) for m in metrics.METRICS if not m.temporal}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=13)
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=3, help="1080p timing: best of N")
    parser.add_argument("--timing-only", action="store_true",
                        help="only the 1080p timing (no table)")
    args = parser.parse_args()
    every_name = sorted(p.name for p in (DATA / "input").glob("GT*.png"))
    names = every_name[: args.images]
    rvm = create_engine("rvm", "cpu")
    engine = create_engine("cleanplate", "cpu")  # the default engine, as the node runs it
    if args.timing_only:
        print(timing_1080p(rvm, engine, every_name[1], every_name[6], args.repeats))
        return
    rng = np.random.default_rng(7)
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    seconds = {"RVM alone": [], "default engine": []}
    for k, name in enumerate(names):
        photo, alpha = load(name, args.size)
        fg = foreground(name, photo, alpha)
        bg_photo, _ = load(names[(k + 5) % len(names)], args.size * 2)
        h, w = alpha.shape
        for condition, spec in CONDITIONS.items():
            sign = 1 if k % 2 else -1
            warp = spec["warp"]
            if warp is not None:
                warp = (sign * warp[0], 1 + sign * (warp[1] - 1), sign * warp[2])
            plate_bg, clean = backgrounds(bg_photo, h, w, warp)
            if "shadow" in spec:
                plate_bg = plate_bg * shadow_map(alpha, spec["shadow"])[..., None]
            plate = alpha[..., None] * fg + (1 - alpha[..., None]) * plate_bg
            if "noise" in spec:
                plate = plate + rng.normal(0, spec["noise"], plate.shape).astype(np.float32)
                clean = clean * spec["exposure"] + rng.normal(0, spec["noise"],
                                                              clean.shape).astype(np.float32)
            plate, clean = plate.astype(np.float32), clean.astype(np.float32)
            rvm.reset()
            t0 = time.perf_counter()
            prior = rvm.process(np.ascontiguousarray(linear_to_srgb(plate))).alpha
            seconds["RVM alone"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ours = engine.process(plate, {"clean_plate": clean}).alpha
            seconds["default engine"].append(time.perf_counter() - t0)
            for method, pred in (("RVM alone", prior),
                                 ("difference key", difference_key(plate, clean)),
                                 ("default engine", ours)):
                results.setdefault((condition, method), []).append(metrics_for(pred, alpha))
        print(f"{name} done", flush=True)
    print(f"\n{len(names)} images, long side {args.size} px\n")
    print_mean_table(["condition", "method"], results)
    for method, values in seconds.items():
        print(f"{method}: {np.mean(values):.3f} s/frame at {args.size} px")
    # image 2 of the table over its background, as there (a pair that registers at 1080p)
    print(timing_1080p(rvm, engine, every_name[1], every_name[6], args.repeats))


class EveryFrameFeatures:
    """The engine with its remembered clean-plate features forgotten before every frame: the
    cost per frame of a clean-plate sequence (a new clean plate every frame)."""

    def __init__(self, engine):
        self.engine = engine

    def process(self, src, inputs):
        cleanplate._clean_plate_features.clear()
        return self.engine.process(src, inputs)


def timing_1080p(rvm, engine, name: str, background_name: str, repeats: int = 3) -> str:
    """Seconds per 1920x1080 frame, best of `repeats`: RVM alone vs the default engine, with an
    exact clean plate and with a mildly misregistered one (registration runs in full), the
    latter both held (one clean plate for the shot: its features are found once) and as a
    sequence (a new clean plate every frame); photo `name` composited over photo
    `background_name` at 640 px as in the table, then resampled to 1920x1080 (the photos are
    ~800 px: larger copies are too smooth to register on)."""
    photo, alpha = load(name, 640)
    fg = srgb_to_linear(photo)
    bg_photo, _ = load(background_name, 1280)
    lines = []
    for label, warp, timed in (
            ("exact plate", None, engine),
            ("mild misregistration, held clean plate", (2.0, 1.05, 0.02), engine),
            ("mild misregistration, clean-plate sequence", (2.0, 1.05, 0.02),
             EveryFrameFeatures(engine))):
        plate_bg, clean = backgrounds(bg_photo, alpha.shape[0], alpha.shape[1], warp)
        plate = alpha[..., None] * fg + (1 - alpha[..., None]) * plate_bg
        plate, clean = (cv2.resize(x.astype(np.float32), (1920, 1080),
                                   interpolation=cv2.INTER_CUBIC) for x in (plate, clean))
        rvm_s, engine_s = best_seconds(rvm, timed, plate, {"clean_plate": clean}, repeats)
        lines.append(f"{label} at {plate.shape[1]}x{plate.shape[0]}: RVM alone {rvm_s:.3f} "
                     f"s/frame, default engine {engine_s:.3f} s/frame "
                     f"({engine_s / rvm_s:.2f}x RVM)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
