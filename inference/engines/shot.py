"""Per-shot engines: ``shot:NAME`` is the checkpoint ``<cache>/shot-models/NAME.pt``.

A shot model is trained for one shot (``mattekit train scribbles --name NAME``, or the
distillation's student) and lands in the cache folder, not in the manifest: the registry
resolves ``shot:NAME`` here, from the file itself. What it runs depends on the checkpoint's
``extra.kind``:

- ``scribble-correction`` (an ``alphacorrection`` network): the base engine named in
  ``extra.base_engine`` (its node, inputs, parameters, temporal state and warm-up), then the
  correction applied to its alpha in the engines' sRGB 0..1 (``shot_engine.py``);
- ``student`` (any architecture called ``pha = net(src, ref)``): the student alone, per frame.

The spec is the base engine's (node, inputs, parameters, temporal), named ``shot:NAME``; so a
shot model renders for the node its base engine belongs to, and nowhere else. The frame cache
key holds the checkpoint's sha256: retraining recomputes the frames. A missing or unreadable
checkpoint is an EngineError naming the file.
"""
from __future__ import annotations

import dataclasses
import re
import threading
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from mattekit.inference.engines.registry import (
    SHOT_PREFIX,
    EngineSpec,
    Manifest,
    default_engine,
    engine_spec,
    file_sha256,
)
from mattekit.inference.errors import EngineError

SHOT_MODELS = "shot-models"       # the folder under the cache root
CORRECTION = "scribble-correction"
STUDENT = "student"
KINDS = (CORRECTION, STUDENT)
ENGINE_MODULE = "mattekit.inference.engines.shot_engine"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclasses.dataclass(frozen=True)
class ShotModel:
    """A shot model's checkpoint as the registry sees it (weights are loaded by the engine)."""

    name: str
    path: Path
    sha256: str
    kind: str
    node: str
    base_engine: Optional[str]      # the engine the correction runs after (the teacher)
    with_reference: bool            # trained with a clean plate / second view as `ref`
    architecture: str


def check_name(name: str) -> str:
    """A shot model name usable as a file name (letters, digits, ``_ . -``), else EngineError."""
    if not _NAME.match(name or "") or name.endswith(".pt"):
        raise EngineError(f"shot model name {name!r}: use letters, digits, '_', '.' and '-' "
                          "(no folders, no .pt)")
    return name


def shot_models_folder(cache_root: Optional[Path] = None) -> Path:
    """``<cache_root>/shot-models`` (cache_root None: $MATTEKIT_CACHE or the user cache)."""
    from mattekit.inference.cache import FrameCache

    return Path(cache_root or FrameCache.default_root()).expanduser() / SHOT_MODELS


def shot_model_path(name: str, cache_root: Optional[Path] = None) -> Path:
    return shot_models_folder(cache_root) / f"{check_name(name)}.pt"


_read: dict[tuple[Path, int, int], ShotModel] = {}
_read_lock = threading.Lock()


def read_shot_model(name: str, cache_root: Optional[Path] = None,
                    manifest: Optional[Manifest] = None) -> ShotModel:
    """The shot model NAME of the cache folder, read again only when its file changes."""
    path = shot_model_path(name, cache_root)
    try:
        stat = path.stat()
    except OSError:
        raise EngineError(f"{path}: no shot model '{name}' (the file does not exist); train one "
                          f"with `mattekit train scribbles --name {name}`") from None
    stamp = (path, stat.st_mtime_ns, stat.st_size)
    with _read_lock:
        cached = _read.get(stamp)
    if cached is None:
        cached = _parse(name, path, manifest)
        with _read_lock:
            _read[stamp] = cached
    return cached


