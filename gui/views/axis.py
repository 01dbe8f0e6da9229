"""Axes whose tick labels can be read at any size: plain numbers (no SI prefix), powers of ten on
a log axis, round values on a log axis that spans less than a decade, and labels at the very ends
of the range kept rather than dropped for overflowing the axis by half a line."""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui

END_MARGIN = 8  # pixels a label may reach past the end of its axis (half a line of 8-pt text)


class ValueSpacing(float):
    """A tick spacing in data values, not in decades: a log axis under one decade."""


class Axis(pg.AxisItem):
    """On a log axis, labels only 1, 2 and 5 × 10^k (pyqtgraph labels every minor tick, and they
    overlap); under a decade, ticks at round values (pyqtgraph would label only 10^k, often none)."""

    def __init__(self, orientation: str):
        super().__init__(orientation)
        self.enableAutoSIPrefix(False)  # "accuracy (x0.001)" reads worse than plain numbers
        self.setStyle(maxTickLevel=1)  # the finest grid level tripled the repaint time of a plot

    def tickValues(self, minVal, maxVal, size):
        lo, hi = sorted((minVal, maxVal))
        if not self.logMode or hi - lo >= 1:
            return super().tickValues(minVal, maxVal, size)
        a, b = 10.0 ** lo, 10.0 ** hi
        levels, have = [], np.zeros(0)
        for spacing, offset in self.tickSpacing(a, b, size):
            start = math.ceil((a - offset) / spacing) * spacing + offset
            values = start + spacing * np.arange(int((b - start) / spacing + 1e-9) + 1)
            values = values[(values > 0) & np.all(np.abs(values[:, None] - have[None, :]) > spacing * 1e-3, axis=1)]
            have = np.concatenate([have, values])
            levels.append((ValueSpacing(spacing), np.log10(values).tolist()))
        return levels

    def tickStrings(self, values, scale, spacing):
        if isinstance(spacing, ValueSpacing):
            digits = max(0, -math.floor(math.log10(spacing) + 1e-9))
            return [f"{10 ** v:.{digits}f}" for v in values]
        strings = super().tickStrings(values, scale, spacing)
        if not self.logMode:
            return strings
        keep = []
        for v, text in zip(values, strings):
            mantissa = 10 ** (v - math.floor(v + 1e-9))
            keep.append(text if min(abs(mantissa - m) for m in (1, 2, 5)) < 1e-6 else "")
        return keep

    def boundingRect(self):
        rect = super().boundingRect()
        if self.orientation in ("left", "right"):
            return rect.adjusted(0, -END_MARGIN, 0, END_MARGIN)
        return rect.adjusted(-END_MARGIN, 0, END_MARGIN, 0)


def drawn_ticks(axis: pg.AxisItem) -> list[tuple[str, QtCore.QRectF]]:
    """(label, its rectangle in the axis' coordinates) of every tick label the axis draws at its
    present size (pyqtgraph leaves out those that do not fit); working them out also lets the axis
    ask for the width they need."""
    if not axis.isVisible() or not axis.style["showValues"]:
        return []
    image = QtGui.QImage(8, 8, QtGui.QImage.Format.Format_ARGB32)
    painter = QtGui.QPainter(image)
    try:
        specs = axis.generateDrawSpecs(painter)
    finally:
        painter.end()
    return [(text, rect) for rect, _, text in specs[2]] if specs else []
