"""Colours, pens and number formatting shared by every painter."""
from __future__ import annotations

import math

import pyqtgraph as pg
from PySide6 import QtCore, QtGui

PALETTE = ("#4c8fe0", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7",
           "#9c755f", "#8c8c8c")
DASHES = (QtCore.Qt.PenStyle.SolidLine, QtCore.Qt.PenStyle.DashLine, QtCore.Qt.PenStyle.DotLine,
          QtCore.Qt.PenStyle.DashDotLine)
THEMES = {
    "light": {"bg": "#ffffff", "fg": "#303030", "cursor": "#6a6a6a"},
    "dark": {"bg": "#1e1f22", "fg": "#d0d0d0", "cursor": "#a0a0a0"},
}


def fmt_value(v) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(v):
        return str(v)
    return f"{v:.4g}"


def pen(color: str, alpha: int = 255, style=QtCore.Qt.PenStyle.SolidLine):
    c = QtGui.QColor(color)
    c.setAlpha(alpha)
    p = pg.mkPen(c, width=1)
    p.setStyle(style)
    p.setCosmetic(True)
    return p


def brush(color: str, alpha: int):
    c = QtGui.QColor(color)
    c.setAlpha(alpha)
    return pg.mkBrush(c)