def _parse(name: str, path: Path, manifest: Optional[Manifest]) -> ShotModel:
    try:
        from mattekit.inference.models.checkpoint import read_checkpoint
    except ImportError as exc:  # pragma: no cover - torch is the train extra
        raise EngineError(f"{path}: shot models need torch: install mattekit with its 'train' "
                          "extra (python3 install.py --train)") from exc
    try:
        payload = read_checkpoint(path)
    except ImportError as exc:
        raise EngineError(f"{path}: shot models need torch: install mattekit with its 'train' "
                          "extra (python3 install.py --train)") from exc
    except ValueError as exc:
        raise EngineError(f"{exc}; train the shot model again") from None
    extra = payload.get("extra") or {}
    kind = str(extra.get("kind", ""))
    if kind not in KINDS:
        raise EngineError(f"{path}: shot model of kind {kind or 'none'!r}; a shot model is one "
                          f"of {', '.join(KINDS)}")
    base = extra.get("base_engine") or None
    node = extra.get("node") or None
    if kind == CORRECTION and not base:
        raise EngineError(f"{path}: the scribble correction does not name its base engine "
                          "(extra.base_engine); train it again with `mattekit train scribbles "
                          "--engine ENGINE`")
    if base is not None and str(base).startswith(SHOT_PREFIX):
        raise EngineError(f"{path}: the base engine '{base}' is itself a shot model; a shot "
                          "model corrects a manifest engine")
    if base is not None:
        base_spec = engine_spec(str(base), manifest)  # an unknown one lists the valid ones
        if node and node != base_spec.node:
            raise EngineError(f"{path}: base engine '{base}' belongs to node "
                              f"'{base_spec.node}', not '{node}'")
        node = base_spec.node
    if not node:
        raise EngineError(f"{path}: the shot model names neither its node nor its base engine")
    return ShotModel(name=name, path=path, sha256=file_sha256(path), kind=kind, node=str(node),
                     base_engine=str(base) if base else None,
                     with_reference=bool(extra.get("with_reference", False)),
                     architecture=str(payload.get("architecture", "")))


def shot_spec(engine: str, cache_root: Optional[Path], manifest: Manifest) -> EngineSpec:
    """The EngineSpec of ``shot:NAME``: the base engine's, running the shot model."""
    model = read_shot_model(engine[len(SHOT_PREFIX):], cache_root, manifest)
    base = (engine_spec(model.base_engine, manifest) if model.base_engine
            else default_engine(model.node, manifest))
    if model.kind == CORRECTION:
        return dataclasses.replace(
            base, name=engine, module=ENGINE_MODULE, factory="ShotCorrectionEngine", shot=model,
            description=f"{base.name} corrected by shot model {model.name} ({model.path})")
    # a student: one network per frame on the engines' sRGB; the node's inputs are accepted
    # (the clean plate or second view is its `ref`, the others are not used)
    defaults = {k: v for k, v in base.defaults.items() if k == "reference_offset"}
    return EngineSpec(name=engine, node=model.node, module=ENGINE_MODULE,
                      factory="ShotStudentEngine",
                      description=f"student shot model {model.name} ({model.path})",
                      input_space="sRGB - Texture", temporal=False, clip_input=True,
                      defaults=defaults, inputs=base.inputs,
                      required_inputs=base.required_inputs, key_inputs=base.key_inputs,
                      shot=model)


def list_shot_models(cache_root: Optional[Path] = None, manifest: Optional[Manifest] = None
                     ) -> list[tuple[str, Union[EngineSpec, EngineError]]]:
    """Every ``shot:NAME`` of the cache folder, with its spec or why it cannot run."""
    from mattekit.inference.engines.registry import load_manifest

    manifest = manifest or load_manifest()
    folder = shot_models_folder(cache_root)
    found: list[tuple[str, Union[EngineSpec, EngineError]]] = []
    for path in sorted(folder.glob("*.pt")) if folder.is_dir() else []:
        engine = SHOT_PREFIX + path.stem
        try:
            found.append((engine, shot_spec(engine, cache_root, manifest)))
        except EngineError as exc:
            found.append((engine, exc))
    return found


def shot_extra(node: str, base_engine: str, with_reference: bool,
               **more: Any) -> Mapping[str, Any]:
    """The ``extra`` of a scribble-correction checkpoint that makes it a shot model."""
    return {"kind": CORRECTION, "node": node, "base_engine": base_engine,
            "with_reference": with_reference, **more}
