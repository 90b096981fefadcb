"""The loss curve of a training run as a PNG, drawn with OpenCV (no plotting library needed).

A white canvas, axes with the step range and the loss range (log scale when the loss spans more
than a decade), the raw loss in light grey and its running mean in blue. Written atomically.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import cv2
import numpy as np

MARGIN = (20, 20, 40, 70)  # top, right, bottom, left (pixels around the plot area)
RAW = (200, 200, 200)      # BGR
MEAN = (200, 90, 20)
INK = (0, 0, 0)


def running_mean(values: Union[Sequence[float], np.ndarray], window: int) -> np.ndarray:
    """Mean of the last `window` values at each position (fewer at the start)."""
    data = np.asarray(values, np.float64)
    sums = np.cumsum(np.concatenate([[0.0], data]))
    ends = np.arange(1, len(data) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def curve_image(losses: Sequence[float], width: int = 640, height: int = 360) -> np.ndarray:
    """The curve as a (height, width, 3) uint8 BGR image; losses are one value per step."""
    if len(losses) == 0:
        raise ValueError("no losses to draw: the run has no steps")
    values = np.asarray(losses, np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("the losses hold NaN or infinity: the run diverged")
    top, right, bottom, left = MARGIN
    image = np.full((height, width, 3), 255, np.uint8)
    low, high = float(values.min()), float(values.max())
    log = low > 0 and high / low > 10.0
    scale = np.log10 if log else (lambda v: v)
    y_low, y_high = float(scale(low)), float(scale(high))
    span = (y_high - y_low) or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def points(series: np.ndarray) -> np.ndarray:
        xs = left + np.arange(len(series)) * plot_w / max(len(series) - 1, 1)
        ys = top + plot_h * (1.0 - (scale(series) - y_low) / span)
        return np.round(np.stack([xs, ys], axis=1)).astype(np.int32).reshape(-1, 1, 2)

    cv2.polylines(image, [points(values)], False, RAW, 1, cv2.LINE_AA)
    mean = running_mean(values, max(1, len(values) // 20))
    cv2.polylines(image, [points(mean)], False, MEAN, 2, cv2.LINE_AA)
    cv2.rectangle(image, (left, top), (width - right, height - bottom), INK, 1)
    font, size = cv2.FONT_HERSHEY_SIMPLEX, 0.4
    cv2.putText(image, f"{high:.3g}", (4, top + 10), font, size, INK, 1, cv2.LINE_AA)
    cv2.putText(image, f"{low:.3g}", (4, height - bottom), font, size, INK, 1, cv2.LINE_AA)
    cv2.putText(image, "1", (left, height - bottom + 15), font, size, INK, 1, cv2.LINE_AA)
    cv2.putText(image, f"{len(values)}", (width - right - 30, height - bottom + 15), font, size,
                INK, 1, cv2.LINE_AA)
    label = "loss (log) per step" if log else "loss per step"
    cv2.putText(image, label, (left + plot_w // 2 - 50, height - 8), font, size, INK, 1,
                cv2.LINE_AA)
    return image


def write_loss_curve(losses: Sequence[float], path: Union[str, Path], width: int = 640,
                     height: int = 360) -> Path:
    """Draw the curve and write it to `path` (PNG) through a temporary file."""
    path = Path(path)
    ok, encoded = cv2.imencode(".png", curve_image(losses, width, height))
    if not ok:
        raise ValueError(f"{path}: OpenCV could not encode the loss curve")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(encoded.tobytes())
    temporary.replace(path)
    return path


__all__ = ["curve_image", "running_mean", "write_loss_curve"]
