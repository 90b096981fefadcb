"""Engines that run a trained paper architecture from a checkpoint (torch, the `train` extra).

Selectable per node only when a checkpoint is configured: there are no pretrained weights for
these networks, and an untrained network is never run by default. Without a `checkpoint`
parameter the engine refuses to start, saying so; the node's default engine needs no checkpoint.

Engine parameters (manifest ``defaults``):
    checkpoint     path of a file written by ``models.checkpoint.save_checkpoint`` ("" = none)
    working_size   long side, in pixels, the network runs at (0 = the frame's own size); alpha
                   and foreground are resampled back to the frame's size

Inputs: ``src`` (H, W, 3) float32 in the engine's input space (the space the checkpoint was
trained in, 0..1), ``inputs["clean_plate"]`` of the same size (required); ``inputs["mask"]``
(H, W) is the guidance map of a BgViTMatte trained with guidance, and ignored otherwise.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import cv2
import numpy as np

from mattekit.inference.engines.registry import file_sha256
from mattekit.inference.engines.rvm import MatteResult
from mattekit.inference.errors import EngineError


class CheckpointEngine:
    """A per-frame engine around one trained network; subclasses name the architecture."""

    architecture = ""
    temporal = False
    clip_input = True

    def __init__(self, spec: Any, model: Any, model_file: Optional[Path], device: str,
                 params: Mapping[str, Any]):
        self.name = spec.name
        self.input_space = spec.input_space
        self.params = dict(params)
        checkpoint = str(self.params.get("checkpoint") or "").strip()
        if not checkpoint:
            raise EngineError(
                f"no checkpoint configured for {self.architecture}: set the engine parameter "
                f"'checkpoint' (--param checkpoint=PATH) to a trained {self.architecture} "
                "checkpoint (no pretrained weights exist for it); the default engine needs none")
        self.working_size = self._working_size(self.params.get("working_size"))
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise EngineError(f"{path}: the {self.architecture} checkpoint does not exist; "
                              "check the engine parameter 'checkpoint'")
        try:
            import torch
        except ImportError as exc:
            raise EngineError(f"the {self.architecture} engine needs torch: install mattekit "
                              "with its 'train' extra (python3 install.py --train)") from exc
        from mattekit.inference.models.checkpoint import load_checkpoint

        self.device = self._torch_device(torch, device)
        try:
            self.network = load_checkpoint(path, "cpu", self.architecture).to(self.device)
        except ValueError as exc:
            raise EngineError(str(exc)) from exc
        self.model_hash = file_sha256(path)
        self.version = f"{self.architecture}-1"
        self.providers = [str(self.device)]

    def _working_size(self, value: Any) -> int:
        """The `working_size` parameter as a whole number of pixels >= 0 (0 = frame size)."""
        try:
            size = int(value or 0)
        except (TypeError, ValueError):
            size = -1
        if size < 0 or (isinstance(value, float) and value != size):
            raise EngineError(f"{self.name}: working_size must be a whole number of pixels "
                              f">= 0 (0 = the frame's own size), not {value!r}")
        return size

    @staticmethod
    def _torch_device(torch: Any, device: str) -> Any:
        if device == "cpu":
            return torch.device("cpu")
        if device in ("cuda", "gpu"):
            if not torch.cuda.is_available():
                raise EngineError("--device cuda was asked for, but torch sees no CUDA device; "
                                  "use --device auto or cpu")
            return torch.device("cuda")
        if device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        raise EngineError(f"unknown device '{device}'; use auto, cpu or cuda")

    def reset(self) -> None:
        """Per-frame engine: nothing carried between frames."""

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Stateless: nothing to restore."""

    def _working(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        scale = self.working_size / max(height, width) if self.working_size else 1.0
        if scale >= 1.0:
            return image
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)

    def _tensor(self, image: np.ndarray) -> Any:
        import torch

        array = np.ascontiguousarray(np.atleast_3d(image).transpose(2, 0, 1), np.float32)
        return torch.from_numpy(array)[None].to(self.device)

    def _network_inputs(self, src: np.ndarray, plate: np.ndarray,
                        mask: Optional[np.ndarray]) -> list[Any]:
        return [self._tensor(self._working(src)), self._tensor(self._working(plate))]

    def process(self, src: np.ndarray, inputs: Optional[Mapping[str, np.ndarray]] = None
                ) -> MatteResult:
        """Matte one frame with the trained network (needs inputs["clean_plate"])."""
        import torch

        plate = None if not inputs else inputs.get("clean_plate")
        if plate is None:
            raise EngineError(f"{self.name} needs a clean plate (--clean-plate)")
        if plate.shape[:2] != src.shape[:2]:
            raise EngineError(f"{self.name}: the clean plate is {plate.shape[1]}x"
                              f"{plate.shape[0]}, the plate {src.shape[1]}x{src.shape[0]}; "
                              "they must be the same size")
        mask = None if not inputs else inputs.get("mask")
        with torch.inference_mode():
            fgr, pha = self.network(*self._network_inputs(src[..., :3], plate[..., :3], mask))
        alpha = pha[0, 0].float().cpu().numpy()
        foreground = fgr[0].float().cpu().numpy().transpose(1, 2, 0)
        height, width = src.shape[:2]
        if alpha.shape != (height, width):
            alpha = cv2.resize(alpha, (width, height), interpolation=cv2.INTER_LINEAR)
            foreground = cv2.resize(foreground, (width, height), interpolation=cv2.INTER_LINEAR)
        return MatteResult(alpha=np.clip(alpha, 0.0, 1.0),
                           foreground=np.ascontiguousarray(foreground, np.float32))


class CineMatteEngine(CheckpointEngine):
    """CineMatte from a trained checkpoint (the mask input is not used)."""

    architecture = "cinematte"


class BgViTMatteEngine(CheckpointEngine):
    """Background-conditioned ViTMatte from a trained checkpoint; a network trained with
    guidance takes the mask input as its guidance (0.5 = unknown where no mask is given)."""

    architecture = "bgvitmatte"

    def _network_inputs(self, src: np.ndarray, plate: np.ndarray,
                        mask: Optional[np.ndarray]) -> list[Any]:
        tensors = super()._network_inputs(src, plate, mask)
        if self.network.config.guidance:
            guide = (np.full(src.shape[:2], 0.5, np.float32) if mask is None
                     else np.asarray(mask, np.float32).reshape(src.shape[:2]))
            tensors.append(self._tensor(self._working(guide)))
        return tensors
