"""ONNX export of any architecture in this package, at a fixed frame size.

    python -c "from mattekit.inference.models import build_model, export_onnx; \
               export_onnx(build_model('cinematte'), 'cinematte.onnx', 1080, 1920)"

Inputs and outputs keep the network's own names (``src``, ``bgr`` -> ``fgr``, ``pha``), float32,
batch 1. The graph is traced for one size (padding to the patch grid is resolved at trace time);
export again for another size. Needs torch and the ``onnx`` package (the legacy TorchScript
exporter: it needs no onnxscript and gives plain opset-17 graphs that onnxruntime runs).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Union

OPSET = 17


def export_onnx(model: Any, path: Union[str, Path], height: int, width: int,
                opset: int = OPSET) -> Path:
    """Write `model` (an architecture of this package) as ONNX for `height` x `width` frames."""
    import torch

    if height <= 0 or width <= 0:
        raise ValueError(f"export size must be positive, got {height}x{width}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        inputs = model.example_inputs(height, width)
        with torch.no_grad(), warnings.catch_warnings():
            # the tracer warns about shapes turned into constants: intended, the size is fixed
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message="Constant folding")
            torch.onnx.export(model, inputs, str(path), dynamo=False, opset_version=opset,
                              input_names=list(model.onnx_input_names),
                              output_names=list(model.onnx_output_names),
                              do_constant_folding=True)
    finally:
        model.train(was_training)
    return path
