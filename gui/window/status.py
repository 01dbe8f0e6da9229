"""The run's state at a glance, in the toolbar: a coloured state pill, the progress bar, the speed."""
from __future__ import annotations

import time

from PySide6 import QtCore, QtWidgets

from .colors import STATE_COLORS


class RunStatus:
    """The toolbar widgets that show the trained run's state, progress and speed."""

    def __init__(self):
        self.state_label = QtWidgets.QLabel()
        self.state_label.setObjectName("state")
        self.state_label.setMinimumWidth(90)
        self.state_label.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.progress = QtWidgets.QProgressBar()
        self.progress.setMaximumWidth(260)
        self.progress.setMinimumWidth(140)
        self.progress.setFormat("no run")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.rate_label = QtWidgets.QLabel()
        self.rate_label.setMinimumWidth(170)

    def add_to(self, toolbar: QtWidgets.QToolBar) -> None:
        for w in (self.state_label, self.progress, self.rate_label):
            toolbar.addWidget(w)

    def show_state(self, state: str) -> None:
        color = STATE_COLORS.get(state, "#808080")
        self.state_label.setText(state)
        self.state_label.setStyleSheet(f"background: {color}; color: white; border-radius: 8px; "
                                       "padding: 2px 10px; font-weight: bold;")
        self.state_label.setToolTip(f"Training state: {state}")
        if state == "finished":
            self.progress.setValue(self.progress.maximum())
            self.rate_label.setText(self.rate_label.text().split(" · ")[0] + " · done")

    def start(self, total: int | None) -> None:
        self.progress.setRange(0, total or 0)
        self.progress.setValue(0)
        self.progress.setFormat("%v / %m")

    def show_progress(self, msg: dict) -> None:
        """The engine's progress message: step of total, steps per second, time left."""
        self.progress.setRange(0, int(msg.get("total") or 0))
        self.progress.setValue(int(msg["step"]))
        eta = msg.get("eta_s")
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta is not None else "?"
        self.rate_label.setText(f" {msg.get('steps_per_s', 0):.0f} steps/s · ETA {eta_text}")

    def advance_to(self, step: int) -> None:
        """Progress also follows the file (a poll may see rows before the engine's next message)."""
        self.progress.setValue(max(self.progress.value(), step))
