"""The window's colour codes: a run's state, a finding's severity, and the dot icon that shows one."""
from __future__ import annotations

from PySide6 import QtCore, QtGui

STATE_COLORS = {"idle": "#808080", "starting": "#3d7bd9", "running": "#2e9e44", "paused": "#d9a400",
                "finished": "#3d7bd9", "stopped": "#808080", "diverged": "#d9534f", "failed": "#d9534f",
                "crashed": "#d9534f"}
SEVERITY_COLORS = {"ok": "#2e9e44", "info": "#3d7bd9", "warning": "#d9a400", "problem": "#d9534f"}


def dot(color: str) -> QtGui.QIcon:
    pix = QtGui.QPixmap(12, 12)
    pix.fill(QtCore.Qt.GlobalColor.transparent)
    p = QtGui.QPainter(pix)
    p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
    p.setBrush(QtGui.QColor(color))
    p.setPen(QtCore.Qt.PenStyle.NoPen)
    p.drawEllipse(1, 1, 10, 10)
    p.end()
    return QtGui.QIcon(pix)
