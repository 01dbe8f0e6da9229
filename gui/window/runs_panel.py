"""The runs a window shows: open runs (tick several to overlay them) and recently opened files."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6 import QtCore, QtWidgets

from ..rundata import RunData
from ..views import PALETTE
from .colors import dot

ROLE = QtCore.Qt.ItemDataRole.UserRole


@dataclass
class RunEntry:
    run_id: str
    path: Path
    data: RunData
    color: str
    item: QtWidgets.QListWidgetItem
    reloading: bool = False  # read afresh (a continued run): the shown data stays until new rows come


class RunsPanel(QtWidgets.QWidget):
    """The open runs, each with its colour and a tick, and the recent run files."""

    ticks_changed = QtCore.Signal()
    selection_changed = QtCore.Signal()
    close_clicked = QtCore.Signal()
    recent_activated = QtCore.Signal(str)  # a recent run file's path

    def __init__(self, open_action, parent=None):
        super().__init__(parent)
        self.entries: dict[str, RunEntry] = {}
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.run_list = QtWidgets.QListWidget()
        self.run_list.setToolTip("Open runs: tick several to overlay them in the same plots")
        self.run_list.itemChanged.connect(lambda _: self.ticks_changed.emit())
        self.run_list.itemSelectionChanged.connect(self.selection_changed)  # Continue follows the selection
        self.run_list.setMaximumHeight(100)
        self.run_list.setTextElideMode(QtCore.Qt.TextElideMode.ElideMiddle)
        self.run_list.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        lay.addWidget(QtWidgets.QLabel("<b>Open runs</b> (tick to overlay)"))
        lay.addWidget(self.run_list)
        row = QtWidgets.QHBoxLayout()
        b = QtWidgets.QToolButton()
        b.setDefaultAction(open_action)
        b.setToolButtonStyle(QtCore.Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        row.addWidget(b)
        close = QtWidgets.QToolButton(text="Close run")
        close.setToolTip("Remove the selected run from the window (the file stays)")
        close.clicked.connect(self.close_clicked)
        row.addWidget(close)
        row.addStretch(1)
        lay.addLayout(row)
        lay.addWidget(QtWidgets.QLabel("<b>Recent runs</b> (double-click to open)"))
        self.recent_runs = QtWidgets.QListWidget()
        self.recent_runs.setMaximumHeight(110)
        self.recent_runs.itemActivated.connect(lambda it: self.recent_activated.emit(it.data(ROLE)))
        lay.addWidget(self.recent_runs)

    def add(self, path: Path) -> RunEntry:
        """A new, ticked entry for a run file (its id is its resolved path)."""
        run_id = str(path)
        color = PALETTE[len(self.entries) % len(PALETTE)]
        item = QtWidgets.QListWidgetItem(path.stem)
        item.setFlags(item.flags() | QtCore.Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(QtCore.Qt.CheckState.Checked)
        item.setData(ROLE, run_id)
        item.setToolTip(str(path))
        item.setIcon(dot(color))
        entry = self.entries[run_id] = RunEntry(run_id, path, RunData(label=path.stem, path=str(path)), color, item)
        self.run_list.blockSignals(True)
        self.run_list.addItem(item)
        self.run_list.blockSignals(False)
        return entry

    def remove(self, run_id: str) -> RunEntry | None:
        entry = self.entries.pop(run_id, None)
        if entry is not None:
            self.run_list.takeItem(self.run_list.row(entry.item))
        return entry

    def ticked(self, first: str | None) -> list[RunEntry]:
        """Ticked runs; ``first`` (the live run) leads, so it sets the x axis."""
        ticked = [e for e in self.entries.values() if e.item.checkState() == QtCore.Qt.CheckState.Checked]
        ticked.sort(key=lambda e: e.run_id != first)
        return ticked

    def selected(self) -> list[RunEntry]:
        return [self.entries[i.data(ROLE)] for i in self.run_list.selectedItems()]

    def untick_all(self) -> None:
        """Without telling anyone: a new run is shown alone (tick others to compare)."""
        self.run_list.blockSignals(True)
        for entry in self.entries.values():
            entry.item.setCheckState(QtCore.Qt.CheckState.Unchecked)
        self.run_list.blockSignals(False)

    def set_recent(self, paths: list[str]) -> None:
        self.recent_runs.clear()
        for p in paths:
            it = QtWidgets.QListWidgetItem(Path(p).name)
            it.setToolTip(p)
            it.setData(ROLE, p)
            self.recent_runs.addItem(it)
