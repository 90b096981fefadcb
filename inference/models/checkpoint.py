"""Checkpoints: the architecture's name, its config and its weights, in one torch file.

    {"format": "mattekit-model/1", "architecture": "cinematte", "config": {...},
     "state_dict": {...}}

Loaded with ``weights_only=True`` (no pickled code runs). Nothing here downloads anything.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Union

FORMAT = "mattekit-model/1"


def save_checkpoint(model: Any, path: Union[str, Path],
                    extra: Optional[Mapping[str, Any]] = None) -> Path:
    """Save `model` (weights + config); `extra` (plain values: step, losses...) rides along."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "architecture": model.architecture,
               "config": model.config.to_dict(), "state_dict": model.state_dict(),
               "extra": dict(extra or {})}
    temporary = path.with_name(path.name + ".tmp")
    torch.save(payload, temporary)
    temporary.replace(path)
    return path


def read_checkpoint(path: Union[str, Path], map_location: str = "cpu") -> dict[str, Any]:
    """The checkpoint's payload (architecture, config, state_dict, extra) as saved. ValueError
    when the file is not a mattekit checkpoint."""
    import torch

    try:
        payload = torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike
        raise ValueError(f"{path}: not a readable torch checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a mattekit checkpoint (expected format '{FORMAT}')")
    return payload


def load_checkpoint(path: Union[str, Path], map_location: str = "cpu",
                    architecture: Optional[str] = None) -> Any:
    """The network saved at `path`, in eval mode. ValueError when the file is not a mattekit
    checkpoint or holds another architecture than the one asked for."""
    from mattekit.inference.models import architecture_class

    payload = read_checkpoint(path, map_location)
    name = payload.get("architecture")
    if architecture is not None and name != architecture:
        raise ValueError(f"{path}: holds a '{name}' network, not '{architecture}'")
    try:
        cls = architecture_class(str(name))
        model = cls(cls.config_class.from_dict(payload.get("config") or {}))
        model.load_state_dict(payload.get("state_dict") or {})
    except (ValueError, TypeError, RuntimeError) as exc:  # unknown name/field, shape mismatch
        raise ValueError(f"{path}: the '{name}' checkpoint does not load: {exc}") from exc
    return model.eval()
