"""Robust Video Matting on onnxruntime: the pretrained prior of the video-matte node.

RVM is recurrent: four hidden states carry what it has seen from one frame to the next, so
frames must be fed in order. The state is reset when the resolution changes or a scene cut is
detected, and can be saved and restored (the cache stores it beside each frame so a render can
resume mid-sequence exactly where a previous one left off).

Input: sRGB-encoded Rec.709 in 0..1, (H, W, 3) float32. Output: alpha (H, W) and the
un-premultiplied foreground in the same sRGB space.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import cv2
import numpy as np

from mattekit.inference.errors import EngineError

ENGINE_VERSION = "rvm-1"  # bump when a change alters this engine's output (invalidates caches)
STATE_NAMES = ("r1", "r2", "r3", "r4")
THUMBNAIL_SIZE = (32, 18)


@dataclass
class MatteResult:
    """One frame's matte: alpha in 0..1 and the un-premultiplied foreground in engine space."""

    alpha: np.ndarray
    foreground: np.ndarray
    layers: dict[str, np.ndarray] = field(default_factory=dict)  # extra outputs, e.g. confidence.Y


def downsample_ratio(height: int, width: int, target: int = 512) -> float:
    """RVM's downsample ratio so that its coarse pass sees about `target` px on the long side.

    >>> downsample_ratio(2160, 3840)
    0.13333333333333333
    >>> downsample_ratio(360, 480)
    1.0
    """
    return min(1.0, target / max(height, width))


def select_providers(device: str) -> list[str]:
    """onnxruntime execution providers for a device choice: auto = CUDA when present, else CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device in ("cuda", "gpu"):
        if "CUDAExecutionProvider" not in available:
            raise EngineError(
                "--device cuda was asked for, but onnxruntime has no CUDA provider here "
                f"(available: {', '.join(available)}); use --device auto or cpu"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto":
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]
    raise EngineError(f"unknown device '{device}'; use auto, cpu or cuda")


def scene_thumbnail(src: np.ndarray) -> np.ndarray:
    """A tiny area-averaged copy of the frame, for cheap cut detection."""
    return cv2.resize(src, THUMBNAIL_SIZE, interpolation=cv2.INTER_AREA)


def is_scene_cut(previous: Optional[np.ndarray], current: np.ndarray, threshold: float) -> bool:
    """True when two consecutive thumbnails differ by more than `threshold` (mean absolute)."""
    if previous is None or threshold <= 0 or previous.shape != current.shape:
        return False
    return float(np.mean(np.abs(previous - current))) > threshold


class RvmEngine:
    """Recurrent RVM inference with explicit state: fgr, pha, *rec = model(src, *rec, ratio)."""

    temporal = True
    # checked by the registry before the engine is built (inclusive; None = open): RVM's
    # coarse pass needs a few dozen pixels, and a scene-cut distance is never negative
    param_limits = {"downsample_target": (64, None), "cut_threshold": (0.0, None),
                    "warmup_frames": (-1, None)}

    def __init__(self, spec: Any, model: Any, model_file: Optional[Path], device: str,
                 params: Mapping[str, Any]):
        import onnxruntime as ort

        if model_file is None:
            raise EngineError("the rvm engine needs its ONNX model file; none was given")
        self.name = spec.name
        self.input_space = spec.input_space
        self.model_hash = model.sha256
        self.version = ENGINE_VERSION
        self.downsample_target = int(params["downsample_target"])
        self.cut_threshold = float(params["cut_threshold"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = os.cpu_count() or 1
        options.log_severity_level = 3
        # no busy-waiting between ops: decode/encode threads of the render pipeline need the cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(model_file), sess_options=options,
                                                providers=select_providers(device))
        except EngineError:
            raise
        except Exception as exc:  # onnxruntime raises its own unrelated types
            raise EngineError(f"{model_file}: cannot load the RVM model: {exc}") from exc
        self.providers = self.session.get_providers()
        self.cuts_detected = 0
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far (start of a shot)."""
        self._rec = [np.zeros((1, 1, 1, 1), np.float32) for _ in STATE_NAMES]
        self._shape: Optional[tuple[int, int]] = None
        self._thumbnail: Optional[np.ndarray] = None

    def state(self) -> dict[str, np.ndarray]:
        """The recurrent state after the last frame, as plain arrays (saved in the cache)."""
        state = {name: rec for name, rec in zip(STATE_NAMES, self._rec)}
        state["shape"] = np.array(self._shape or (0, 0), np.int64)
        if self._thumbnail is not None:
            state["thumbnail"] = self._thumbnail
        return state

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Resume from a state returned by `state()`."""
        self._rec = [np.asarray(state[name], np.float32) for name in STATE_NAMES]
        shape = tuple(int(v) for v in state["shape"])
        self._shape = (shape[0], shape[1]) if shape != (0, 0) else None
        self._thumbnail = state.get("thumbnail")

    def process(self, src: np.ndarray, inputs: Optional[Mapping[str, np.ndarray]] = None
                ) -> MatteResult:
        """Matte one frame in order. `src`: (H, W, 3) float32, sRGB-encoded, 0..1. RVM takes
        no other input (`inputs` is accepted for a uniform engine interface and ignored)."""
        height, width = src.shape[:2]
        thumbnail = scene_thumbnail(src)
        if self._shape != (height, width):
            self.reset()
        elif is_scene_cut(self._thumbnail, thumbnail, self.cut_threshold):
            self.reset()
            self.cuts_detected += 1
        self._shape, self._thumbnail = (height, width), thumbnail
        ratio = downsample_ratio(height, width, self.downsample_target)
        batch = np.ascontiguousarray(src.transpose(2, 0, 1))[None]
        feeds = {"src": batch, "downsample_ratio": np.array([ratio], np.float32)}
        feeds.update({f"{name}i": rec for name, rec in zip(STATE_NAMES, self._rec)})
        fgr, pha, *rec = self.session.run(None, feeds)
        self._rec = rec
        return MatteResult(alpha=pha[0, 0], foreground=fgr[0].transpose(1, 2, 0))
