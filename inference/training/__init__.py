"""Training toolkit: composites built on the fly, the papers' augmentations (parallax pairs
with noisy motion in parallax_pairs.py; Sequential Foreground Merging for clips in
models/augment_video.py), a training loop with checkpoints and resumption, the loss curve as
PNG, and ONNX export of the result.

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
from mattekit.inference.training.parallax_pairs import ParallaxPair, parallax_pair

__all__ = ["AugmentOptions", "CompositeDataset", "ParallaxPair", "TrainingConfig",
           "TrainingResult", "parallax_pair", "read_layer", "train"]
