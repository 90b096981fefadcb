"""The "mattekit worker" panel: is the worker up, which version, device, models, what is queued.

A small QWidget polling ``WorkerClient.status()`` once a second. The poll runs on a background
thread (a status call may wait on a socket) and its answer comes back to the UI thread as a Qt
signal, so the UI thread never blocks. The panel never starts a worker (``spawn=False``); it
says "down" and why instead.

Qt is imported on first use (``mattekit_host.qt``): this module loads without it, and the text
it shows comes from plain functions (``summary``, ``queue_rows``) testable without Qt.
"""
from __future__ import annotations

import functools
import threading
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from mattekit_host.client import WorkerClient
from mattekit_host.errors import MattekitHostError

PANEL_ID = "uk.co.mattekit.WorkerStatus"
PANEL_TITLE = "mattekit worker"
WIDGET_PATH = "mattekit_host.panel.WorkerStatusPanel"
POLL_MS = 1000
QUEUE_COLUMNS = ("request", "client", "node", "state", "progress")


# -- what the panel shows (no Qt) ------------------------------------------------------------

def summary(status: Optional[Mapping[str, Any]], error: Optional[str] = None) -> Dict[str, str]:
    """Label texts for a ``status`` reply, or for a worker that did not answer."""
    if status is None:
        return {"state": "down", "detail": error or "no mattekit worker is running",
                "version": "-", "device": "-", "models": "-", "clients": "-"}
    providers = ", ".join(str(p) for p in status.get("providers") or [])
    device = str(status.get("device") or "?") + (f" ({providers})" if providers else "")
    models = ", ".join(str(m) for m in status.get("models_loaded") or []) or "none loaded"
    uptime = float(status.get("uptime") or 0.0)
    return {"state": "up", "detail": f"pid {status.get('pid')}, up {uptime:.0f} s",
            "version": str(status.get("version") or "?"), "device": device,
            "models": models, "clients": str(status.get("clients", "?"))}


def queue_rows(status: Optional[Mapping[str, Any]]) -> List[Tuple[str, str, str, str, str]]:
    """One row per unfinished request: id, client, node, state, "done/total"."""
    rows = []
    for item in (status or {}).get("queue") or []:
        total = item.get("total")
        progress = f"{item.get('done', 0)}/{total}" if total else "-"
        rows.append((str(item.get("id", "")), str(item.get("client", "")),
                     str(item.get("node", "")), str(item.get("state", "")), progress))
    return rows


def fetch_status(client: Optional[WorkerClient] = None) -> Tuple[Optional[Dict[str, Any]],
                                                                 Optional[str]]:
    """(status, None) from a running worker, or (None, why not). Never starts one."""
    try:
        worker = client or WorkerClient(spawn=False, request_timeout=5.0)
        return worker.status(), None
    except MattekitHostError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"cannot reach the mattekit worker ({exc})"


# -- the widget (Qt on first use) ------------------------------------------------------------

def WorkerStatusPanel(parent: Any = None) -> Any:  # noqa: N802 - a widget "class" for Nuke
    """The panel widget; ``nukescripts.panels.registerWidgetAsPanel`` calls this by path."""
    return _widget_class()(parent)


@functools.lru_cache(maxsize=None)
def _widget_class() -> Any:
    from mattekit_host.qt import QtCore, QtWidgets

    class _Poller(QtCore.QObject):
        """Runs status calls off the UI thread; the answer arrives as a queued signal."""

        arrived = QtCore.Signal(object)

        def __init__(self, client: Optional[WorkerClient] = None):
            super().__init__()
            self._client = client
            self._busy = threading.Lock()

        def poll(self) -> None:
            if not self._busy.acquire(blocking=False):
                return  # the previous call is still out
            threading.Thread(target=self._fetch, name="mattekit status", daemon=True).start()

        def _fetch(self) -> None:
            try:
                answer = fetch_status(self._client)
                try:
                    self.arrived.emit(answer)
                except RuntimeError:  # the panel was closed meanwhile
                    pass
            finally:
                self._busy.release()

    class _WorkerStatusWidget(QtWidgets.QWidget):
        def __init__(self, parent: Any = None, client: Optional[WorkerClient] = None,
                     poll_ms: int = POLL_MS):
            super().__init__(parent)
            self.setWindowTitle(PANEL_TITLE)
            form = QtWidgets.QFormLayout()
            self.labels: Dict[str, Any] = {}
            for key, title in (("state", "Worker"), ("detail", ""), ("version", "Version"),
                               ("device", "Device"), ("models", "Loaded models"),
                               ("clients", "Clients")):
                label = QtWidgets.QLabel("...")
                label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
                self.labels[key] = label
                form.addRow(title, label)
            self.table = QtWidgets.QTableWidget(0, len(QUEUE_COLUMNS))
            self.table.setHorizontalHeaderLabels(list(QUEUE_COLUMNS))
            self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
            layout = QtWidgets.QVBoxLayout(self)
            layout.addLayout(form)
            layout.addWidget(QtWidgets.QLabel("Queue"))
            layout.addWidget(self.table)
            self.poller = _Poller(client)
            self.poller.arrived.connect(self.show_status)
            self.timer = QtCore.QTimer(self)
            self.timer.setInterval(poll_ms)
            self.timer.timeout.connect(self.poller.poll)
            self.timer.start()
            self.poller.poll()

        def show_status(self, answer: Sequence[Any]) -> None:
            status, error = answer
            for key, text in summary(status, error).items():
                self.labels[key].setText(text)
            rows = queue_rows(status)
            self.table.setRowCount(len(rows))
            for row, values in enumerate(rows):
                for column, text in enumerate(values):
                    self.table.setItem(row, column, QtWidgets.QTableWidgetItem(text))

        def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
            self.timer.stop()
            super().closeEvent(event)

    return _WorkerStatusWidget


# -- Nuke registration (menu.py) -------------------------------------------------------------

def register_panel() -> Any:
    """Add the panel to Nuke's pane menu (so layouts can restore it)."""
    import nukescripts

    return nukescripts.panels.registerWidgetAsPanel(WIDGET_PATH, PANEL_TITLE, PANEL_ID)


def show_panel() -> Any:
    """Menu "Worker status": open the panel next to the Properties bin."""
    import nuke
    import nukescripts

    panel = nukescripts.panels.registerWidgetAsPanel(WIDGET_PATH, PANEL_TITLE, PANEL_ID, True)
    pane = nuke.getPaneFor("Properties.1")
    if panel is not None:
        panel.addToPane(pane)
    return panel
