"""Draws declared views (engine/plugin.py ``View``, as dicts) — live in the window and as static images.

One set of painter functions per view kind serves both: ``ViewWidget`` (live, linked step cursor,
smoothing, log axes, wall-time x, export) and ``render_view_image`` (offscreen PNG/SVG for reports).
A painter gets a ``Canvas`` (a plot or a table), the view, the runs to draw (``Trace``), the plot
options and the cursor step; it asks the canvas for items by key, so a live redraw reuses them.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, replace

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from .reduce import band_envelope, column_starts, envelope, log10_or_nan, value_at
from .rundata import RunData

STEP_KINDS = ("line", "band", "heatmap")
ROW_KINDS = ("histogram", "curve", "reliability", "scatter", "table", "image_grid")
PALETTE = ("#4c8fe0", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7",
           "#9c755f", "#8c8c8c")
DASHES = (QtCore.Qt.PenStyle.SolidLine, QtCore.Qt.PenStyle.DashLine, QtCore.Qt.PenStyle.DotLine,
          QtCore.Qt.PenStyle.DashDotLine)
THEMES = {
    "light": {"bg": "#ffffff", "fg": "#303030", "cursor": "#6a6a6a"},
    "dark": {"bg": "#1e1f22", "fg": "#d0d0d0", "cursor": "#a0a0a0"},
}
MAX_LEGEND = 6
LEGEND_CORNERS = ((-4, 4), (4, 4), (-4, -4), (4, -4))  # offsets: top right, top left, bottom right, left
FEW_POINTS = 60  # below this many visible points a line gets markers (sparse eval series)


@dataclass(frozen=True)
class PlotOptions:
    """How one plot draws its data; ``smoothing`` None follows the window-wide slider."""

    smoothing: float | None = None
    log_x: bool = False
    log_y: bool | None = None  # None: the view's own ``log_y`` option
    x_mode: str = "step"  # or "wall_time"


@dataclass
class Trace:
    """One run as drawn in a plot: its data, its colour and its legend label."""

    data: RunData
    color: str
    label: str


def effective(view: dict, opts: PlotOptions, global_smoothing: float = 0.0) -> PlotOptions:
    """Options with the defaults resolved (view's log_y, the global smoothing)."""
    log_y = bool(view.get("options", {}).get("log_y", False)) if opts.log_y is None else opts.log_y
    smoothing = global_smoothing if opts.smoothing is None else opts.smoothing
    return replace(opts, log_y=log_y, smoothing=smoothing)


def fmt_value(v) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(v):
        return str(v)
    return f"{v:.4g}"


# ---------------------------------------------------------------------------------------------
# Canvases
# ---------------------------------------------------------------------------------------------
class Axis(pg.AxisItem):
    """On a log axis, labels only 1, 2 and 5 × 10^k (pyqtgraph labels every minor tick, and they overlap)."""

    def __init__(self, orientation: str):
        super().__init__(orientation)
        self.enableAutoSIPrefix(False)  # "accuracy (x0.001)" reads worse than plain numbers
        self.setStyle(maxTickLevel=1)  # the finest grid level tripled the repaint time of a plot

    def tickStrings(self, values, scale, spacing):
        strings = super().tickStrings(values, scale, spacing)
        if not self.logMode:
            return strings
        keep = []
        for v, text in zip(values, strings):
            mantissa = 10 ** (v - math.floor(v + 1e-9))
            keep.append(text if min(abs(mantissa - m) for m in (1, 2, 5)) < 1e-6 else "")
        return keep


class PlotCanvas(pg.PlotWidget):
    """A plot whose items are fetched by key, so painters can redraw without rebuilding."""

    def __init__(self, parent=None):
        super().__init__(parent, axisItems={"left": Axis("left"), "bottom": Axis("bottom")})
        self._items: dict[str, QtWidgets.QGraphicsItem] = {}
        self._touched: set[str] = set()
        self.plotItem.setMenuEnabled(False)
        self.plotItem.showGrid(x=True, y=True, alpha=0.15)
        self.legend = self.plotItem.addLegend(offset=(-4, 4), labelTextSize="8pt", verSpacing=-6)
        self.legend.setVisible(False)
        self.cursor_line = pg.InfiniteLine(angle=90, movable=False)
        self.cursor_line.setZValue(100)
        self.cursor_line.setVisible(False)
        self.plotItem.addItem(self.cursor_line, ignoreBounds=True)
        self.note = pg.TextItem(anchor=(0, 0))
        self.note.setZValue(101)
        self.plotItem.addItem(self.note, ignoreBounds=True)
        self.theme = THEMES["light"]
        self.show_legend: bool | None = None  # None: automatic
        self.place_legend = True  # into the emptiest corner (see end())

    def begin(self) -> None:
        self._touched.clear()

    @property
    def plots(self) -> tuple:
        """The plot panels; the first is ``plotItem``."""
        return (self.plotItem,)

    def get(self, key: str, factory, ignore_bounds: bool = False, plot=None):
        """The item drawn under ``key``, made by ``factory`` and added to ``plot`` (default: the main one)."""
        item = self._items.get(key)
        if item is None:
            item = factory()
            self._items[key] = item
            (plot or self.plotItem).addItem(item, ignoreBounds=ignore_bounds)
        self._touched.add(key)
        return item

    def end(self) -> None:
        for key in [k for k in self._items if k not in self._touched]:
            item = self._items.pop(key)
            for plot in self.plots:  # removeItem ignores an item that is not in that plot
                plot.removeItem(item)
        n = len(self.legend.items)
        auto = 1 < n <= MAX_LEGEND  # more entries than that cover the curves: the header lists values
        self.legend.setVisible(auto if self.show_legend is None else self.show_legend and n > 0)
        if self.legend.isVisible() and self.place_legend:
            self._place_legend()

    def _place_legend(self) -> None:
        """Move the legend to the corner where it hides the fewest drawn points (top right first)."""
        vb = self.plotItem.vb
        (x0, x1), (y0, y1) = vb.viewRange()
        size = self.legend.boundingRect()
        w, h = size.width() / max(vb.width(), 1.0), size.height() / max(vb.height(), 1.0)
        data = [item.getData() for item in self.plotItem.listDataItems()]
        data = [(x, y) for x, y in data if x is not None and len(x)]
        if not data:
            return
        fx = (np.concatenate([x for x, _ in data]) - x0) / ((x1 - x0) or 1.0)
        fy = (np.concatenate([y for _, y in data]) - y0) / ((y1 - y0) or 1.0)

        def hidden(offset) -> int:
            xs = fx >= 1 - w if offset[0] < 0 else fx <= w
            ys = fy >= 1 - h if offset[1] > 0 else fy <= h  # a positive y offset hangs from the top
            return int(np.count_nonzero(xs & ys & (fx >= 0) & (fx <= 1) & (fy >= 0) & (fy <= 1)))

        best = min(LEGEND_CORNERS, key=hidden)
        if tuple(self.legend.opts["offset"]) != best:
            self.legend.setOffset(best)

    def columns(self) -> int:
        """Pixel columns of the data area: the resolution curves are reduced to."""
        return max(50, int(self.plotItem.vb.width()) or self.width())

    def x_window(self, lo: float, hi: float) -> tuple[float, float]:
        """The x interval on screen: the data's whole span while x auto-ranges, else the view."""
        vb = self.plotItem.vb
        if vb.state["autoRange"][0] is not False:
            return lo, hi
        return tuple(vb.viewRange()[0])

    def set_label(self, axis: str, text: str | None) -> None:
        """Axis label, set only when it changes (setting it relayouts the plot)."""
        if text and self.plotItem.getAxis(axis).labelText != text:
            self.plotItem.setLabel(axis, text)

    def set_log_axes(self, log_x: bool, log_y: bool) -> None:
        """Data arrive already log10'd; only the tick labels switch to powers of ten."""
        if (self.plotItem.getAxis("bottom").logMode, self.plotItem.getAxis("left").logMode) != (log_x, log_y):
            self.plotItem.getAxis("bottom").setLogMode(log_x, False)
            self.plotItem.getAxis("left").setLogMode(False, log_y)

    def apply_theme(self, theme: dict) -> None:
        self.theme = theme
        self.setBackground(theme["bg"])
        for name in ("left", "bottom"):
            axis = self.plotItem.getAxis(name)
            axis.setPen(pg.mkPen(theme["fg"]))
            axis.setTextPen(pg.mkPen(theme["fg"]))
        self.plotItem.titleLabel.setAttr("color", theme["fg"])
        self.cursor_line.setPen(pg.mkPen(theme["cursor"], width=1, style=QtCore.Qt.PenStyle.DashLine))
        self.note.setColor(theme["fg"])
        self.legend.setLabelTextColor(theme["fg"])
        bg = QtGui.QColor(theme["bg"])
        bg.setAlpha(190)
        self.legend.setBrush(pg.mkBrush(bg))


class ReliabilityCanvas(PlotCanvas):
    """Two panels sharing x (Guo et al. 2017): the reliability plot (``plotItem``, 2/3 of the height)
    over a histogram of the samples per confidence bin (``share_plot``, 1/3)."""

    AXIS_WIDTH = 46  # both left axes equally wide, so the linked x axes line up

    def __init__(self, parent=None):
        super().__init__(parent)
        self.share_plot = pg.PlotItem(axisItems={"left": Axis("left"), "bottom": Axis("bottom")})
        self.share_plot.setMenuEnabled(False)
        self.share_plot.showGrid(x=True, y=True, alpha=0.15)
        self.share_plot.setXLink(self.plotItem)
        self.share_plot.vb.setMouseEnabled(x=True, y=False)  # y always fits the histogram
        self.share_plot.addLegend(offset=(4, 4), labelTextSize="8pt", verSpacing=-6, colCount=2)  # a row per run
        layout = pg.GraphicsLayout()
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        self.setCentralItem(layout)
        layout.addItem(self.plotItem, row=0, col=0)
        layout.addItem(self.share_plot, row=1, col=0)
        layout.layout.setRowStretchFactor(0, 2)
        layout.layout.setRowStretchFactor(1, 1)
        for plot in self.plots:
            plot.getAxis("left").setWidth(self.AXIS_WIDTH)
        self.legend.setOffset((4, 4))  # top left: high-confidence bars reach the top right
        self.place_legend = False  # the bars are not curves: the emptiest-corner count would miss them

    @property
    def plots(self) -> tuple:
        return (self.plotItem, self.share_plot)

    def set_share_label(self, axis: str, text: str) -> None:
        if self.share_plot.getAxis(axis).labelText != text:
            self.share_plot.setLabel(axis, text)

    def end(self) -> None:
        super().end()
        legend = self.share_plot.legend
        legend.setVisible(bool(legend.items) and self.show_legend is not False)

    def apply_theme(self, theme: dict) -> None:
        super().apply_theme(theme)
        for name in ("left", "bottom"):
            axis = self.share_plot.getAxis(name)
            axis.setPen(pg.mkPen(theme["fg"]))
            axis.setTextPen(pg.mkPen(theme["fg"]))
        self.share_plot.legend.setLabelTextColor(theme["fg"])
        self.share_plot.legend.setBrush(self.legend.opts["brush"])


class TableCanvas(QtWidgets.QTableWidget):
    """A table view's drawing surface."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setAlternatingRowColors(True)
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setStretchLastSection(True)
        self.theme = THEMES["light"]

    def apply_theme(self, theme: dict) -> None:
        self.theme = theme


def make_canvas(view: dict):
    if view["kind"] == "table":
        return TableCanvas()
    return ReliabilityCanvas() if view["kind"] == "reliability" else PlotCanvas()


# ---------------------------------------------------------------------------------------------
# Painters: one per view kind, (canvas, view, traces, opts, cursor) -> note text
# ---------------------------------------------------------------------------------------------
def _pen(color: str, alpha: int = 255, style=QtCore.Qt.PenStyle.SolidLine):
    c = QtGui.QColor(color)
    c.setAlpha(alpha)
    pen = pg.mkPen(c, width=1)
    pen.setStyle(style)
    pen.setCosmetic(True)
    return pen


def _brush(color: str, alpha: int):
    c = QtGui.QColor(color)
    c.setAlpha(alpha)
    return pg.mkBrush(c)


def _curve_style(traces: list[Trace], t: int, j: int) -> tuple[str, QtCore.Qt.PenStyle]:
    """One run: a colour per line. Several runs: a colour per run, a dash pattern per line."""
    if len(traces) == 1:
        return PALETTE[j % len(PALETTE)], DASHES[0]
    return traces[t].color, DASHES[j % len(DASHES)]


def short_name(view: dict, name: str) -> str:
    """A series' legend name: without its plugin prefix when every series of the view shares it."""
    prefixes = {n.split("/", 1)[0] for n in view["series"] if "/" in n}
    if len(prefixes) == 1 and all("/" in n for n in view["series"]) and len(view["series"]) > 1:
        return name.split("/", 1)[1]
    return name


def legend_label(view: dict, traces: list, t: int, name: str) -> str:
    """One run: the series' name. Several: the run's label, plus the series' when the view has several."""
    if len(traces) == 1:
        return name
    if len(view["series"]) == 1 and "[" not in name:
        return traces[t].label
    return f"{traces[t].label}: {name}"


def _lines_of(view: dict, data: RunData):
    """(series name, column or None, legend name) for every line a line view draws. ``labels``
    names the columns of a k-column series, or the series themselves when there is one per series."""
    labels = view.get("options", {}).get("labels") or []
    per_series = len(labels) == len(view["series"]) > 1
    out = []
    for i, name in enumerate(view["series"]):
        if not data.has(name):
            continue
        v = data.values(name)
        short = str(labels[i]) if per_series else short_name(view, name)
        if v.ndim == 1:
            out.append((name, None, short))
        else:
            k = v.shape[1]
            names = labels if labels and len(labels) == k and not per_series else \
                [short] if k == 1 else [f"{short}[{c}]" for c in range(k)]
            out.extend((name, c, str(names[c])) for c in range(k))
    return out


def _x_transform(x: np.ndarray, log_x: bool) -> np.ndarray:
    if not log_x:
        return x
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, np.log10(np.where(x > 0, x, 1.0)), np.nan)


