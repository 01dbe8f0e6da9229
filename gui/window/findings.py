"""Findings and events beside the plots: each plugin's findings computed off the GUI thread, the
findings list (click one to jump to its step) and the events table."""
from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets

from engine.errors import ConfigError

from .colors import SEVERITY_COLORS, dot

SEVERITY_ORDER = {s: i for i, s in enumerate(("problem", "warning", "info", "ok"))}
ALARM_EVENTS = ("diverged", "failed", "plugin_error")
RUN_ROLE = QtCore.Qt.ItemDataRole.UserRole + 1
TOP_LEFT = QtCore.Qt.AlignmentFlag.AlignTop | QtCore.Qt.AlignmentFlag.AlignLeft


def breakable(text: str) -> str:
    """Text that may wrap inside a long path or name too: a zero-width space after each /, _ and -."""
    for mark in "/_-":
        text = text.replace(mark, mark + "\u200b")
    return text


def compute_findings(state, path: str) -> list[dict]:
    """Each plugin's findings for a run file (a task): plugins not installed here are skipped."""
    from engine.explain import spike_findings
    from engine.plugin import load_plugin_class
    from engine.store import open_run
    out = []
    with open_run(path) as run:
        out.extend(_as_dict(f) for f in spike_findings(run))
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
            out.extend(_as_dict(f) for f in found)
    return out


def _as_dict(f) -> dict:
    return {"plugin": f.plugin, "severity": f.severity, "message": f.message, "step": f.step, "value": f.value,
            "unit": f.unit}


class FindingsList(QtWidgets.QListWidget):
    """The shown runs' findings, most severe first; clicking one with a step emits it, double-clicking
    asks for the step's explanation."""

    step_clicked = QtCore.Signal(int)
    step_activated = QtCore.Signal(str, int)  # run id, step

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWordWrap(True)
        self.setResizeMode(QtWidgets.QListView.ResizeMode.Adjust)
        self.setSpacing(2)
        self.setToolTip("What each analysis concluded; click one to jump to its step, double-click to explain it")
        self.itemClicked.connect(self._on_clicked)
        self.itemDoubleClicked.connect(self._on_double_clicked)

    def show_findings(self, rows: list[tuple[str, str, dict]], prefixed: bool, waiting: bool) -> None:
        """``rows``: (run id, run label, finding); ``prefixed`` names the run in each line (several shown)."""
        self.clear()
        for run_id, label, f in sorted(rows, key=lambda row: SEVERITY_ORDER.get(row[2]["severity"], 9)):
            prefix = f"[{label}] " if prefixed else ""
            where = "" if f.get("step") is None else f"  (step {f['step']})"
            item = QtWidgets.QListWidgetItem(f"{prefix}{f['plugin']}: {f['message']}{where}")
            item.setIcon(dot(SEVERITY_COLORS.get(f["severity"], "#808080")))
            item.setToolTip(f"{f['severity']}: {f['message']}" +
                            ("\nclick to jump to its step, double-click to explain the step" if where else ""))
            item.setData(QtCore.Qt.ItemDataRole.UserRole, f.get("step"))
            item.setData(RUN_ROLE, run_id)
            self.addItem(item)
        if not rows:
            self.addItem("computing findings…" if waiting else "no findings")

    def _on_clicked(self, item) -> None:
        step = item.data(QtCore.Qt.ItemDataRole.UserRole)
        if step is not None:
            self.step_clicked.emit(int(step))

    def _on_double_clicked(self, item) -> None:
        step = item.data(QtCore.Qt.ItemDataRole.UserRole)
        if step is not None:
            self.step_activated.emit(item.data(RUN_ROLE), int(step))


class EventsTable(QtWidgets.QTableWidget):
    """A run's events (step, kind, message), each message whole: wrapped over as many lines as it
    needs in the column that takes the table's width. Clicking one emits its step, double-clicking
    asks for the step's explanation."""

    step_clicked = QtCore.Signal(int)
    step_activated = QtCore.Signal(int)

    def __init__(self, parent=None):
        super().__init__(0, 3, parent)
        self.setHorizontalHeaderLabels(["step", "event", "message"])
        self.verticalHeader().hide()
        self.verticalHeader().setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        header = self.horizontalHeader()
        header.setStretchLastSection(True)
        for column in (0, 1):
            header.setSectionResizeMode(column, QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        self.setWordWrap(True)
        self.setShowGrid(False)
        self.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.cellClicked.connect(self._on_clicked)
        self.cellDoubleClicked.connect(self._on_double_clicked)

    def show_events(self, events: list[dict]) -> None:
        if self.rowCount() == len(events):
            return
        self.setRowCount(len(events))
        for row, e in enumerate(events):
            for column, text in enumerate((str(e["step"]), e["kind"], breakable(e["message"]))):
                item = QtWidgets.QTableWidgetItem(text)
                item.setToolTip(e["message"])
                item.setTextAlignment(TOP_LEFT)
                self.setItem(row, column, item)
            if e["kind"] in ALARM_EVENTS:
                self.item(row, 1).setForeground(QtGui.QColor("#d9534f"))

    def _on_clicked(self, row: int, _column: int) -> None:
        self._emit_step(row, self.step_clicked)

    def _on_double_clicked(self, row: int, _column: int) -> None:
        self._emit_step(row, self.step_activated)

    def _emit_step(self, row: int, signal) -> None:
        text = self.item(row, 0).text()
        if text.isdigit():
            signal.emit(int(text))
