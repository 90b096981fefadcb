"""The engines behind ``shot:NAME`` (engines/shot.py): a base engine + its scribble
correction, or a distilled student alone. Needs torch (the ``train`` extra).

``ShotCorrectionEngine`` runs the base engine unchanged (inputs, parameters, temporal state,
warm-up, cut detection) and replaces its alpha with the correction network's, which sees what
`mattekit train scribbles` fed it: the plate in the engines' sRGB 0..1, the reference (the
node's clean plate or second view) only when the checkpoint was trained with one (zeros
otherwise), and the base alpha. The foreground stays the base engine's.

``ShotStudentEngine`` runs ``pha = net(src, ref)`` per frame on sRGB 0..1 (ref: the clean plate
or second view when the checkpoint was trained with one, zeros otherwise); its foreground is the
plate itself (a student predicts alpha only).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from mattekit import ocio
from mattekit.inference.engines.registry import create_engine, load_manifest
from mattekit.inference.engines.rvm import MatteResult
from mattekit.inference.errors import EngineError

REFERENCE_INPUTS = ("clean_plate", "reference")  # the node inputs a shot model's `ref` is


def reference_of(inputs: Optional[Mapping[str, np.ndarray]]) -> Optional[np.ndarray]:
    """The node's clean plate, else its second view, else None."""
    for name in REFERENCE_INPUTS:
        image = None if not inputs else inputs.get(name)
        if image is not None:
            return image
    return None


def _load(spec: Any, device: str, architecture: Optional[str]) -> tuple[Any, Any, str]:
    """(network on its device, the torch device, sha256 of the bytes loaded): hashed and
    loaded from one read, so the cache key always names the weights that run."""
    import hashlib

    try:
        import torch
    except ImportError as exc:
        raise EngineError(f"{spec.name} needs torch: install mattekit with its 'train' extra "
                          "(python3 install.py --train)") from exc
    from mattekit.inference.models import architecture_class
    from mattekit.inference.models.engines import CheckpointEngine

    path: Path = spec.shot.path
    try:
        data = path.read_bytes()
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        name = str(payload["architecture"])
        if architecture is not None and name != architecture:
            raise ValueError(f"holds a '{name}' network, not '{architecture}'")
        cls = architecture_class(name)
        network = cls(cls.config_class.from_dict(payload.get("config") or {}))
        network.load_state_dict(payload.get("state_dict") or {})
    except OSError as exc:
        raise EngineError(f"{path}: shot model '{spec.shot.name}' is unreadable "
                          f"({exc.strerror or exc})") from None
    except Exception as exc:  # torch raises pickle, zip, key and runtime errors alike
        raise EngineError(f"{path}: shot model '{spec.shot.name}' does not load: {exc}; "
                          "train it again") from None
    target = CheckpointEngine._torch_device(torch, device)
    return network.eval().to(target), target, hashlib.sha256(data).hexdigest()


class ShotCorrectionEngine:
    """The base engine, then the shot's alpha correction (see the module docstring)."""

    def __init__(self, spec: Any, model: Any, model_file: Optional[Path], device: str,
                 params: Mapping[str, Any]):
        self.name = spec.name
        self.input_space = spec.input_space
        self.temporal = spec.temporal
        self.base = create_engine(spec.shot.base_engine, device, params, load_manifest())
        self.network, self.device, sha = _load(spec, device, "alphacorrection")
        self.with_reference = spec.shot.with_reference
        self.model_hash = sha
        # the base engine's version and model take part in the cache key too
        self.version = f"shot-correction-1/{self.base.version}/{self.base.model_hash}"
        self.providers = list(getattr(self.base, "providers", [])) + [str(self.device)]
        self._to_srgb = ocio.Converter(ocio.load_config(ocio.PINNED_CONFIG_URI),
                                       spec.input_space, ocio.ENGINE_SRGB)

    @property
    def cuts_detected(self) -> int:
        return int(getattr(self.base, "cuts_detected", 0))

    def reset(self) -> None:
        self.base.reset()

    def state(self) -> dict[str, np.ndarray]:
        return self.base.state()

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.base.load_state(state)

    def discontinuity(self) -> None:
        jump = getattr(self.base, "discontinuity", None)
        if jump is not None:
            jump()

    def srgb(self, image: np.ndarray) -> np.ndarray:
        """An image of the engine's input space as the correction saw it in training."""
        return np.clip(self._to_srgb.apply(np.ascontiguousarray(image[..., :3], np.float32)),
                       0.0, 1.0)

    def process(self, src: np.ndarray, inputs: Optional[Mapping[str, np.ndarray]] = None
                ) -> MatteResult:
        from mattekit.inference.training.scribbles import correct_alpha

        reference = None
        if self.with_reference:
            given = reference_of(inputs)
            if given is None:
                raise EngineError(f"{self.name} was trained with a clean plate or second view: "
                                  "give the node its clean plate (--clean-plate) or reference "
                                  "(--reference)")
            reference = self.srgb(given)
        result = self.base.process(src, inputs)
        alpha = correct_alpha(self.network, self.srgb(src), reference,
                              np.asarray(result.alpha, np.float32))
        return MatteResult(alpha=alpha, foreground=result.foreground, layers=result.layers)


class ShotStudentEngine:
    """A distilled student: ``pha = net(src, ref)`` per frame (see the module docstring)."""

    temporal = False

    def __init__(self, spec: Any, model: Any, model_file: Optional[Path], device: str,
                 params: Mapping[str, Any]):
        self.name = spec.name
        self.input_space = spec.input_space
        self.network, self.device, sha = _load(spec, device, None)
        self.with_reference = spec.shot.with_reference
        self.model_hash = sha
        self.version = "shot-student-2"
        self.providers = [str(self.device)]

    def reset(self) -> None:
        """Per frame: nothing carried."""

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Stateless: nothing to restore."""

    def process(self, src: np.ndarray, inputs: Optional[Mapping[str, np.ndarray]] = None
                ) -> MatteResult:
        import torch

        # as in training (train distill): sRGB clipped to 0..1, and the reference only when
        # the student learnt with one (zeros otherwise, even where the node has one)
        plate = np.clip(np.ascontiguousarray(src[..., :3], np.float32), 0.0, 1.0)
        reference = reference_of(inputs) if self.with_reference else None
        ref = (np.zeros_like(plate) if reference is None
               else np.clip(np.ascontiguousarray(reference[..., :3], np.float32), 0.0, 1.0))

        def tensor(image: np.ndarray) -> Any:
            return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(
                self.device)

        with torch.inference_mode():
            pha = self.network(tensor(plate), tensor(ref))
        if isinstance(pha, (tuple, list)):  # (fgr, pha) or (pha, ...) students: alpha is last
            pha = pha[-1]
        alpha = np.clip(pha[0, 0].float().cpu().numpy(), 0.0, 1.0)
        return MatteResult(alpha=alpha, foreground=plate)