def _y_transform(y: np.ndarray, log_y: bool, hidden: list[int]) -> np.ndarray:
    if not log_y:
        return y
    out, bad = log10_or_nan(y)
    hidden.append(bad)
    return out


def _reduce_x_window(canvas: PlotCanvas, xs: list[np.ndarray], log_x: bool) -> tuple[float, float]:
    finite = [x for x in xs if len(x)]
    lo = min((float(x[0]) for x in finite), default=0.0)
    hi = max((float(x[-1]) for x in finite), default=1.0)
    x0, x1 = canvas.x_window(lo, hi)
    if log_x and canvas.plotItem.vb.state["autoRange"][0] is False:
        x0, x1 = 10 ** x0, 10 ** x1
    return x0, x1


def paint_line(canvas: PlotCanvas, view: dict, traces: list[Trace], opts: PlotOptions, cursor) -> str:
    cols = canvas.columns()
    lines = [(t, j, line) for t, tr in enumerate(traces) for j, line in enumerate(_lines_of(view, tr.data))]
    xs = {(t, line[0]): traces[t].data.x(line[0], opts.x_mode) for t, j, line in lines}
    x0, x1 = _reduce_x_window(canvas, list(xs.values()), opts.log_x)
    hidden: list[int] = []
    for t, j, (name, col, legend) in lines:
        data = traces[t].data
        x = xs[(t, name)]
        color, dash = _curve_style(traces, t, j)
        label = legend_label(view, traces, t, legend)
        raw = data.column(name, col)
        key = f"{t}|{name}|{col}"
        layers = [("raw", raw)]
        if opts.smoothing > 0:
            layers.append(("smooth", data.smoothed(name, col, opts.smoothing)))
        for layer, y in layers:
            faint = layer == "raw" and len(layers) == 2
            rx, ry = envelope(x, y, x0, x1, cols)
            ry = _y_transform(ry, opts.log_y, hidden)
            item = canvas.get(f"{key}|{layer}" + ("" if faint else f"|{label}"),
                              lambda: pg.PlotDataItem(name=None if faint else label))
            item.setPen(_pen(color, 70 if faint else 255, dash))
            sparse = len(rx) < FEW_POINTS and not faint
            item.setSymbol("o" if sparse else None)
            if sparse:
                item.setSymbolSize(4)
                item.setSymbolPen(_pen(color))
                item.setSymbolBrush(_brush(color, 255))
            item.setData(_x_transform(rx, opts.log_x), ry, connect="finite")
    return f"{sum(hidden)} values ≤ 0 not shown on the log axis" if sum(hidden) else ""


