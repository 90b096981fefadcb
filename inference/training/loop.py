"""The training loop: batches from a CompositeDataset, the matting losses, Adam, checkpoints,
resumption, a tqdm progress bar, the loss curve as PNG and the ONNX export of the result.

For the frame + clean plate networks (``fgr, pha = model(src, bgr)``: cinematte, bgvitmatte);
``step_loss`` is the one place that knows the calling convention.

A run writes into its folder::

    checkpoint.pt   the network + the training state (step, losses, optimiser), every
                    `checkpoint_every` steps and at the end (atomic: a crash leaves the last one)
    loss.png        the loss curve, redrawn with every checkpoint
    model.onnx      the trained network, exported at `export_size` (when one is given)

Resuming from a checkpoint gives the same network and losses as the uninterrupted run: batch
``s`` is a pure function of (dataset seed, s), the torch seed is set per step, and the optimiser
state rides in the checkpoint.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from mattekit.inference.models.checkpoint import read_checkpoint, save_checkpoint
from mattekit.inference.training.curve import write_loss_curve
from mattekit.inference.training.dataset import CompositeDataset

CHECKPOINT = "checkpoint.pt"
CURVE = "loss.png"
ONNX = "model.onnx"


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    steps: int
    batch_size: int = 4
    learning_rate: float = 1e-3
    checkpoint_every: int = 100
    seed: int = 0
    export_size: Optional[tuple[int, int]] = None  # (height, width) of the ONNX graph

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)!r}")


@dataclasses.dataclass
class TrainingResult:
    model: Any
    losses: list[float]
    checkpoint: Path
    curve: Path
    onnx: Optional[Path]


def training_device(name: str = "auto") -> Any:
    """The torch device: "auto" is the GPU when torch sees one, else the CPU."""
    import torch

    from mattekit.inference.models.engines import CheckpointEngine

    return CheckpointEngine._torch_device(torch, name)


def planes_tensor(planes: Sequence[np.ndarray], device: Any = "cpu") -> Any:
    """Same-size numpy planes, (H, W) or (H, W, C), as one float32 (B, C, H, W) tensor on
    `device`: how every training and prediction step hands images to a network."""
    import torch

    stacked = np.stack(planes)
    chw = stacked[:, None] if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(chw, np.float32)).to(device)


def batch_tensors(dataset: CompositeDataset, step: int, batch_size: int, device: Any
                  ) -> dict[str, Any]:
    """Batch number `step`: samples step*batch_size .. +batch_size as (B, C, H, W) tensors."""
    samples = [dataset.sample(step * batch_size + i) for i in range(batch_size)]
    return {name: planes_tensor([getattr(s, name) for s in samples], device)
            for name in ("frame", "clean_plate", "alpha", "foreground", "trimap")}


def step_loss(model: Any, batch: dict[str, Any]) -> Any:
    """The matting loss of one batch (known/unknown L1, Laplacian, gradient) plus L1 on the
    foreground colour where the subject is."""
    from mattekit.inference.models.losses import masked_l1, matting_loss

    fgr, pha = model(batch["frame"], batch["clean_plate"])
    subject = (batch["alpha"] > 0).float().expand_as(fgr)
    return matting_loss(pha, batch["alpha"], batch["trimap"])["total"] + masked_l1(
        fgr, batch["foreground"], subject)


def _resume(model: Any, optimiser: Any, path: Union[str, Path], device: Any
            ) -> tuple[int, list[float]]:
    payload = read_checkpoint(path, map_location=str(device))
    extra = payload.get("extra") or {}
    if payload.get("architecture") != model.architecture:
        raise ValueError(f"{path}: holds a '{payload.get('architecture')}' network, "
                         f"not '{model.architecture}'")
    if payload.get("config") != model.config.to_dict():
        raise ValueError(f"{path}: the network was built with another config than this one")
    if "optimiser" not in extra:
        raise ValueError(f"{path}: holds weights only, no training state to resume from")
    model.load_state_dict(payload["state_dict"])
    optimiser.load_state_dict(extra["optimiser"])
    return int(extra["step"]), [float(v) for v in extra["losses"]]


def train(model: Any, dataset: CompositeDataset, folder: Union[str, Path],
          config: TrainingConfig, resume_from: Optional[Union[str, Path]] = None,
          device: str = "auto", progress: bool = True) -> TrainingResult:
    """Train `model` for `config.steps` steps in all (counting those of `resume_from`)."""
    import torch
    from tqdm import tqdm

    folder = Path(folder)
    target = training_device(device)
    model.to(target).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(trainable, lr=config.learning_rate)
    step, losses = 0, list[float]()
    if resume_from is not None:
        step, losses = _resume(model, optimiser, resume_from, target)
    checkpoint, curve = folder / CHECKPOINT, folder / CURVE

    def save() -> None:
        save_checkpoint(model, checkpoint, extra={
            "step": step, "losses": list(losses), "optimiser": optimiser.state_dict(),
            "training": dataclasses.asdict(config)})
        write_loss_curve(losses, curve)

    with tqdm(total=config.steps, initial=step, unit="step", disable=not progress) as bar:
        while step < config.steps:
            torch.manual_seed(config.seed * 1_000_003 + step)  # dropout etc.: per step
            batch = batch_tensors(dataset, step, config.batch_size, target)
            optimiser.zero_grad()
            loss = step_loss(model, batch)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if step % config.checkpoint_every == 0 or step == config.steps:
                save()
    if not checkpoint.exists():
        save()  # resumed at or past the end: still leave the state and the curve
    onnx = None
    if config.export_size is not None:
        from mattekit.inference.models.export import export_onnx

        model.cpu()
        onnx = export_onnx(model, folder / ONNX, *config.export_size)
    return TrainingResult(model=model.eval(), losses=losses, checkpoint=checkpoint, curve=curve,
                          onnx=onnx)
