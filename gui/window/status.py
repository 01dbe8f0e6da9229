"""The run's state at a glance, in the toolbar: a coloured state pill, the progress bar, the speed."""
from __future__ import annotations

import time

from PySide6 import QtCore, QtWidgets

from .colors import STATE_COLORS
from .engine_run import FINAL


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
        self.rate: float | None = None  # steps per second, from the latest progress message

    def add_to(self, toolbar: QtWidgets.QToolBar) -> None:
        for w in (self.state_label, self.progress, self.rate_label):
            toolbar.addWidget(w)

    def show_state(self, state: str) -> None:
        """The pill, and beside the bar what holds now: the speed and time left only while running."""
        color = STATE_COLORS.get(state, "#808080")
        self.state_label.setText(state)
        self.state_label.setStyleSheet(f"background: {color}; color: white; border-radius: 8px; "
                                       "padding: 2px 10px; font-weight: bold;")
        self.state_label.setToolTip(f"Training state: {state}")
        step = self.progress.value()
        if state == "finished":
            self.progress.setValue(self.progress.maximum())
            self.rate_label.setText(f" {self.rate:.0f} steps/s · done" if self.rate else " done")
        elif state == "paused":
            self.rate_label.setText(f" paused at step {step}")
        elif state in FINAL:
            self.rate_label.setText(f" {state} after step {step}")

    def start(self, total: int | None, step: int = 0) -> None:
        """A new or continued run: nothing of the previous one's speed or end stays."""
        self.progress.setRange(0, total or 0)
        self.progress.setValue(step)
        self.progress.setFormat("%v / %m")
        self.rate = None
        self.rate_label.setText(" starting the engine…")

    def show_progress(self, msg: dict) -> None:
        """The engine's progress message: step of total, steps per second, time left."""
        self.progress.setRange(0, int(msg.get("total") or 0))
        self.progress.setValue(int(msg["step"]))
        eta = msg.get("eta_s")
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta is not None else "?"
        self.rate = msg.get("steps_per_s", 0)
        self.rate_label.setText(f" {self.rate:.0f} steps/s · ETA {eta_text}")

    def advance_to(self, step: int) -> None:
        """Progress also follows the file (a poll may see rows before the engine's next message)."""
        self.progress.setValue(max(self.progress.value(), step))
