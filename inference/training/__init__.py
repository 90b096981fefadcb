"""Training toolkit: composites built on the fly, the papers' augmentations, a training loop
with checkpoints and resumption, the loss curve as PNG, and ONNX export of the result.

Needs the ``train`` extra (torch, onnx) for the loop; the dataset and transforms are numpy +
OpenCV. Training never registers a network as an engine: a checkpoint is used only where a
user configures it.

    from mattekit.inference.training import CompositeDataset, TrainingConfig, train
    data = CompositeDataset(foregrounds, backgrounds, size=(256, 256), seed=0)
    result = train(build_model("bgvitmatte"), data, "runs/a", TrainingConfig(steps=2000))
"""
from __future__ import annotations

from mattekit.inference.training.dataset import AugmentOptions, CompositeDataset, read_layer
from mattekit.inference.training.loop import TrainingConfig, TrainingResult, train

__all__ = ["AugmentOptions", "CompositeDataset", "TrainingConfig", "TrainingResult",
           "read_layer", "train"]
