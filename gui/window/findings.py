"""Findings and events beside the plots: each plugin's findings computed off the GUI thread, the
findings list (click one to jump to its step) and the events table."""
from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets

from engine.errors import ConfigError

from .colors import SEVERITY_COLORS, dot

SEVERITY_ORDER = {s: i for i, s in enumerate(("problem", "warning", "info", "ok"))}
ALARM_EVENTS = ("diverged", "failed", "plugin_error")


def compute_findings(state, path: str) -> list[dict]:
    """Each plugin's findings for a run file (a task): plugins not installed here are skipped."""
    from engine.plugin import load_plugin_class
    from engine.store import open_run
    out = []
    with open_run(path) as run:
        for name in sorted(run.views()):
            if name == "core" or state.is_interruption_requested():
                continue
            try:
                cls = load_plugin_class(name)
            except ConfigError:
                continue  # not installed here: nothing to judge with
            except Exception as exc:  # a broken plugin must not hide the others' findings
                out.append({"plugin": name, "severity": "info", "message": f"could not load: {exc}", "step": None})
                continue
            try:
                found = cls.findings(run)
            except Exception as exc:
                out.append({"plugin": name, "severity": "info", "message": f"findings failed: {exc}", "step": None})
                continue
            out.extend({"plugin": f.plugin, "severity": f.severity, "message": f.message, "step": f.step,
                        "value": f.value, "unit": f.unit} for f in found)
    return out


class FindingsList(QtWidgets.QListWidget):
    """The shown runs' findings, most severe first; clicking one with a step emits it."""

    step_clicked = QtCore.Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWordWrap(True)
        self.setResizeMode(QtWidgets.QListView.ResizeMode.Adjust)
        self.setSpacing(2)
        self.setToolTip("What each analysis concluded; click one to jump to its step")
        self.itemClicked.connect(self._on_clicked)

    def show_findings(self, rows: list[tuple[str, dict]], prefixed: bool, waiting: bool) -> None:
        """``rows``: (run label, finding); ``prefixed`` names the run in each line (several shown)."""
        self.clear()
        for label, f in sorted(rows, key=lambda lf: SEVERITY_ORDER.get(lf[1]["severity"], 9)):
            prefix = f"[{label}] " if prefixed else ""
            where = "" if f.get("step") is None else f"  (step {f['step']})"
            item = QtWidgets.QListWidgetItem(f"{prefix}{f['plugin']}: {f['message']}{where}")
            item.setIcon(dot(SEVERITY_COLORS.get(f["severity"], "#808080")))
            item.setToolTip(f"{f['severity']}: {f['message']}" + ("\nclick to jump to its step" if where else ""))
            item.setData(QtCore.Qt.ItemDataRole.UserRole, f.get("step"))
            self.addItem(item)
        if not rows:
            self.addItem("computing findings…" if waiting else "no findings")

    def _on_clicked(self, item) -> None:
        step = item.data(QtCore.Qt.ItemDataRole.UserRole)
        if step is not None:
            self.step_clicked.emit(int(step))


class EventsTable(QtWidgets.QTreeWidget):
    """A run's events (step, kind, message); clicking one emits its step."""

    step_clicked = QtCore.Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setHeaderLabels(["step", "event", "message"])
        self.setRootIsDecorated(False)
        self.itemClicked.connect(lambda it, _c: self.step_clicked.emit(int(it.text(0))) if it.text(0).isdigit()
                                 else None)

    def show_events(self, events: list[dict]) -> None:
        if self.topLevelItemCount() == len(events):
            return
        self.clear()
        for e in events:
            it = QtWidgets.QTreeWidgetItem([str(e["step"]), e["kind"], e["message"]])
            it.setToolTip(2, e["message"])
            if e["kind"] in ALARM_EVENTS:
                it.setForeground(1, QtGui.QColor("#d9534f"))
            self.addTopLevelItem(it)
