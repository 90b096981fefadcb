"""Configs of the architectures: plain frozen dataclasses, saved inside checkpoints as dicts."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

T = TypeVar("T", bound="ModelConfig")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Base: round-trips through a plain dict; an unknown key names the valid ones."""

    @classmethod
    def from_dict(cls: type[T], values: Mapping[str, Any]) -> T:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"{cls.__name__} has no field {', '.join(unknown)}; "
                             f"valid: {', '.join(sorted(names))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
