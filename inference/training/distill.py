"""Teacher-student distillation (capture-stage matting): a fast student learns a shot from the
alpha its corrected teacher rendered.

The teacher (a base engine, usually with the shot's scribble correction: ``shot:NAME``) is
accurate but slow; it renders the shot once, and a light student (models/student) is trained
on those full-resolution pseudo-labels: random crops of the frames (flipped left-right at
random), L1 plus the Laplacian-pyramid loss (losses.laplacian_loss: edges count at every
scale), Adam, seeded. The student then replaces the teacher on this shot only. Distillation
beats training the same student on the scribbles alone, because the teacher labels every pixel
of every frame, not a few strokes.

Agreement with the teacher is measured on frames held back from training (`holdout_split`):

- ``mse``: mean squared difference x 1e3 (the unit of metrics.MSE_SCALE);
- ``sad``: sum of absolute differences / 1e3, per frame (the matting papers' SAD, in thousands).
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

from mattekit.inference.errors import InputError
from mattekit.inference.metrics import MSE_SCALE, mad, mse
from mattekit.inference.training.dataset import check_plane_sizes, random_crop

SAD_SCALE = 1e-3  # SAD is reported in thousands


@dataclasses.dataclass
class DistillFrame:
    """One frame of the shot as the student sees it, and the teacher's alpha there."""

    plate: np.ndarray                # (H, W, 3) sRGB 0..1
    reference: Optional[np.ndarray]  # clean plate / second view (H, W, 3), or None
    alpha: np.ndarray                # (H, W) the teacher's alpha, 0..1
    name: str = ""                   # file or frame, for errors


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    steps: int = 400
    batch_size: int = 4
    learning_rate: float = 2e-3
    crop: int = 256           # square training crops (clipped to the frame)
    laplacian: float = 1.0    # weight of the Laplacian-pyramid term beside the L1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "crop"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)!r}")


def holdout_split(frames: Sequence[int], every: int) -> tuple[list[int], list[int]]:
    """(training frames, held-back frames): every `every`-th frame of the list (the
    `every`-th, the 2*`every`-th, ...) is held back to measure agreement; InputError when
    either side would be empty."""
    if every < 2:
        raise InputError(f"--holdout {every}: hold back every K-th frame with K >= 2 (K = 1 "
                         "would leave no frame to train on)")
    held = [f for i, f in enumerate(frames) if (i + 1) % every == 0]
    train = [f for f in frames if f not in held]
    if not held:
        raise InputError(f"--holdout {every} holds back no frame of the {len(frames)} given: "
                         f"give at least {every} frames, or a smaller --holdout")
    if not train:
        raise InputError(f"--holdout {every} leaves no frame to train on")
    return train, held


def check_distill_frames(frames: Sequence[DistillFrame]) -> None:
    """InputError when there is no frame, when a frame's planes differ in size, or when some
    frames have a reference and others not."""
    if not frames:
        raise InputError("no frame to distil from")
    for item in frames:
        planes = {"teacher alpha": item.alpha.shape[:2]}
        if item.reference is not None:
            planes["reference"] = item.reference.shape[:2]
        check_plane_sizes(item.plate.shape, planes, item.name or None)
    if len({item.reference is None for item in frames}) > 1:
        raise InputError("some frames have a reference (clean plate / second view) and others "
                         "not; give one for every frame or none")


def distill_crop(item: DistillFrame, size: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(src, ref, teacher alpha) of a random `size` window of a frame, flipped left-right half
    of the time; ref is zeros when the frame has none."""
    reference = item.reference if item.reference is not None else np.zeros_like(item.plate)
    stack = np.concatenate([item.plate, reference, item.alpha[..., None]], axis=2
                           ).astype(np.float32)
    window = random_crop(stack, min(size, stack.shape[0]), min(size, stack.shape[1]), rng)
    if rng.random() < 0.5:
        window = window[:, ::-1]
    return window[..., 0:3], window[..., 3:6], window[..., 6]


def distill_student(model: Any, frames: Sequence[DistillFrame], config: DistillConfig,
                    device: str = "auto", progress: bool = True) -> list[float]:
    """Train `model` (``pha = model(src, ref)``) in place on the teacher's alpha of `frames`;
    the per-step losses (L1 + config.laplacian x Laplacian loss). Batch s is a pure function
    of (config.seed, s)."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from mattekit.inference.models.losses import laplacian_loss
    from mattekit.inference.training.loop import planes_tensor, training_device

    check_distill_frames(frames)
    target = training_device(device)
    net: torch.nn.Module = model
    net.to(target).train()
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)

    losses: list[float] = []
    for step in tqdm(range(config.steps), unit="step", disable=not progress):
        rng = np.random.default_rng([config.seed, step])
        torch.manual_seed(config.seed * 1_000_003 + step)
        crops = [distill_crop(frames[int(rng.integers(len(frames)))], config.crop, rng)
                 for _ in range(config.batch_size)]
        src, ref, teacher = (planes_tensor([c[i] for c in crops], target) for i in range(3))
        optimiser.zero_grad()
        pha = net(src, ref)
        loss = F.l1_loss(pha, teacher) + config.laplacian * laplacian_loss(pha, teacher)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    net.eval()
    return losses


def predict_student(model: Any, src: np.ndarray, ref: Optional[np.ndarray]) -> np.ndarray:
    """The student's alpha of one frame, (H, W) float32 in 0..1 (ref None: zeros), computed on
    the model's device."""
    import torch

    from mattekit.inference.training.loop import planes_tensor

    net: torch.nn.Module = model
    device = next(net.parameters()).device
    reference = ref if ref is not None else np.zeros_like(src)
    with torch.inference_mode():
        pha = net.eval()(planes_tensor([src], device), planes_tensor([reference], device))
    return np.clip(pha[0, 0].float().cpu().numpy(), 0.0, 1.0)


def student_agreement(pred: np.ndarray, teacher: np.ndarray) -> dict[str, float]:
    """How close a student's alpha is to the teacher's on one frame: {"mse": mean squared
    difference x 1e3, "sad": sum of absolute differences / 1e3}."""
    return {"mse": mse(pred, teacher) * MSE_SCALE,
            "sad": mad(pred, teacher) * np.asarray(pred).size * SAD_SCALE}


def mean_agreement(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """`student_agreement` averaged over (pred, teacher) frames."""
    scores = [student_agreement(pred, teacher) for pred, teacher in pairs]
    return {key: float(np.mean([s[key] for s in scores])) for key in ("mse", "sad")}


def median_seconds(call: Callable[[], object], repeats: int = 3, warm: int = 1) -> float:
    """Median wall time of `call()` over `repeats` runs, after `warm` untimed ones (a first
    run pays for lazy set-up: sessions, allocations)."""
    for _ in range(warm):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)
