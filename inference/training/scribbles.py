"""Scribble fine-tuning (capture-stage matting): fix a shot from a few strokes.

A user paints, on a few frames, red where the subject is (foreground) and blue where it is not
(background) — or gives the two as separate masks. A correction network (models/correction)
over (plate, clean plate or second frame, the engine's current alpha) is fine-tuned with an L1
loss on the scribbled pixels only, while 80 % of every batch still comes from base composites
(the network must not forget what a good matte looks like where nobody scribbled).

Rules for scribble images (one per scribbled frame, the plate's size):
- a pixel is foreground when red > 0.5 and green, blue < 0.5; background when blue > 0.5 and
  red, green < 0.5; anything else (black, grey, white, a faint stroke) is unscribbled;
- a pixel both red and blue (magenta), or marked in both masks, contradicts itself: an error
  that names the file and counts the pixels, never a silent choice;
- a scribble of another size than its plate, or a scribble set with no stroke at all, is an
  error too.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import cv2
import numpy as np

from mattekit.inference.errors import InputError
from mattekit.inference.training.dataset import (
    CompositeDataset,
    check_plane_sizes,
    random_crop,
)

BASE_FRACTION = 0.8  # share of every batch drawn from base composites (the paper's 80/20)


@dataclasses.dataclass
class Scribbles:
    foreground: np.ndarray  # (H, W) bool: painted as subject
    background: np.ndarray  # (H, W) bool: painted as not subject

    @property
    def count(self) -> int:
        return int(self.foreground.sum() + self.background.sum())


def scribbles_from_colours(image: np.ndarray, source: object = None,
                           frame: Optional[int] = None) -> Scribbles:
    """Red strokes = foreground, blue strokes = background, from an (H, W, 3) RGB image 0..1."""
    red, green, blue = (image[..., i] > 0.5 for i in range(3))
    both = red & blue & ~green
    if both.any():
        raise InputError(f"{int(both.sum())} scribbled pixels are both red (foreground) and "
                         "blue (background); paint each pixel one colour", source, frame)
    return Scribbles(foreground=red & ~green & ~blue, background=blue & ~red & ~green)


def scribbles_from_masks(foreground: np.ndarray, background: np.ndarray, source: object = None,
                         frame: Optional[int] = None) -> Scribbles:
    """Two (H, W) masks (> 0.5 = marked): one for the subject, one for the background."""
    if foreground.shape != background.shape:
        raise InputError(f"the foreground mask {foreground.shape} and the background mask "
                         f"{background.shape} differ in size", source, frame)
    fg, bg = foreground > 0.5, background > 0.5
    if (fg & bg).any():
        raise InputError(f"{int((fg & bg).sum())} pixels are marked in both the foreground and "
                         "the background mask", source, frame)
    return Scribbles(foreground=fg, background=bg)


def read_scribbles(path: Union[str, Path], frame: Optional[int] = None) -> Scribbles:
    """The scribbles painted in an image file (EXR, PNG, TIFF, JPEG: see the colour rule)."""
    from mattekit.inference.exrio import read_image

    image = read_image(path, frame)
    if image.rgb is None:
        raise InputError("the scribble image has no RGB channels", path, frame)
    return scribbles_from_colours(image.rgb, path, frame)


@dataclasses.dataclass
class ScribbledFrame:
    """One scribbled frame of the shot and everything the correction network sees there."""

    plate: np.ndarray               # (H, W, 3) 0..1
    reference: Optional[np.ndarray]  # clean plate or second frame (H, W, 3), or None
    alpha: np.ndarray               # (H, W): the engine's current alpha
    scribbles: Scribbles
    name: str = ""                  # file or frame, for errors


def check_scribbled_frames(frames: Sequence[ScribbledFrame]) -> None:
    """InputError when a frame's planes differ in size or no frame has a stroke."""
    for item in frames:
        planes = {"alpha": item.alpha.shape, "scribbles": item.scribbles.foreground.shape}
        if item.reference is not None:
            planes["reference"] = item.reference.shape[:2]
        check_plane_sizes(item.plate.shape, planes, item.name or None)
    if not frames or sum(item.scribbles.count for item in frames) == 0:
        raise InputError("the scribbles are empty: paint red (foreground) or blue (background) "
                         "strokes on at least one frame")


