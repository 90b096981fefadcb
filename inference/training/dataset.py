"""Training composites built on the fly: foregrounds with alpha over backgrounds, augmented.

Sample ``index`` of a dataset is a pure function of (seed, index): a resumed training run sees
exactly the batches the uninterrupted one would have, and data-loader workers need no shared
state. There is no fixed length: every index is a fresh composite.

Per sample (the papers' recipe): a foreground layer (random flip, random affine) and its alpha,
colour-jittered; a background cropped from a random place, jittered on its own; distractor
foregrounds that belong to the background (in the frame and the clean plate, or the clean plate
only: augment.random_distractors); the clean plate a second capture of the background (its own
small exposure change); independent Gaussian sensor noise (sigma up to 0.1) on frame and plate.

    data = CompositeDataset([(fg, alpha), ...], [background, ...], size=(256, 256), seed=0)
    sample = data.sample(17)   # .frame, .clean_plate, .alpha, .foreground, .trimap
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Sequence, Union

import cv2
import numpy as np

from mattekit.inference.errors import InputError
from mattekit.inference.models.augment import compose_sample, random_distractors
from mattekit.inference.parallax import trimap_from_alpha
from mattekit.inference.training.transforms import (
    colour_jitter,
    random_affine,
    random_flip,
    sensor_noise,
)

Layer = tuple[np.ndarray, np.ndarray]  # (foreground (H, W, 3), alpha (H, W)), float32 0..1


@dataclasses.dataclass(frozen=True)
class AugmentOptions:
    """How hard each augmentation pushes; 0 (or False) turns one off."""

    flip: float = 0.5              # probability of a left-right mirror
    affine: bool = True            # random rotation / scale / shear / shift of the foreground
    jitter: float = 0.2            # colour jitter amount (brightness, contrast, saturation)
    noise_sigma: float = 0.1       # sensor noise: sigma drawn in 0..noise_sigma per image
    distractors: float = 0.5       # probability of distractor foregrounds in the background
    plate_only: float = 0.25       # a distractor in the clean plate only (gone from the take)
    plate_exposure: float = 0.05   # the clean plate's own exposure change, +- this gain


@dataclasses.dataclass
class CompositeSample:
    frame: np.ndarray         # (H, W, 3): the plate to matte
    clean_plate: np.ndarray   # (H, W, 3): the background captured on its own
    alpha: np.ndarray         # (H, W): ground truth
    foreground: np.ndarray    # (H, W, 3): ground-truth foreground colour
    trimap: np.ndarray        # (H, W): 0 / 0.5 / 1, the loss's known and unknown regions


def fit_layer(foreground: np.ndarray, alpha: np.ndarray, height: int, width: int) -> Layer:
    """The layer scaled to fit inside (height, width), centred on a transparent canvas."""
    scale = min(height / alpha.shape[0], width / alpha.shape[1])
    h, w = max(1, round(alpha.shape[0] * scale)), max(1, round(alpha.shape[1] * scale))
    fg = np.zeros((height, width, 3), np.float32)
    a = np.zeros((height, width), np.float32)
    top, left = (height - h) // 2, (width - w) // 2
    fg[top:top + h, left:left + w] = cv2.resize(foreground, (w, h), interpolation=cv2.INTER_AREA)
    a[top:top + h, left:left + w] = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_AREA)
    return fg, a


def check_plane_sizes(plate: tuple[int, ...], planes: Mapping[str, tuple[int, ...]],
                      source: object = None) -> None:
    """InputError naming the first plane whose shape is not the plate's (H, W); `planes`
    maps a name to its shape, (H, W)."""
    height, width = plate[:2]
    for what, shape in planes.items():
        if tuple(shape) != (height, width):
            raise InputError(f"the {what} is {shape[1]}x{shape[0]} but the plate is "
                             f"{width}x{height}", source)


def random_crop(image: np.ndarray, height: int, width: int, rng: np.random.Generator
                ) -> np.ndarray:
    """A (height, width) window at a random place, the image first scaled up when smaller."""
    scale = max(height / image.shape[0], width / image.shape[1], 1.0)
    if scale > 1.0:
        size = (max(width, round(image.shape[1] * scale)),
                max(height, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    top = int(rng.integers(image.shape[0] - height + 1))
    left = int(rng.integers(image.shape[1] - width + 1))
    return np.ascontiguousarray(image[top:top + height, left:left + width], np.float32)


class CompositeDataset:
    """Composites of `foregrounds` ((fg, alpha) pairs) over `backgrounds` at `size` (h, w)."""

    def __init__(self, foregrounds: Sequence[Layer], backgrounds: Sequence[np.ndarray],
                 size: tuple[int, int], seed: int = 0,
                 options: AugmentOptions = AugmentOptions(), trimap_band: int = 0):
        if not foregrounds or not backgrounds:
            raise ValueError("a composite dataset needs at least one foreground and one "
                             "background")
        for fg, alpha in foregrounds:
            if fg.shape[:2] != alpha.shape:
                raise ValueError(f"foreground {fg.shape} and alpha {alpha.shape} differ in size")
        self.foregrounds = [(np.asarray(f, np.float32), np.asarray(a, np.float32))
                            for f, a in foregrounds]
        self.backgrounds = [np.asarray(b, np.float32) for b in backgrounds]
        self.size = (int(size[0]), int(size[1]))
        self.seed = int(seed)
        self.options = options
        self.trimap_band = trimap_band or max(1, min(self.size) // 32)

    def _layer(self, index: int, rng: np.random.Generator, height: int, width: int) -> Layer:
        options = self.options
        fg, alpha = fit_layer(*self.foregrounds[index], height, width)
        fg, alpha = random_flip(fg, alpha, rng, options.flip)
        if options.affine:
            fg, alpha = random_affine(fg, alpha, rng)
        if options.jitter:
            fg = colour_jitter(fg, rng, options.jitter, options.jitter, options.jitter)
        return fg, alpha

    def sample(self, index: int) -> CompositeSample:
        """Composite number `index` (the same every time for one seed)."""
        options = self.options
        rng = np.random.default_rng([self.seed, int(index)])
        height, width = self.size
        chosen = int(rng.integers(len(self.foregrounds)))
        fg, alpha = self._layer(chosen, rng, height, width)
        background = random_crop(self.backgrounds[int(rng.integers(len(self.backgrounds)))],
                                 height, width, rng)
        if options.jitter:
            background = colour_jitter(background, rng, options.jitter, options.jitter,
                                       options.jitter)
        others = [i for i in range(len(self.foregrounds)) if i != chosen]
        pool = [self._layer(int(i), rng, height // 2, width // 2)
                for i in rng.permutation(others)[:2]] if options.distractors else []
        distractors = random_distractors(pool, height, width, rng, options.distractors,
                                         plate_only=options.plate_only)
        exposure = 1.0 + rng.uniform(-options.plate_exposure, options.plate_exposure)
        clean = np.clip(background * exposure, 0.0, 1.0).astype(np.float32)
        composite = compose_sample(fg, alpha, background, distractors, clean_background=clean)
        frame, plate = composite.frame, composite.clean_plate
        if options.noise_sigma:
            frame = sensor_noise(frame, rng, options.noise_sigma)
            plate = sensor_noise(plate, rng, options.noise_sigma)
        return CompositeSample(frame=frame, clean_plate=plate, alpha=composite.alpha,
                               foreground=composite.foreground,
                               trimap=trimap_from_alpha(composite.alpha, self.trimap_band))


def read_layer(image_path: Union[str, Path], alpha_path: Union[str, Path]) -> Layer:
    """A foreground (8- or 16-bit image) and its alpha (grey image) as float32 0..1."""
    image = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
    alpha = cv2.imread(str(alpha_path), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
    if image is None:
        raise ValueError(f"{image_path}: not a readable image")
    if alpha is None:
        raise ValueError(f"{alpha_path}: not a readable image")
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    rgb = cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2RGB).astype(np.float32) / scale
    matte = alpha.astype(np.float32) / (65535.0 if alpha.dtype == np.uint16 else 255.0)
    if rgb.shape[:2] != matte.shape:
        raise ValueError(f"{alpha_path}: alpha {matte.shape} does not match the image "
                         f"{rgb.shape[:2]} of {image_path}")
    return rgb, matte
