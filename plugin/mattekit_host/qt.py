"""The Qt binding Nuke ships: PySide6 (Nuke 16+) or PySide2 (Nuke 13-15), loaded on first use.

``from mattekit_host.qt import QtCore, QtWidgets`` imports whichever binding is present the
first time a name is asked for (PEP 562 module ``__getattr__``), so importing this module never
needs Qt: ``nuke -t`` and farm renders have none. A Python with neither binding gets an
ImportError that says so. Type checkers see PySide6.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Dict, Tuple

if TYPE_CHECKING:
    from PySide6 import QtCore as QtCore
    from PySide6 import QtGui as QtGui
    from PySide6 import QtWidgets as QtWidgets

BINDINGS: Tuple[str, ...] = ("PySide6", "PySide2")
MODULES: Tuple[str, ...] = ("QtCore", "QtGui", "QtWidgets")
_loaded: Dict[str, ModuleType] = {}


def binding() -> str:
    """The name of the binding in use ("PySide6" or "PySide2"), importing it if needed."""
    _load()
    return _loaded["binding"].__name__


def _load() -> Dict[str, ModuleType]:
    if _loaded:
        return _loaded
    problems = []
    for name in BINDINGS:
        try:
            modules = {m: importlib.import_module(f"{name}.{m}") for m in MODULES}
        except ImportError as exc:
            problems.append(f"{name}: {exc}")
            continue
        _loaded.update(modules)
        _loaded["binding"] = importlib.import_module(name)
        return _loaded
    raise ImportError("mattekit's panels need PySide6 or PySide2 (Nuke's GUI provides one); "
                      + "; ".join(problems))


def __getattr__(name: str) -> ModuleType:
    if name in MODULES:
        return _load()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
