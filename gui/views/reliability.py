"""The reliability diagram (Guo et al. 2017): accuracy per confidence bin over the share of samples."""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore

from .canvas import PlotCanvas, ReliabilityCanvas
from .legend import legend_label, short_name
from .options import PlotOptions, Trace
from .rows import fill_color, row_note, row_traces
from .style import PALETTE, brush, pen

GAP_COLOR = "#e15759"


def reliability_summary(row) -> dict:
    """What the reliability diagram draws from one (n_bins, 7) row (ROW_COLUMNS of the calibration
    plugin: lower, upper, confidence, accuracy, count, ci_low, ci_high), over the non-empty bins."""
    b = np.asarray(row, dtype=float).reshape(-1, 7)
    b = b[b[:, 4] > 0]
    total = b[:, 4].sum()
    return {"lower": b[:, 0], "upper": b[:, 1], "confidence": b[:, 2], "accuracy": b[:, 3], "count": b[:, 4],
            "ci_low": b[:, 5], "ci_high": b[:, 6], "share": b[:, 4] / total if total > 0 else b[:, 4],
            "mean_accuracy": float(b[:, 4] @ b[:, 3] / total) if total > 0 else math.nan,
            "mean_confidence": float(b[:, 4] @ b[:, 2] / total) if total > 0 else math.nan}


def paint_reliability(canvas: PlotCanvas, view: dict, traces: list[Trace], opts: PlotOptions, cursor) -> str:
    """Guo et al. (2017): accuracy bars per bin with the gap to the bin's mean confidence, Clopper–Pearson
    error bars and the diagonal above; the share of samples per bin with the mean accuracy and mean
    confidence over all samples below (on a plain ``PlotCanvas``, the upper panel only). Several runs
    are told apart by colour, named in the upper legend; the lower one gives each run's means."""
    rows = list(row_traces(view, traces, cursor))
    lower = canvas.share_plot if isinstance(canvas, ReliabilityCanvas) else None
    diag = canvas.get("diagonal", lambda: pg.PlotDataItem([0, 1], [0, 1]))
    diag.setPen(pen(canvas.theme["cursor"], 200, QtCore.Qt.PenStyle.DashLine))
    single = len(traces) == 1 and len(view["series"]) == 1
    for t, j, name, step, row in rows:
        r = reliability_summary(row)
        if not len(r["count"]):
            continue
        acc, conf = r["accuracy"], r["confidence"]
        color = fill_color(traces, t, j)
        key = f"{t}|{name}"
        bars = canvas.get(key + "|bars", lambda: pg.BarGraphItem(x0=[0], x1=[0], height=[0]))
        bars.setOpts(x0=r["lower"], x1=r["upper"], height=acc, brush=brush(color, 60), pen=pen(color, 160))
        dots = canvas.get(f"{key}|dots", pg.PlotDataItem)
        dots.setData(conf, acc, pen=None, symbol="o", symbolSize=6, symbolBrush=brush(color, 255),
                     symbolPen=pen(color))
        dots.setZValue(3)
        label = "accuracy" if single else legend_label(view, traces, t, short_name(view, name))
        canvas.legend.entry(f"dots|{color}", label,
                            lambda: pg.PlotDataItem(pen=None, symbol="o", symbolSize=9, symbolPen=pen(color),
                                                    symbolBrush=brush(color, 255)))
        gap = canvas.get(f"{key}|gap", lambda: pg.BarGraphItem(x0=[0], x1=[0], height=[0]))
        gap.setOpts(x0=r["lower"], x1=r["upper"], y0=np.minimum(acc, conf), height=np.abs(conf - acc),
                    brush=brush(GAP_COLOR, 90), pen=pen(GAP_COLOR, 170))
        gap.setZValue(1)
        err = canvas.get(key + "|err", lambda: pg.ErrorBarItem(x=np.zeros(1), y=np.zeros(1)))
        err.setData(x=conf, y=acc, top=np.clip(r["ci_high"] - acc, 0, None),
                    bottom=np.clip(acc - r["ci_low"], 0, None), beam=0.01, pen=pen(color, 200))
        err.setZValue(2)
        if lower is None:
            continue
        hist = canvas.get(key + "|share", lambda: pg.BarGraphItem(x0=[0], x1=[0], height=[0]), plot=lower)
        hist.setOpts(x0=r["lower"], x1=r["upper"], height=r["share"], brush=brush(color, 110),
                     pen=pen(color, 200))
        for what, label, dash, line_color in (("accuracy", "accuracy" if single else "acc.",
                                               QtCore.Qt.PenStyle.SolidLine, canvas.theme["fg"] if single else color),
                                              ("confidence", "avg confidence" if single else "conf.",
                                               QtCore.Qt.PenStyle.DashLine, PALETTE[1] if single else color)):
            mean = r["mean_" + what]
            line = canvas.get(f"{key}|mean_{what}", pg.PlotDataItem, ignore_bounds=True, plot=lower)
            line_pen = pen(line_color, 255, dash)
            line_pen.setWidthF(2)
            line.setData([mean, mean], [0, 1], pen=line_pen)  # clipped to the panel's height
            line.setZValue(2)
            canvas.share_legend.entry(f"{key}|{what}|{line_color}", f"{label} {mean:.3f}",  # Guo et al.'s labels
                                      lambda p=line_pen: pg.PlotDataItem(pen=p))
    if rows:
        canvas.legend.entry("gap", "gap", lambda: pg.BarGraphItem(x0=[0], x1=[0], height=[0],
                                                                  brush=brush(GAP_COLOR, 90), pen=pen(GAP_COLOR, 170)))
    canvas.set_label("bottom", "confidence")
    canvas.set_label("left", "accuracy")
    if lower is not None:
        canvas.set_share_label("bottom", "confidence")
        canvas.set_share_label("left", "share of samples")
    return row_note(rows, cursor)
