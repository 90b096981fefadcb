"""The engine manifest: which engines exist, which node they serve, and which model file they need.

Engines are imported lazily by name (OpenTimelineIO-style manifest), so listing models or
rendering with one engine never imports another's dependencies.

>>> spec = engine_spec("rvm")
>>> spec.node, spec.temporal
('video-matte', True)
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

import yaml

from mattekit.inference import __version__
from mattekit.inference.errors import EngineError, NotImplementedEngineError

if TYPE_CHECKING:
    from mattekit.inference.engines.shot import ShotModel

MANIFEST_PATH = Path(__file__).with_name("manifest.yaml")
SHOT_PREFIX = "shot:"  # engine names of per-shot models: shot:NAME (engines/shot.py)


@dataclass(frozen=True)
class ModelSpec:
    """A model file that an engine needs: where it is installed, its checksum and licence."""

    model_id: str
    description: str
    package: str
    file: str
    sha256: str
    licence: str
    source: str


@dataclass(frozen=True)
class EngineSpec:
    """One engine as the manifest declares it."""

    name: str
    node: str
    description: str
    module: str
    factory: str
    input_space: str
    temporal: bool
    model: Optional[str] = None     # None: no shipped model file (classical, or a checkpoint)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    clip_input: bool = True
    inputs: tuple[str, ...] = ()
    required_inputs: tuple[str, ...] = ()
    # inputs given on key frames only: their sequence may hold any subset of the frames
    key_inputs: tuple[str, ...] = ()
    # a per-shot engine (``shot:NAME``, engines/shot.py): the checkpoint it runs; None for
    # the manifest's engines
    shot: Optional["ShotModel"] = None


@dataclass(frozen=True)
class Manifest:
    models: Mapping[str, ModelSpec]
    engines: Mapping[str, EngineSpec]
    default_engines: Mapping[str, Optional[str]]


_manifests: dict[tuple[Path, int], Manifest] = {}
_manifests_lock = threading.Lock()


def load_manifest(path: Path = MANIFEST_PATH) -> Manifest:
    """The manifest's specs, parsed again only when the file changes (parsing costs ~15 ms)."""
    try:
        stamp = (path, path.stat().st_mtime_ns)
    except OSError as exc:
        raise EngineError(f"{path}: engine manifest is unreadable: {exc}") from exc
    with _manifests_lock:
        cached = _manifests.get(stamp)
    if cached is None:
        cached = parse_manifest(path)
        with _manifests_lock:
            _manifests[stamp] = cached
    return cached


def parse_manifest(path: Path) -> Manifest:
    """Parse the YAML manifest into specs; a malformed one is an EngineError naming the file."""
    try:
        raw = yaml.safe_load(path.read_text())
        models = {
            mid: ModelSpec(model_id=mid, **{k: str(v) for k, v in m.items()})
            for mid, m in raw.get("models", {}).items()
        }
        engines = {}
        for name, entry in raw.get("engines", {}).items():
            fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                      for k, v in entry.items()}
            engines[name] = EngineSpec(name=name, **fields)
        defaults = {node: n["default_engine"] for node, n in raw.get("nodes", {}).items()}
    except (OSError, yaml.YAMLError, TypeError, KeyError, AttributeError) as exc:
        raise EngineError(f"{path}: engine manifest is unreadable: {exc}") from exc
    for name, engine in engines.items():
        if engine.model is not None and engine.model not in models:
            raise EngineError(f"{path}: engine '{name}' needs unknown model '{engine.model}'")
        if not set(engine.key_inputs) <= set(engine.inputs):
            raise EngineError(f"{path}: engine '{name}': key_inputs must be among its inputs")
    return Manifest(models=models, engines=engines, default_engines=defaults)


def engine_spec(name: str, manifest: Optional[Manifest] = None,
                cache_root: Optional[Path] = None) -> EngineSpec:
    """The spec of an engine by name; an unknown name lists the valid ones. ``shot:NAME`` is
    the per-shot engine trained into ``<cache_root>/shot-models/NAME.pt`` (engines/shot.py;
    cache_root None: the default cache folder)."""
    manifest = manifest or load_manifest()
    if name.startswith(SHOT_PREFIX):
        from mattekit.inference.engines.shot import shot_spec

        return shot_spec(name, cache_root, manifest)
    try:
        return manifest.engines[name]
    except KeyError:
        valid = ", ".join(sorted(manifest.engines))
        raise EngineError(f"unknown engine '{name}'; known engines: {valid}, or "
                          f"{SHOT_PREFIX}NAME for a shot model") from None


