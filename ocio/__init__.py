"""mattekit's colour management: which OCIO config, and conversions to and from engine spaces.

Imported as ``mattekit.ocio``. Used by the worker (it needs PyOpenColorIO), never by the Nuke host.
"""
from .config import (
    ENGINE_SRGB,
    PINNED_CONFIG_URI,
    config_name,
    default_colorspace,
    load_config,
    resolve_colorspace,
)
from .transform import Converter

__all__ = [
    "ENGINE_SRGB",
    "PINNED_CONFIG_URI",
    "Converter",
    "config_name",
    "default_colorspace",
    "load_config",
    "resolve_colorspace",
]
