"""Which OCIO config mattekit uses, and how colour space names given by people resolve in it.

Order of precedence: an explicit path or ``ocio://`` URI, then ``$OCIO``, then a pinned built-in
config. Names resolve through OCIO itself (colour space names, OCIO 2 aliases and roles, all
case-insensitive), then through a short table of Nuke-default-config spellings ("linear",
"sRGB", "rec709") for configs that do not define those names.
"""
from __future__ import annotations

import difflib
import os
import threading
from typing import Optional

import PyOpenColorIO as OCIO

from mattekit.inference.errors import ColourError

# Pinned, versioned built-in config. Never "ocio://default": that URI follows whatever OCIO release
# is installed (it is the CG config v1 under OCIO 2.2 and v5 / ACES 2 under OCIO 2.6), so a farm
# node and an artist's workstation with different OCIO builds would convert the same plate
# differently and cache keys would lie. The CG config (not the studio one) carries every space a
# matting tool needs (ACEScg, linear and sRGB-encoded Rec.709, Raw) with OCIO 2 aliases, without
# camera LUTs; v2.2.0 / ACES 1.3 is the newest release that OCIO 2.4+ all ship.
PINNED_CONFIG_URI = "ocio://cg-config-v2.2.0_aces-v1.3_ocio-v2.4"

# The space RVM-style engines were trained on: sRGB-encoded Rec.709, display-free, values 0..1.
# An alias in the ACES CG/studio configs; other configs reach it through _NUKE_SPELLINGS.
ENGINE_SRGB = "sRGB - Texture"

# Loaded configs, per source (path or URI) and file modification time.
_CONFIGS: dict[tuple[str, Optional[int]], OCIO.Config] = {}
_CONFIGS_LOCK = threading.Lock()

# Spellings from Nuke's default config (and a few other common ones) -> names and aliases of the
# same space in ACES 1.x / CG / studio configs, tried in order. Used only when the config itself
# does not know the name. "rec709" maps only to the Rec.709 camera (OETF) space: the CG config
# has none, and its "Gamma 2.4 Encoded Rec.709" is a display encoding, not what Nuke means.
_LINEAR = ("lin_rec709_srgb", "lin_rec709", "Linear Rec.709 (sRGB)", "Utility - Linear - sRGB",
           "Utility - Linear - Rec.709", "linear")
_SRGB = ("srgb_tx", "sRGB - Texture", "srgb_texture", "sRGB Encoded Rec.709 (sRGB)",
         "Utility - sRGB - Texture", "Input - Generic - sRGB - Texture", "sRGB")
_REC709 = ("camera_rec709", "rec709_camera", "Camera Rec.709", "Utility - Rec.709 - Camera",
           "rec709")
_NUKE_SPELLINGS: dict[str, tuple[str, ...]] = {
    **{k.lower(): _LINEAR for k in ("linear", "lin_rec709", "lin_srgb", "Linear Rec.709 (sRGB)")},
    **{k.lower(): _SRGB for k in ("sRGB", "sRGB - Texture", "srgb_tx", "srgb_texture",
                                  "Utility - sRGB - Texture")},
    **{k.lower(): _REC709 for k in ("rec709", "camera_rec709", "rec709_camera")},
}


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _source(path: Optional[str]) -> tuple[str, str]:
    """(path or URI, where it came from) by precedence: argument, $OCIO, pinned built-in."""
    if path:
        return str(path), "given"
    env = os.environ.get("OCIO", "").strip()
    if env:
        return env, "from $OCIO"
    return PINNED_CONFIG_URI, "pinned built-in"


def load_config(path: Optional[str] = None) -> OCIO.Config:
    """The OCIO config at ``path`` (a file or an ``ocio://`` URI), else ``$OCIO``, else the pinned
    built-in config. Loaded once per source and file version; treat the result as read-only.

    Raises ColourError naming the config and the cause when it cannot be read.
    """
    source, origin = _source(path)
    is_uri = source.startswith("ocio://")
    if not is_uri:
        source = os.path.abspath(os.path.expanduser(source))
    try:
        mtime = None if is_uri else os.stat(source).st_mtime_ns
    except OSError as exc:
        raise ColourError(
            f"cannot read OCIO config '{source}' ({origin}): {_one_line(exc.strerror or exc)}; "
            f"point $OCIO or --ocio at a readable config.ocio, or unset $OCIO to use "
            f"{PINNED_CONFIG_URI}"
        ) from exc
    key = (source, mtime)
    with _CONFIGS_LOCK:
        config = _CONFIGS.get(key)
        if config is None:
            try:
                config = OCIO.Config.CreateFromFile(source)
            except Exception as exc:  # OCIO raises its own Exception types, and RuntimeError
                raise ColourError(
                    f"cannot load OCIO config '{source}' ({origin}): {_one_line(exc)}; "
                    f"fix the config, or unset $OCIO to use {PINNED_CONFIG_URI}"
                ) from exc
            _CONFIGS[key] = config
    return config


def config_name(config: OCIO.Config) -> str:
    """What to record in metadata and cache keys: the path or URI the config was loaded from,
    else its name."""
    with _CONFIGS_LOCK:
        for (source, _mtime), cached in _CONFIGS.items():
            if cached is config:
                return source
    return config.getName() or "<unnamed OCIO config>"


def _known_names(config: OCIO.Config) -> list[str]:
    names: list[str] = []
    for cs in config.getColorSpaces(OCIO.SEARCH_REFERENCE_SPACE_ALL, OCIO.COLORSPACE_ALL):
        names.append(cs.getName())
        names.extend(cs.getAliases())
    names.extend(config.getRoleNames())
    return list(dict.fromkeys(names))


def _lookup(config: OCIO.Config, name: str) -> Optional[str]:
    # getColorSpace matches names, aliases and roles, case-insensitively
    cs = config.getColorSpace(name)
    return cs.getName() if cs is not None else None


def resolve_colorspace(config: OCIO.Config, name: str) -> str:
    """The canonical colour space name for a name, alias or role (any case), or for a common
    Nuke-default-config spelling ("linear", "sRGB", "rec709") the config does not define itself.

    Raises ColourError with close matches when nothing fits.
    """
    wanted = str(name).strip()
    if wanted:
        found = _lookup(config, wanted)
        if found:
            return found
        for candidate in _NUKE_SPELLINGS.get(wanted.lower(), ()):
            found = _lookup(config, candidate)
            if found:
                return found
    known = _known_names(config)
    by_lower = {n.lower(): n for n in known}
    close = difflib.get_close_matches(wanted.lower(), list(by_lower), n=3, cutoff=0.5)
    hint = ("close matches: " + ", ".join(by_lower[c] for c in close) if close
            else f"no close match among its {len(known)} names, aliases and roles")
    raise ColourError(f"unknown colour space '{wanted}' in config {config_name(config)}; {hint}")


def default_colorspace(config: OCIO.Config, integer_encoded: bool) -> str:
    """The colour space a plate is assumed to be in when none is given: the scene_linear role
    for float (EXR) plates, sRGB-encoded Rec.709 for 8/16-bit PNG/JPEG/TIFF."""
    return resolve_colorspace(config, ENGINE_SRGB if integer_encoded else OCIO.ROLE_SCENE_LINEAR)