def default_engine(node: str, manifest: Optional[Manifest] = None) -> EngineSpec:
    """The engine a node uses when none is named; an unknown node lists the valid ones."""
    manifest = manifest or load_manifest()
    if node not in manifest.default_engines:
        valid = ", ".join(sorted(manifest.default_engines))
        raise EngineError(f"unknown node '{node}'; known nodes: {valid}")
    name = manifest.default_engines[node]
    if name is None:
        raise NotImplementedEngineError(
            f"node '{node}' has no engine yet in mattekit {__version__}: not implemented"
        )
    return engine_spec(name, manifest)


def model_path(model: ModelSpec) -> Path:
    """Where the model file is installed; EngineError saying how to install it when it is not."""
    spec = importlib.util.find_spec(model.package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        candidate = Path(folder) / model.file
        if candidate.is_file():
            return candidate
    raise EngineError(
        f"model '{model.model_id}' ({model.file}) is not installed: it comes from "
        f"{model.source}; run `python3 install.py` to install it"
    )


_verified: dict[Path, str] = {}
_verified_lock = threading.Lock()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_model_path(model: ModelSpec) -> Path:
    """The model file, after checking its sha256 against the manifest (once per process)."""
    path = model_path(model)
    with _verified_lock:
        if _verified.get(path) == model.sha256:
            return path
        actual = file_sha256(path)
        if actual != model.sha256:
            raise EngineError(
                f"{path}: checksum mismatch for model '{model.model_id}' (expected "
                f"{model.sha256[:12]}..., found {actual[:12]}...); reinstall with "
                "`python3 install.py --force`"
            )
        _verified[path] = actual
    return path


def create_engine(name: str, device: str = "auto", params: Optional[Mapping[str, Any]] = None,
                  manifest: Optional[Manifest] = None, cache_root: Optional[Path] = None) -> Any:
    """Import the engine's module and build it with its verified model file and params
    (``cache_root``: where a ``shot:NAME`` engine's checkpoint is looked up)."""
    manifest = manifest or load_manifest()
    spec = engine_spec(name, manifest, cache_root)
    merged = {**spec.defaults, **(params or {})}
    unknown = sorted(set(merged) - set(spec.defaults))
    if unknown:
        raise EngineError(
            f"engine '{name}' has no parameter {', '.join(unknown)}; "
            f"valid: {', '.join(sorted(spec.defaults)) or 'none'}"
        )
    module = importlib.import_module(spec.module)
    factory = getattr(module, spec.factory)
    checked = checked_params(name, spec.defaults, merged, getattr(factory, "param_limits", {}))
    model = manifest.models[spec.model] if spec.model else None
    path = verified_model_path(model) if model else None
    return factory(spec=spec, model=model, model_file=path, device=device, params=checked)


ParamLimits = Mapping[str, tuple[Optional[float], Optional[float]]]


def _param_kind(default: Any) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "a whole number"
    if isinstance(default, float):
        return "a number"
    return "a string" if isinstance(default, str) else ""


def checked_params(engine: str, defaults: Mapping[str, Any], params: Mapping[str, Any],
                   limits: ParamLimits) -> dict[str, Any]:
    """Engine parameters of the type their default has (a whole number, a finite number, a
    boolean, a string) and inside the engine's ``param_limits`` (inclusive; None = open);
    EngineError naming the parameter otherwise. Integral floats become ints where an int is
    expected (JSON and Nuke knobs send 512.0 for 512)."""
    checked: dict[str, Any] = {}
    for key, value in params.items():
        default = defaults.get(key)
        kind = _param_kind(default)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind == "true or false":
            ok = isinstance(value, bool)
        elif kind == "a whole number":
            ok = number and math.isfinite(value) and float(value).is_integer()
            value = int(value) if ok else value
        elif kind == "a number":
            ok = number and math.isfinite(value)
        elif kind == "a string":
            ok = isinstance(value, str)
        else:
            ok = True  # a default of another type (a list, null): the engine checks it
        if not ok:
            raise EngineError(f"engine '{engine}': parameter '{key}' must be {kind}, "
                              f"got {value!r}")
        low, high = limits.get(key, (None, None))
        if number and ((low is not None and value < low) or (high is not None and value > high)):
            bounds = (f"between {low:g} and {high:g}" if low is not None and high is not None
                      else f"at least {low:g}" if low is not None else f"at most {high:g}")
            raise EngineError(f"engine '{engine}': parameter '{key}' is {value!r}; it must be "
                              f"{bounds}")
        checked[key] = value
    return checked