def scribble_crop(item: ScribbledFrame, size: tuple[int, int], rng: np.random.Generator
                  ) -> dict[str, np.ndarray]:
    """A (size) window of a scribbled frame centred near a random scribbled pixel: src, ref,
    alpha, target (1 on foreground strokes) and mask (1 on any stroke)."""
    fg, bg = item.scribbles.foreground, item.scribbles.background
    reference = item.reference if item.reference is not None else np.zeros_like(item.plate)
    stack = np.concatenate([item.plate, reference, item.alpha[..., None], fg[..., None],
                            (fg | bg)[..., None]], axis=2).astype(np.float32)
    height, width = min(size[0], stack.shape[0]), min(size[1], stack.shape[1])
    rows, cols = np.nonzero(fg | bg)
    if len(rows):
        pick = int(rng.integers(len(rows)))
        top = int(np.clip(rows[pick] - height // 2, 0, stack.shape[0] - height))
        left = int(np.clip(cols[pick] - width // 2, 0, stack.shape[1] - width))
        window = stack[top:top + height, left:left + width]
    else:
        window = random_crop(stack, height, width, rng)
    return {"src": window[..., 0:3], "ref": window[..., 3:6], "alpha": window[..., 6],
            "target": window[..., 7], "mask": window[..., 8]}


def degraded_alpha(alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A base composite's stand-in for an engine's alpha: the truth softened by a random blur
    (up to 2 px sigma), so the network learns to keep a good matte and sharpen a soft one."""
    sigma = float(rng.uniform(0.0, 2.0))
    if sigma < 0.3:
        return alpha.astype(np.float32, copy=True)
    return cv2.GaussianBlur(alpha.astype(np.float32), (0, 0), sigma)


def base_crop(dataset: CompositeDataset, index: int, use_reference: bool
              ) -> dict[str, np.ndarray]:
    """A base composite in the same form as `scribble_crop`: target = the true alpha, mask = 1
    everywhere (a fully labelled sample)."""
    sample = dataset.sample(index)
    rng = np.random.default_rng([dataset.seed, int(index), 1])
    reference = sample.clean_plate if use_reference else np.zeros_like(sample.frame)
    return {"src": sample.frame, "ref": reference, "alpha": degraded_alpha(sample.alpha, rng),
            "target": sample.alpha, "mask": np.ones_like(sample.alpha)}


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 300
    batch_size: int = 5
    learning_rate: float = 3e-3  # 1e-3 left the strokes half-fitted after 300 steps
    crop: tuple[int, int] = (128, 128)
    base_fraction: float = BASE_FRACTION
    seed: int = 0
    warmup_steps: int = 30       # the learning rate ramps up, then decays (cosine)
    gradient_clip: float = 1.0   # one odd batch cannot throw the weights far


def learning_rate_factor(step: int, steps: int, warmup_steps: int, floor: float = 0.1
                         ) -> float:
    """The learning rate's share at `step` (0-based) of `steps`: a linear warm-up from
    1/warmup_steps to 1, then a cosine down to `floor` at the last step. Adam's first steps
    are wild, and its late ones must not throw away a fit already found."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class BestWeights:
    """The weights at the lowest running-mean loss seen so far (a window of `window` steps),
    to restore at the end: a late loss spike — one unlucky batch, a pile of dead units — can
    then cost the steps after it, never the fit already found."""

    def __init__(self, window: int = 20):
        self.window = window
        self.recent: list[float] = []
        self.best = math.inf
        self.state: Optional[dict[str, Any]] = None

    def update(self, net: Any, loss: float) -> None:
        self.recent = (self.recent + [loss])[-self.window:]
        if len(self.recent) < self.window:
            return
        mean = sum(self.recent) / len(self.recent)
        if mean < self.best:
            self.best = mean
            self.state = {k: v.detach().clone() for k, v in net.state_dict().items()}

    def restore(self, net: Any) -> None:
        if self.state is not None:
            net.load_state_dict(self.state)


def batch_split(batch_size: int, base_fraction: float) -> tuple[int, int]:
    """(base samples, scribble samples) of one batch: at least one scribble sample."""
    scribbled = max(1, int(round(batch_size * (1.0 - base_fraction))))
    return max(0, batch_size - scribbled), scribbled


def same_size_groups(samples: Sequence[dict[str, np.ndarray]]
                     ) -> list[dict[str, list[np.ndarray]]]:
    """The samples gathered by crop size, plane by plane: one batch per size."""
    groups: dict[tuple[int, ...], dict[str, list[np.ndarray]]] = {}
    for sample in samples:
        group = groups.setdefault(sample["src"].shape, {k: [] for k in sample})
        for key, value in sample.items():
            group[key].append(value)
    return list(groups.values())


def finetune_scribbles(model: object, frames: Sequence[ScribbledFrame],
                       base: Optional[CompositeDataset], config: FinetuneConfig,
                       device: str = "auto", progress: bool = True) -> list[float]:
    """Fine-tune `model` (an AlphaCorrection) in place; the per-step losses. Each batch holds
    base composites and scribble crops in the ratio `base_fraction`; the loss is the L1 on
    labelled pixels (every pixel of a composite, the strokes of a scribbled frame), averaged
    per sample so a few strokes weigh as much as a whole composite. The learning rate warms up
    and decays (`learning_rate_factor`), and the model ends on the weights of its lowest
    running loss (`BestWeights`)."""
    import torch
    from tqdm import tqdm

    from mattekit.inference.models.losses import masked_l1
    from mattekit.inference.training.loop import planes_tensor, training_device

    check_scribbled_frames(frames)
    target = training_device(device)
    net: torch.nn.Module = model  # type: ignore[assignment]
    net.to(target).train()
    optimiser = torch.optim.Adam([p for p in net.parameters() if p.requires_grad],
                                 lr=config.learning_rate)
    with_reference = any(item.reference is not None for item in frames)
    base_count, scribble_count = batch_split(config.batch_size,
                                             config.base_fraction if base is not None else 0.0)
    losses: list[float] = []
    best = BestWeights()
    for step in tqdm(range(config.steps), unit="step", disable=not progress):
        rng = np.random.default_rng([config.seed, step])
        torch.manual_seed(config.seed * 1_000_003 + step)
        samples = [base_crop(base, step * base_count + i, with_reference)
                   for i in range(base_count)] if base is not None else []
        for _ in range(scribble_count):
            samples.append(scribble_crop(frames[int(rng.integers(len(frames)))], config.crop,
                                         rng))
        optimiser.zero_grad()
        loss = torch.zeros((), device=target)
        for group in same_size_groups(samples):  # crops may differ in size: a forward each size
            planes = {k: planes_tensor(group[k], target) for k in group}
            pha = net(planes["src"], planes["ref"], planes["alpha"])
            for i in range(pha.shape[0]):
                loss = loss + masked_l1(pha[i], planes["target"][i], planes["mask"][i]
                                        ) / len(samples)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), config.gradient_clip)
        for param_group in optimiser.param_groups:
            param_group["lr"] = config.learning_rate * learning_rate_factor(
                step, config.steps, config.warmup_steps)
        best.update(net, float(loss.detach()))  # the weights this loss was measured on
        optimiser.step()
        losses.append(float(loss.detach()))
    best.restore(net)
    net.eval()
    return losses


def correct_alpha(model: object, plate: np.ndarray, reference: Optional[np.ndarray],
                  alpha: np.ndarray) -> np.ndarray:
    """The fine-tuned network's alpha for one frame ((H, W) float32), on the model's device."""
    import torch

    from mattekit.inference.training.loop import planes_tensor

    net: torch.nn.Module = model  # type: ignore[assignment]
    device = next(net.parameters()).device
    ref = reference if reference is not None else np.zeros_like(plate)
    with torch.no_grad():
        pha = net.eval()(*(planes_tensor([image], device) for image in (plate, ref, alpha)))
    return pha[0, 0].cpu().numpy()
