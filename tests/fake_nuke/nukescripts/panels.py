"""A fake ``nukescripts.panels``: records registered widget panels (test code)."""
from __future__ import annotations

from typing import Any, Dict, List

registered: Dict[str, Dict[str, Any]] = {}
shown: List[str] = []


class PythonPanel:
    def __init__(self, widget: str, name: str, id: str):
        self.widget, self.title, self.id = widget, name, id
        self.panes: List[Any] = []

    def addToPane(self, pane: Any = None) -> None:
        self.panes.append(pane)
        shown.append(self.id)


def registerWidgetAsPanel(widget: str, name: str, id: str, create: bool = False) -> Any:
    registered[id] = {"widget": widget, "name": name}
    return PythonPanel(widget, name, id) if create else None


def reset() -> None:
    registered.clear()
    shown.clear()