def paint_band(canvas: PlotCanvas, view: dict, traces: list[Trace], opts: PlotOptions, cursor) -> str:
    cols = canvas.columns()
    hidden: list[int] = []
    xs = [tr.data.x(n, opts.x_mode) for tr in traces for n in view["series"] if tr.data.has(n)]
    x0, x1 = _reduce_x_window(canvas, xs, opts.log_x)
    for t, tr in enumerate(traces):
        for j, name in enumerate(n for n in view["series"] if tr.data.has(n)):
            color, dash = _curve_style(traces, t, j)
            x = tr.data.x(name, opts.x_mode)
            v = tr.data.values(name)
            key = f"{t}|{name}"
            bx, lo, hi = band_envelope(x, v[:, 0], v[:, 2], x0, x1, cols)
            bx = _x_transform(bx, opts.log_x)
            lo_item = canvas.get(key + "|lo", lambda: pg.PlotDataItem())
            hi_item = canvas.get(key + "|hi", lambda: pg.PlotDataItem())
            for item, y in ((lo_item, lo), (hi_item, hi)):
                item.setPen(_pen(color, 60))
                item.setData(bx, _y_transform(y, opts.log_y, hidden), connect="finite")
            fill = canvas.get(key + "|fill", lambda: pg.FillBetweenItem(lo_item, hi_item))
            fill.setBrush(_brush(color, 50))
            mid = tr.data.smoothed(name, 1, opts.smoothing) if opts.smoothing > 0 else v[:, 1]
            mx, my = envelope(x, mid, x0, x1, cols)
            label = legend_label(view, traces, t, short_name(view, name))
            item = canvas.get(f"{key}|mid|{label}", lambda: pg.PlotDataItem(name=label))
            item.setPen(_pen(color, 255, dash))
            item.setData(_x_transform(mx, opts.log_x), _y_transform(my, opts.log_y, hidden), connect="finite")
    return f"{sum(hidden)} values ≤ 0 not shown on the log axis" if sum(hidden) else ""


