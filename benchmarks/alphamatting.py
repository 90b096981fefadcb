"""The alphamatting.com dev set the benchmarks build their cases from, and the sRGB transfer
functions they composite with (../shared/data/alphamatting-dev: input/GT*.png, alpha/GT*.png)."""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alphamatting-dev"


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055).astype(np.float32)


def load(name: str, long_side: int) -> tuple[np.ndarray, np.ndarray]:
    """sRGB photo (H, W, 3) and ground-truth alpha (H, W), resized to `long_side`."""
    photo = cv2.cvtColor(cv2.imread(str(DATA / "input" / name)), cv2.COLOR_BGR2RGB) / 255.0
    alpha = cv2.imread(str(DATA / "alpha" / name), cv2.IMREAD_GRAYSCALE) / 255.0
    scale = long_side / max(photo.shape[:2])
    photo = cv2.resize(photo.astype(np.float32), None, fx=scale, fy=scale,
                       interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(alpha.astype(np.float32), (photo.shape[1], photo.shape[0]),
                       interpolation=cv2.INTER_AREA)
    return photo, alpha


def best_seconds(rvm, engine, plate: np.ndarray, inputs: dict, repeats: int = 3
                 ) -> tuple[float, float]:
    """Best-of-`repeats` seconds per frame of RVM alone (on the plate's sRGB encoding) and of
    `engine` (on the linear plate with its extra `inputs`), interleaved so that both see the
    same machine load."""
    srgb = np.ascontiguousarray(linear_to_srgb(plate))
    best_rvm = best_engine = float("inf")
    for _ in range(repeats):
        rvm.reset()
        t0 = time.perf_counter()
        rvm.process(srgb)
        best_rvm = min(best_rvm, time.perf_counter() - t0)
        t0 = time.perf_counter()
        engine.process(plate, inputs)
        best_engine = min(best_engine, time.perf_counter() - t0)
    return best_rvm, best_engine


def print_mean_table(heading: list[str], results: dict) -> None:
    """Print a markdown table of each row's per-metric means: `heading` names the leading
    columns; a key of `results` is the tuple of their values (or the one value), its value the
    list of per-image metric dicts."""
    labels = list(next(iter(results.values()))[0])
    print("| " + " | ".join([*heading, *labels]) + " |")
    print("|" + "---|" * (len(heading) + len(labels)))
    for key, rows in results.items():
        lead = key if isinstance(key, tuple) else (key,)
        means = [f"{np.mean([r[k] for r in rows]):.2f}" for k in labels]
        print("| " + " | ".join([*lead, *means]) + " |")
