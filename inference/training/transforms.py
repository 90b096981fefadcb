"""Per-sample augmentations of the matting papers: flips, random affine, colour jitter and
Gaussian sensor noise (BGMv2 / RVM / CineMatte / the capture-stage paper).

Numpy + OpenCV on (H, W, 3) float32 images and (H, W) alphas in 0..1, each drawing what it
needs from the `rng` it is given, so one seed gives one sample, in any process.
Geometric transforms move a foreground layer and its alpha together; photometric ones change
colour only and never touch alpha.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

# RGB -> YIQ: hue turns as a rotation of the (I, Q) chroma plane, luma stays put
_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                   np.float32)
_FROM_YIQ = np.linalg.inv(_TO_YIQ).astype(np.float32)


def random_flip(foreground: np.ndarray, alpha: np.ndarray, rng: np.random.Generator,
                probability: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The layer mirrored left-right with `probability`, both planes together."""
    if rng.random() >= probability:
        return foreground, alpha
    return foreground[:, ::-1].copy(), alpha[:, ::-1].copy()


def affine_matrix(height: int, width: int, rotation: float, scale: float, shear: float,
                  translate: tuple[float, float]) -> np.ndarray:
    """2x3 matrix turning by `rotation` degrees, scaling and shearing (degrees, along x) about
    the centre, then shifting by `translate` (dy, dx) pixels."""
    angle, skew = math.radians(rotation), math.tan(math.radians(shear))
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    linear = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, skew], [0.0, 1.0]])
    centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    offset = centre - linear @ centre + np.array([translate[1], translate[0]])
    return np.hstack([linear, offset[:, None]]).astype(np.float32)


def random_affine(foreground: np.ndarray, alpha: np.ndarray, rng: np.random.Generator,
                  max_rotation: float = 10.0, scale: tuple[float, float] = (0.8, 1.2),
                  max_shear: float = 5.0, max_translate: float = 0.1
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The layer under one random affine warp (bilinear; what leaves the canvas is lost, what
    enters it is transparent). `max_translate` is a fraction of the size."""
    height, width = alpha.shape[:2]
    matrix = affine_matrix(
        height, width, float(rng.uniform(-max_rotation, max_rotation)),
        float(rng.uniform(*scale)), float(rng.uniform(-max_shear, max_shear)),
        (float(rng.uniform(-max_translate, max_translate) * height),
         float(rng.uniform(-max_translate, max_translate) * width)))

    def warp(plane: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(np.ascontiguousarray(plane, np.float32), matrix, (width, height),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=0)

    return warp(foreground), np.clip(warp(alpha), 0.0, 1.0)


def colour_jitter(image: np.ndarray, rng: np.random.Generator, brightness: float = 0.2,
                  contrast: float = 0.2, saturation: float = 0.2, hue: float = 0.05
                  ) -> np.ndarray:
    """Random brightness gain, contrast about the mean luma, saturation and hue turn (a
    fraction of a full turn), each drawn within +- its amount; clipped to 0..1."""
    yiq = image.astype(np.float32) @ _TO_YIQ.T
    yiq[..., 0] *= 1.0 + rng.uniform(-brightness, brightness)
    mean = float(yiq[..., 0].mean())
    yiq[..., 0] = mean + (yiq[..., 0] - mean) * (1.0 + rng.uniform(-contrast, contrast))
    angle = 2.0 * math.pi * rng.uniform(-hue, hue)
    gain = 1.0 + rng.uniform(-saturation, saturation)
    turn = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]],
                    np.float32)
    yiq[..., 1:] = (yiq[..., 1:] @ turn.T) * gain
    return np.clip(yiq @ _FROM_YIQ.T, 0.0, 1.0).astype(np.float32)


def sensor_noise(image: np.ndarray, rng: np.random.Generator, max_sigma: float = 0.1
                 ) -> np.ndarray:
    """Gaussian noise of one random sigma in 0..max_sigma per image, clipped to 0..1."""
    sigma = float(rng.uniform(0.0, max_sigma))
    noisy = image + rng.normal(0.0, sigma, size=image.shape).astype(np.float32)
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)
