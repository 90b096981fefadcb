"""The paper architectures behind mattekit's nodes, in PyTorch: trainable, exportable to ONNX.

For people training or exporting networks. The worker never needs this package to run a default
engine: torch is the optional ``train`` extra, and nothing here is imported unless a learned
engine (``engines.py``) is configured with a checkpoint.

No pretrained weights exist for these networks; none are shipped or downloaded. A checkpoint is
what ``checkpoint.save_checkpoint`` writes after training.

Architectures, by name (a registry the tests loop over)::

    cinematte    CineMatte: frozen Siamese ViT + FBAM cross-attention + DPT decoder + JAFAR-style
                 upsampler (inference/models/cinematte)
    bgvitmatte   background-conditioned ViTMatte of the capture-stage paper: the clean plate
                 enters as extra input channels (inference/models/bgvitmatte)
    oavm         OAVM, object-aware video matting: MobileNetV3-style encoder, memory of the first
                 and the previous frame, object queries, OGCR (inference/models/oavm)
    parallaxnet  Parallax Portrait Matting: weight-shared two-view ViT, decoder cross-attention
                 between the views, ViTMatte-style head (inference/models/parallax)
    umatting     μMatting: coarse predictor, key region K, sparse 3D convolutional refiner over
                 (T, H, W) with TSCM gating, A = K·A_d + (1-K)·A_c (inference/models/umatting)
    alphacorrection  a small U-Net that corrects another engine's alpha from (plate, clean
                 plate or second frame, alpha); fine-tuned per shot on scribbles
                 (inference/models/correction, inference/training/scribbles.py)
    student      a light norm-free encoder-decoder, ``pha = model(src, ref)``, distilled per
                 shot from a corrected teacher's alpha (inference/models/student,
                 inference/training/distill.py)

Every network follows one calling convention (RobustVideoMatting's)::

    fgr, pha = model(src, bgr)        # src, bgr: (B, 3, H, W) in 0..1 -> (B, 3, H, W), (B, 1, H, W)

except the video network, whose recurrent state goes in and out explicitly::

    memory = model.init_memory(first_frame, first_mask)
    fgr, pha, memory = model(src, memory)   # oavm

and the per-shot networks, which predict alpha only::

    pha = model(src, ref, alpha)            # alphacorrection
    pha = model(src, ref)                   # student (ref: zeros when there is none)
"""
from __future__ import annotations

import importlib
from typing import Any, Mapping, Optional

from mattekit.inference.models.export import export_onnx

# name -> (module, entry class); imported lazily so that listing them needs no torch
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "cinematte": ("mattekit.inference.models.cinematte", "CineMatte"),
    "bgvitmatte": ("mattekit.inference.models.bgvitmatte", "BgViTMatte"),
    "oavm": ("mattekit.inference.models.oavm", "OAVM"),
    "parallaxnet": ("mattekit.inference.models.parallax", "ParallaxNet"),
    "umatting": ("mattekit.inference.models.umatting", "UMatting"),
    "alphacorrection": ("mattekit.inference.models.correction", "AlphaCorrection"),
    "student": ("mattekit.inference.models.student", "Student"),
}


def architecture_class(name: str) -> Any:
    """The entry class of an architecture by name; an unknown name lists the valid ones."""
    try:
        module_name, class_name = ARCHITECTURES[name]
    except KeyError:
        valid = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown architecture '{name}'; known architectures: {valid}") from None
    return getattr(importlib.import_module(module_name), class_name)


def build_model(name: str, config: Optional[Mapping[str, Any]] = None,
                seed: Optional[int] = None) -> Any:
    """A freshly initialised network (random weights: train it before use) from a config dict;
    with `seed`, the initial weights are drawn from it (the same seed, the same network)."""
    cls = architecture_class(name)
    if seed is not None:
        import torch

        torch.manual_seed(seed)
    return cls(cls.config_class.from_dict(dict(config or {})))


__all__ = ["ARCHITECTURES", "architecture_class", "build_model", "export_onnx"]