def paint_heatmap(canvas: PlotCanvas, view: dict, traces: list[Trace], opts: PlotOptions, cursor) -> str:
    tr = traces[0]
    name = next((n for n in view["series"] if tr.data.has(n)), None)
    if name is None:
        return ""
    x = tr.data.x(name, opts.x_mode)
    v = np.asarray(tr.data.values(name), dtype=float)
    v = v.reshape(len(v), -1)
    if len(x) > 2 * canvas.columns():
        idx = column_starts(x, canvas.columns())
        x, v = x[idx], v[idx]
    if opts.log_y:
        v, _ = log10_or_nan(v)
    img = canvas.get("heat", lambda: pg.ImageItem(axisOrder="col-major"))
    img.setColorMap(pg.colormap.get("viridis"))
    img.setImage(v, autoLevels=True)
    x_lo, x_hi = float(x[0]), float(x[-1])
    width = (x_hi - x_lo) * len(x) / max(1, len(x) - 1) if len(x) > 1 else 1.0
    img.setRect(QtCore.QRectF(x_lo, -0.5, width, v.shape[1]))
    labels = view.get("options", {}).get("y_labels")
    if labels and len(labels) == v.shape[1]:
        step = max(1, len(labels) // 12)
        canvas.plotItem.getAxis("left").setTicks([[(i, str(labels[i])) for i in range(0, len(labels), step)]])
    return "" if len(traces) == 1 else f"showing {tr.label} only"


def _row_traces(view: dict, traces: list[Trace], cursor):
    """(trace index, series index, name, step, row) at the cursor step, for every run that has one."""
    for t, tr in enumerate(traces):
        for j, name in enumerate(view["series"]):
            if tr.data.has(name):
                step, row = tr.data.row_at(name, cursor)
                if row is not None:
                    yield t, j, name, step, row


def _row_note(rows: list, cursor) -> str:
    steps = sorted({r[3] for r in rows})
    if not steps:
        return "no data yet"
    where = "latest, " if cursor is None else ""
    return f"{where}step {steps[-1]}" if len(steps) == 1 else f"{where}steps {steps[0]}–{steps[-1]}"


def paint_histogram(canvas: PlotCanvas, view: dict, traces: list[Trace], opts: PlotOptions, cursor) -> str:
    rows = list(_row_traces(view, traces, cursor))
    edges = view.get("options", {}).get("edges")
    for t, j, name, step, row in rows:
        row = np.asarray(row, dtype=float).ravel()
        e = np.asarray(edges, float) if edges is not None and len(edges) == len(row) + 1 \
            else np.arange(len(row) + 1) - 0.5
        color = _curve_style(traces, t, j)[0]
        label = legend_label(view, traces, t, short_name(view, name))
        item = canvas.get(f"{t}|{name}|{label}", lambda: pg.PlotDataItem(name=label))
        y = _y_transform(row, opts.log_y, []) if opts.log_y else row
        item.setData(_x_transform(e, opts.log_x), np.nan_to_num(y, nan=0.0), stepMode="center",
                     fillLevel=0 if not opts.log_y else None, brush=_brush(color, 70), pen=_pen(color))
    return _row_note(rows, cursor)


def paint_curve(canvas: PlotCanvas, view: dict, traces: list[Trace], opts: PlotOptions, cursor) -> str:
    rows = list(_row_traces(view, traces, cursor))
    x_opt = view.get("options", {}).get("x")
    for t, j, name, step, row in rows:
        row = np.asarray(row, dtype=float)
        row = row.reshape(len(row), -1)
        x = np.asarray(x_opt, float) if x_opt is not None and len(x_opt) == len(row) else np.arange(len(row))
        for c in range(row.shape[1]):
            color, dash = _curve_style(traces, t, j + c)
            label = legend_label(view, traces, t, short_name(view, name))
            item = canvas.get(f"{t}|{name}|{c}|{label}", lambda: pg.PlotDataItem(name=label if c == 0 else None))
            item.setPen(_pen(color, 255, dash))
            item.setData(_x_transform(x, opts.log_x), _y_transform(row[:, c], opts.log_y, []), connect="finite")
    return _row_note(rows, cursor)


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


def _legend_bars(legend, name: str, **opts):
    """Bars with a legend entry (a plot lists only curves in its legend by itself)."""
    bars = pg.BarGraphItem(x0=[0], x1=[0], height=[0], **opts)
    legend.addItem(bars, name)
    return bars


def paint_reliability(canvas: PlotCanvas, view: dict, traces: list[Trace], opts: PlotOptions, cursor) -> str:
    """Guo et al. (2017): accuracy bars per bin with the gap to the bin's mean confidence, Clopper–Pearson
    error bars and the diagonal above; the share of samples per bin with the mean accuracy and mean
    confidence over all samples below (on a plain ``PlotCanvas``, the upper panel only)."""
    rows = list(_row_traces(view, traces, cursor))
    lower = canvas.share_plot if isinstance(canvas, ReliabilityCanvas) else None
    diag = canvas.get("diagonal", lambda: pg.PlotDataItem([0, 1], [0, 1]))
    diag.setPen(_pen(canvas.theme["cursor"], 200, QtCore.Qt.PenStyle.DashLine))
    single = len(traces) == 1 and len(view["series"]) == 1
    for t, j, name, step, row in rows:
        r = reliability_summary(row)
        if not len(r["count"]):
            continue
        acc, conf = r["accuracy"], r["confidence"]
        color = _curve_style(traces, t, j)[0]
        key = f"{t}|{name}"
        label = "accuracy" if single else legend_label(view, traces, t, short_name(view, name))
        bars = canvas.get(key + "|bars", lambda: pg.BarGraphItem(x0=[0], x1=[0], height=[0]))
        bars.setOpts(x0=r["lower"], x1=r["upper"], height=acc, brush=_brush(color, 60), pen=_pen(color, 160))
        dots = canvas.get(f"{key}|dots|{label}", lambda: pg.PlotDataItem(name=label))
        dots.setData(conf, acc, pen=None, symbol="o", symbolSize=6, symbolBrush=_brush(color, 255),
                     symbolPen=_pen(color))
        dots.setZValue(3)
        gap_name = "gap" if t == 0 and j == 0 else None
        gap = canvas.get(f"{key}|gap|{gap_name}", lambda: _legend_bars(canvas.legend, gap_name) if gap_name
                         else pg.BarGraphItem(x0=[0], x1=[0], height=[0]))
        gap.setOpts(x0=r["lower"], x1=r["upper"], y0=np.minimum(acc, conf), height=np.abs(conf - acc),
                    brush=_brush(GAP_COLOR, 90), pen=_pen(GAP_COLOR, 170))
        gap.setZValue(1)
        err = canvas.get(key + "|err", lambda: pg.ErrorBarItem(x=np.zeros(1), y=np.zeros(1)))
        err.setData(x=conf, y=acc, top=np.clip(r["ci_high"] - acc, 0, None),
                    bottom=np.clip(acc - r["ci_low"], 0, None), beam=0.01, pen=_pen(color, 200))
        err.setZValue(2)
        if lower is None:
            continue
        hist = canvas.get(key + "|share", lambda: pg.BarGraphItem(x0=[0], x1=[0], height=[0]), plot=lower)
        hist.setOpts(x0=r["lower"], x1=r["upper"], height=r["share"], brush=_brush(color, 110),
                     pen=_pen(color, 200))
        prefix = "" if single else f"{label}: "
        for what, name, dash, line_color in (("accuracy", "accuracy", QtCore.Qt.PenStyle.SolidLine,
                                              canvas.theme["fg"] if single else color),
                                             ("confidence", "avg confidence", QtCore.Qt.PenStyle.DashLine,
                                              PALETTE[1] if single else color)):
            mean = r["mean_" + what]
            text = f"{prefix}{name} {mean:.3f}"  # Guo et al.'s labels: short enough for a small panel
            line = canvas.get(f"{key}|mean_{what}", lambda: pg.PlotDataItem(name=text), ignore_bounds=True,
                              plot=lower)
            pen = _pen(line_color, 255, dash)
            pen.setWidthF(2)
            line.setData([mean, mean], [0, 1], pen=pen)  # clipped to the panel's height
            line.setZValue(2)
            entry = lower.legend.getLabel(line)  # the value changes in place: the entries keep their order
            if entry is not None and entry.text != text:
                entry.setText(text)
    canvas.set_label("bottom", "confidence")
    canvas.set_label("left", "accuracy")
    if lower is not None:
        canvas.set_share_label("bottom", "confidence")
        canvas.set_share_label("left", "share of samples")
    return _row_note(rows, cursor)


def paint_scatter(canvas: PlotCanvas, view: dict, traces: list[Trace], opts: PlotOptions, cursor) -> str:
    rows = list(_row_traces(view, traces, cursor))
    for t, j, name, step, row in rows:
        p = np.asarray(row, dtype=float).reshape(-1, np.shape(row)[-1])
        x, y = _x_transform(p[:, 0], opts.log_x), _y_transform(p[:, 1], opts.log_y, [])
        color = _curve_style(traces, t, j)[0]
        if p.shape[1] >= 3 and len(traces) == 1:
            c = p[:, 2]
            span = np.nanmax(c) - np.nanmin(c) if np.isfinite(c).any() else 0.0
            norm = (c - np.nanmin(c)) / span if span > 0 else np.zeros_like(c)
            brushes = pg.colormap.get("viridis").map(np.nan_to_num(norm), mode="qcolor")
        else:
            brushes = _brush(color, 160)
        label = legend_label(view, traces, t, short_name(view, name))
        item = canvas.get(f"{t}|{name}|{label}", lambda: pg.ScatterPlotItem(name=label))
        item.setData(x, y, size=5, pen=None, brush=brushes)
    return _row_note(rows, cursor)


def paint_image_grid(canvas: PlotCanvas, view: dict, traces: list[Trace], opts: PlotOptions, cursor) -> str:
    rows = list(_row_traces(view, traces[:1], cursor))
    if not rows:
        return "no data yet"
    _, _, name, step, row = rows[0]
    imgs = np.asarray(row, dtype=float)
    imgs = imgs.reshape(-1, *imgs.shape[-2:])
    mosaic, ncol = tile(imgs)
    item = canvas.get("mosaic", lambda: pg.ImageItem(axisOrder="row-major"))
    item.setColorMap(pg.colormap.get("CET-L1"))
    item.setImage(mosaic, autoLevels=True)
    canvas.plotItem.invertY(True)
    canvas.plotItem.setAspectLocked(True)
    canvas.plotItem.hideAxis("left")
    canvas.plotItem.hideAxis("bottom")
    captions = view.get("options", {}).get("captions") or []
    h, w = imgs.shape[1:]
    for i, text in enumerate(captions[:min(len(imgs), 64)]):
        cap = canvas.get(f"cap{i}", lambda: pg.TextItem(anchor=(0, 0)), ignore_bounds=True)
        cap.setText(str(text))
        cap.setColor("#ffcc00")
        cap.setPos((i % ncol) * (w + 1), (i // ncol) * (h + 1))
    return _row_note(rows, cursor)


def tile(imgs: np.ndarray) -> tuple[np.ndarray, int]:
    """N images (N, H, W) as one mosaic with one-pixel NaN gaps, near-square."""
    n, h, w = imgs.shape
    ncol = int(math.ceil(math.sqrt(n)))
    nrow = int(math.ceil(n / ncol))
    out = np.full((nrow * (h + 1) - 1, ncol * (w + 1) - 1), np.nan)
    for i, im in enumerate(imgs):
        r, c = divmod(i, ncol)
        out[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = im
    return out, ncol


def paint_table(canvas: TableCanvas, view: dict, traces: list[Trace], opts: PlotOptions, cursor) -> str:
    rows = list(_row_traces(view, traces[:1], cursor))
    doc = rows[0][4] if rows else {"columns": [], "rows": []}
    columns = [str(c) for c in doc.get("columns", [])]
    body = doc.get("rows", [])
    canvas.setColumnCount(len(columns))
    canvas.setHorizontalHeaderLabels(columns)
    canvas.setRowCount(len(body))
    for i, r in enumerate(body):
        for j, v in enumerate(r[:len(columns)]):
            item = canvas.item(i, j)
            if item is None:
                item = QtWidgets.QTableWidgetItem()
                canvas.setItem(i, j, item)
            item.setText(fmt_value(v) if isinstance(v, float) else str(v))
    canvas.resizeColumnsToContents()
    return _row_note(rows, cursor)


PAINTERS = {"line": paint_line, "band": paint_band, "heatmap": paint_heatmap, "histogram": paint_histogram,
            "curve": paint_curve, "reliability": paint_reliability, "scatter": paint_scatter,
            "table": paint_table, "image_grid": paint_image_grid}


def paint(canvas, view: dict, traces: list[Trace], opts: PlotOptions, cursor: int | None) -> str:
    """Draw ``view`` on ``canvas``; returns a short note (e.g. the step a row view shows)."""
    painter = PAINTERS.get(view["kind"])
    if painter is None:
        return f"unknown view kind {view['kind']!r}"
    if isinstance(canvas, TableCanvas):
        return painter(canvas, view, traces, opts, cursor)
    canvas.begin()
    note = painter(canvas, view, traces, opts, cursor) if traces else "no data yet"
    canvas.end()
    if view["kind"] in STEP_KINDS:
        canvas.set_log_axes(opts.log_x, bool(opts.log_y) and view["kind"] != "heatmap")
        canvas.set_label("bottom", "wall time (s)" if opts.x_mode == "wall_time" else "step")
        canvas.set_label("left", view.get("options", {}).get("y_label"))
        place_cursor(canvas, traces, opts, cursor)
    else:
        canvas.set_log_axes(opts.log_x, bool(opts.log_y))
        canvas.set_label("bottom", view.get("options", {}).get("x_label"))
    return note


def place_cursor(canvas: PlotCanvas, traces: list[Trace], opts: PlotOptions, cursor: int | None) -> None:
    if cursor is None or not traces:
        canvas.cursor_line.setVisible(False)
        return
    x = float(cursor)
    data = traces[0].data
    if opts.x_mode == "wall_time" and data.has("wall_time"):
        x = float(np.interp(cursor, data.steps("wall_time"), data.values("wall_time")))
    if opts.log_x:
        x = math.log10(x) if x > 0 else 0.0
    canvas.cursor_line.setPos(x)
    canvas.cursor_line.setVisible(True)


def cursor_values(view: dict, traces: list[Trace], opts: PlotOptions, step: int | None) -> str:
    """'name value' at the cursor step for each line of a step view (raw, and smoothed if on)."""
    if step is None or view["kind"] not in ("line", "band"):
        return ""
    parts, infinite = [], view.get("options", {}).get("inf_text", {})  # e.g. a threshold at lr = 0
    for t, tr in enumerate(traces):
        prefix = f"{tr.label}: " if len(traces) > 1 else ""
        for name, col, legend in _lines_of(view, tr.data) if view["kind"] == "line" else \
                [(n, 1, n) for n in view["series"] if tr.data.has(n)]:
            s, v = value_at(tr.data.steps(name), tr.data.column(name, col), step)
            if s is None:
                continue
            shown = lambda x: infinite[name] if name in infinite and math.isinf(x) else fmt_value(x)  # noqa: E731
            text = f"{prefix}{legend} {shown(v)}"
            if opts.smoothing and opts.smoothing > 0:
                _, sv = value_at(tr.data.steps(name), tr.data.smoothed(name, col, opts.smoothing), step)
                text += f" (smoothed {shown(sv)})"
            parts.append(text)
    return f"step {step}: " + ", ".join(parts) if parts else ""


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------
def view_csv(view: dict, traces: list[Trace], opts: PlotOptions, cursor: int | None) -> str:
    """The data behind a view at full resolution: series over steps, or the rows at the cursor."""
    out = io.StringIO()
    w = csv.writer(out)
    if view["kind"] in STEP_KINDS:
        w.writerow(["run", "series", "column", "step", "wall_time", "value", "smoothed"])
        for tr in traces:
            for name in view["series"]:
                if not tr.data.has(name):
                    continue
                v = np.asarray(tr.data.values(name), dtype=float)
                wall = tr.data.x(name, "wall_time")
                cols = [None] if v.ndim == 1 else list(range(v.reshape(len(v), -1).shape[1]))
                for col in cols:
                    y = v if col is None else v.reshape(len(v), -1)[:, col]
                    sm = tr.data.smoothed(name, col, opts.smoothing or 0.0) if v.ndim <= 2 else y
                    for s, x, a, b in zip(tr.data.steps(name), wall, y, sm):
                        w.writerow([tr.label, name, "" if col is None else col, int(s), f"{x:.6g}", repr(float(a)),
                                    repr(float(b))])
    else:
        w.writerow(["run", "series", "step", "index", "value"])
        for t, j, name, step, row in _row_traces(view, traces, cursor):
            if isinstance(row, dict):
                w.writerow([traces[t].label, name, step, "", json.dumps(row)])
                continue
            flat = np.asarray(row)
            for idx in np.ndindex(flat.shape):
                w.writerow([traces[t].label, name, step, " ".join(map(str, idx)), repr(float(flat[idx]))])
    return out.getvalue()


def widget_image(widget: QtWidgets.QWidget, fmt: str) -> bytes:
    """A widget's current picture as PNG or SVG bytes (SVG keeps lines as vectors)."""
    if fmt == "png":
        buf = QtCore.QBuffer()
        buf.open(QtCore.QIODevice.OpenModeFlag.WriteOnly)
        widget.grab().save(buf, "PNG")
        return bytes(buf.data())
    if fmt == "svg":
        from PySide6.QtSvg import QSvgGenerator
        buf = QtCore.QBuffer()
        buf.open(QtCore.QIODevice.OpenModeFlag.WriteOnly)
        gen = QSvgGenerator()
        gen.setOutputDevice(buf)
        gen.setSize(widget.size())
        gen.setViewBox(QtCore.QRect(QtCore.QPoint(0, 0), widget.size()))
        QtWidgets.QWidget.render(widget, gen)  # QGraphicsView overrides render(); want the widget one
        return bytes(buf.data())
    raise ValueError(f"fmt: got {fmt!r}, expected 'png' or 'svg'")


# ---------------------------------------------------------------------------------------------
# The live widget
# ---------------------------------------------------------------------------------------------
SMOOTHING_CHOICES = (("Follow window slider", None), ("Off", 0.0), ("0.6", 0.6), ("0.8", 0.8), ("0.9", 0.9),
                     ("0.95", 0.95), ("0.99", 0.99))


class ViewWidget(QtWidgets.QFrame):
    """One declared view, live: header (title with the view's help as tooltip, values at the cursor,
    a menu with smoothing, log axes, x mode and export), and the canvas below."""

    hovered = QtCore.Signal(int)  # a step under the mouse
    clicked = QtCore.Signal(int)  # a step clicked (pins the shared cursor)

    def __init__(self, view: dict, parent=None):
        super().__init__(parent)
        self.view = view
        self.traces: list[Trace] = []
        self.opts = PlotOptions()
        self.global_smoothing = 0.0
        self.cursor: int | None = None
        self._drawn_key = None
        self._row_key = None
        self._note = ""
        self.setFrameShape(QtWidgets.QFrame.Shape.StyledPanel)
        self.setObjectName("ViewWidget")
        self.canvas = make_canvas(view)
        self.title = QtWidgets.QLabel(f"<b>{view['title']}</b>")
        help_text = view.get("help") or VIEW_HELP_FALLBACK.get(view["kind"], "")
        self.title.setToolTip(help_text)
        self.title.setMinimumWidth(40)  # long titles must not widen the plot grid
        self.setToolTip(help_text)
        self.values = QtWidgets.QLabel()
        self.values.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.values.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
        self.values.setStyleSheet("color: palette(placeholder-text); font-size: 8pt;")
        self.menu_button = QtWidgets.QToolButton(text="⋯")
        self.menu_button.setAutoRaise(True)
        self.menu_button.setToolTip("Smoothing, log axes, x axis, export")
        self.menu_button.setPopupMode(QtWidgets.QToolButton.ToolButtonPopupMode.InstantPopup)
        self.menu_button.setMenu(self._build_menu())
        head = QtWidgets.QHBoxLayout()
        head.setContentsMargins(6, 2, 2, 0)
        head.addWidget(self.title)
        head.addWidget(self.values, 1)
        head.addWidget(self.menu_button)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.setSpacing(0)
        lay.addLayout(head)
        lay.addWidget(self.canvas, 1)
        self.setMinimumHeight(200)
        self.canvas.setMinimumWidth(160)
        if isinstance(self.canvas, PlotCanvas):
            scene = self.canvas.scene()
            scene.sigMouseMoved.connect(self._on_mouse_moved)
            scene.sigMouseClicked.connect(self._on_mouse_clicked)
            self.canvas.plotItem.vb.sigXRangeChanged.connect(self._on_range_changed)

    # -- menu -----------------------------------------------------------------------------------
    def _build_menu(self) -> QtWidgets.QMenu:
        menu = QtWidgets.QMenu(self)
        step_kind = self.view["kind"] in STEP_KINDS
        if self.view["kind"] in ("line", "band"):
            sm = menu.addMenu("Smoothing")
            group = QtGui.QActionGroup(sm)
            for text, value in SMOOTHING_CHOICES:
                a = sm.addAction(text)
                a.setCheckable(True)
                a.setChecked(value is None)
                a.triggered.connect(lambda _=False, v=value: self.set_options(smoothing=v))
                group.addAction(a)
        if self.view["kind"] not in ("table", "image_grid"):
            self.log_x_action = menu.addAction("Log x axis")
            self.log_x_action.setCheckable(True)
            self.log_x_action.toggled.connect(lambda on: self.set_options(log_x=on))
            self.log_y_action = menu.addAction("Log y axis" if self.view["kind"] != "heatmap" else "Log colour scale")
            self.log_y_action.setCheckable(True)
            self.log_y_action.setChecked(bool(self.view.get("options", {}).get("log_y", False)))
            self.log_y_action.toggled.connect(lambda on: self.set_options(log_y=on))
        if isinstance(self.canvas, PlotCanvas) and self.view["kind"] != "image_grid":
            self.legend_action = menu.addAction("Legend")
            self.legend_action.setCheckable(True)
            self.legend_action.setChecked(True)
            self.legend_action.setToolTip(f"Shown automatically for 2–{MAX_LEGEND} entries")
            self.legend_action.toggled.connect(self._toggle_legend)
        if step_kind:
            self.wall_action = menu.addAction("x axis: wall time")
            self.wall_action.setCheckable(True)
            self.wall_action.toggled.connect(lambda on: self.set_options(x_mode="wall_time" if on else "step"))
            menu.addAction("Reset zoom", self.reset_zoom)
        menu.addSeparator()
        for fmt in ("png", "svg", "csv"):
            menu.addAction(f"Export {fmt.upper()}…", lambda f=fmt: self.export_dialog(f))
        return menu

    def set_options(self, **changes) -> None:
        self.opts = replace(self.opts, **changes)
        if isinstance(self.canvas, PlotCanvas) and ("x_mode" in changes or "log_x" in changes):
            self.canvas.plotItem.vb.enableAutoRange(x=True)
        self.redraw(force=True)

    def _toggle_legend(self, on: bool) -> None:
        self.canvas.show_legend = on
        self.redraw(force=True)

    def reset_zoom(self) -> None:
        if isinstance(self.canvas, PlotCanvas):
            self.canvas.plotItem.vb.enableAutoRange()
            self.redraw(force=True)

    # -- data and cursor ------------------------------------------------------------------------
    def set_traces(self, traces: list[Trace]) -> None:
        self.traces = traces
        self.redraw(force=True)

    def set_global_smoothing(self, weight: float) -> None:
        self.global_smoothing = weight
        if self.opts.smoothing is None:
            self.redraw(force=True)

    def set_cursor(self, step: int | None) -> None:
        self.cursor = step
        if self.view["kind"] in STEP_KINDS:
            if isinstance(self.canvas, PlotCanvas):
                place_cursor(self.canvas, self.traces, self.resolved(), step)
            self.values.setText(cursor_values(self.view, self.traces, self.resolved(), step) or self._note)
        else:
            key = self._row_steps(step)
            if key != self._row_key:  # hovering within one evaluation interval changes nothing
                self._row_key = key
                self.redraw(force=True)

    def _row_steps(self, step: int | None) -> tuple:
        """The step of the row each run would show at ``step``."""
        return tuple(tr.data.row_at(name, step)[0] for tr in self.traces for name in self.view["series"]
                     if tr.data.has(name)) + (step is None,)

    def resolved(self) -> PlotOptions:
        return effective(self.view, self.opts, self.global_smoothing)

    def redraw(self, force: bool = False) -> None:
        """Repaint if the data, options or cursor changed since the last paint."""
        key = (tuple((id(t.data), t.data.version, t.color) for t in self.traces), self.resolved(), self.cursor,
               self.canvas.width())
        if not force and key == self._drawn_key:
            return
        self._drawn_key = key
        opts = self.resolved()
        note = self._note = paint(self.canvas, self.view, self.traces, opts, self.cursor)
        if self.view["kind"] in STEP_KINDS:
            self.values.setText(cursor_values(self.view, self.traces, opts, self.cursor) or note)
        else:
            self.values.setText(note)

    def _on_range_changed(self, *_):
        if not getattr(self, "_in_range_change", False):
            self._in_range_change = True
            try:
                QtCore.QTimer.singleShot(0, self, lambda: self.redraw(force=True))
            finally:
                self._in_range_change = False

    def _step_at(self, scene_pos) -> int | None:
        vb = self.canvas.plotItem.vb
        if not self.traces or not vb.sceneBoundingRect().contains(scene_pos):
            return None
        if self.view["kind"] not in STEP_KINDS:
            return None
        x = vb.mapSceneToView(scene_pos).x()
        if self.opts.log_x:
            x = 10 ** x
        return self.traces[0].data.step_of_x(x, self.opts.x_mode)

    def _on_mouse_moved(self, pos) -> None:
        step = self._step_at(pos)
        if step is not None:
            self.hovered.emit(step)

    def _on_mouse_clicked(self, event) -> None:
        if event.button() != QtCore.Qt.MouseButton.LeftButton or event.double():
            return
        step = self._step_at(event.scenePos())
        if step is not None:
            self.clicked.emit(step)

    def apply_theme(self, theme: dict) -> None:
        self.canvas.apply_theme(theme)
        self.redraw(force=True)

    # -- export ---------------------------------------------------------------------------------
    def export_bytes(self, fmt: str) -> bytes:
        if fmt == "csv":
            return view_csv(self.view, self.traces, self.resolved(), self.cursor).encode()
        return widget_image(self.canvas, fmt)

    def export_dialog(self, fmt: str) -> None:
        safe = "".join(c if c.isalnum() else "-" for c in self.view["title"]).strip("-").lower()
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, f"Export {fmt.upper()}", f"{safe}.{fmt}",
                                                        f"{fmt.upper()} (*.{fmt})")
        if path:
            with open(path, "wb") as fh:
                fh.write(self.export_bytes(fmt))


VIEW_HELP_FALLBACK = {
    "line": "Each series over training steps.",
    "band": "A middle value over steps with its low–high range shaded.",
    "heatmap": "A row of values per step, coloured, with steps on x.",
    "histogram": "The distribution at the cursor step.",
    "curve": "A curve recorded at the cursor step.",
    "reliability": "Accuracy against confidence per bin: bars under the diagonal mean overconfidence, "
                   "red bars show the gap to the bin's mean confidence. Below: the share of samples per bin, "
                   "with the mean accuracy and mean confidence over all samples.",
    "scatter": "Points recorded at the cursor step.",
    "table": "A table recorded at the cursor step.",
    "image_grid": "Images recorded at the cursor step.",
}


# ---------------------------------------------------------------------------------------------
# Static images
# ---------------------------------------------------------------------------------------------
def ensure_app() -> QtWidgets.QApplication:
    """The running QApplication, or a new one (offscreen when there is no display)."""
    app = QtWidgets.QApplication.instance()
    if app is None:
        if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
            os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        app = QtWidgets.QApplication([])
    return app


def render_view_image(view: dict, run, step: int | None = None, width: int = 720, height: int = 360,
                      fmt: str = "png", smoothing: float = 0.0, *, theme: str = "light") -> bytes:
    """One declared view of a run (a RunReader, or a RunData) drawn offscreen as PNG or SVG bytes.

    ``step`` marks the cursor (row views show the row there; None: the latest row). Uses the same
    painters as the live ``ViewWidget``; the title is drawn above the plot.
    """
    if fmt not in ("png", "svg"):
        raise ValueError(f"fmt: got {fmt!r}, expected 'png' or 'svg'")
    ensure_app()
    data = run if isinstance(run, RunData) else RunData.from_reader(run, names=view["series"])
    frame = QtWidgets.QWidget()
    frame.setAttribute(QtCore.Qt.WidgetAttribute.WA_DontShowOnScreen)
    pal = frame.palette()
    colors = THEMES[theme]
    pal.setColor(QtGui.QPalette.ColorRole.Window, QtGui.QColor(colors["bg"]))
    pal.setColor(QtGui.QPalette.ColorRole.WindowText, QtGui.QColor(colors["fg"]))
    frame.setPalette(pal)
    frame.setAutoFillBackground(True)
    lay = QtWidgets.QVBoxLayout(frame)
    lay.setContentsMargins(4, 4, 4, 4)
    title = QtWidgets.QLabel(f"<b>{view['title']}</b>")
    lay.addWidget(title)
    canvas = make_canvas(view)
    canvas.apply_theme(colors)
    lay.addWidget(canvas, 1)
    frame.resize(width, height)
    frame.show()
    QtWidgets.QApplication.processEvents()
    trace = Trace(data, PALETTE[0], data.label)
    opts = effective(view, PlotOptions(smoothing=smoothing))
    note = paint(canvas, view, [trace], opts, step)
    if note and view["kind"] in ROW_KINDS:
        title.setText(f"<b>{view['title']}</b> <span style='font-size:8pt'>({note})</span>")
    if isinstance(canvas, PlotCanvas):
        canvas.plotItem.vb.autoRange(padding=0.02)
        if view["kind"] in STEP_KINDS:  # the reduction depends on the final width
            paint(canvas, view, [trace], opts, step)
    QtWidgets.QApplication.processEvents()
    try:
        return widget_image(frame, fmt)
    finally:
        frame.close()
        frame.deleteLater()
