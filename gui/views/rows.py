"""Painters of views that show one recorded row at the cursor step: histogram, curve, scatter,
image grid and table."""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6 import QtWidgets

from ..rundata import NONE_FOUND
from .canvas import PlotCanvas, TableCanvas
from .legend import legend_label, line_style, short_name
from .options import PlotOptions, Trace, x_transform, y_transform
from .style import PALETTE, brush, fmt_value, pen


def row_traces(view: dict, traces: list[Trace], cursor):
    """(trace index, series index, name, step, row) at the cursor step, for every run that has one."""
    for t, tr in enumerate(traces):
        for j, name in enumerate(view["series"]):
            if tr.data.has(name):
                step, row = tr.data.row_at(name, cursor)
                if row is not None:
                    yield t, j, name, step, row


def row_note(rows: list, cursor) -> str:
    steps = sorted({r[3] for r in rows})
    if not steps:
        return "no data yet"
    where = "latest, " if cursor is None else ""
    return f"{where}step {steps[-1]}" if len(steps) == 1 else f"{where}steps {steps[0]}–{steps[-1]}"


def fill_color(traces: list[Trace], t: int, j: int) -> str:
    """Filled marks (bars, points) cannot be dashed: one run, a colour per series; several, per run."""
    return PALETTE[j % len(PALETTE)] if len(traces) == 1 else traces[t].color


def paint_histogram(canvas: PlotCanvas, view: dict, traces: list[Trace], opts: PlotOptions, cursor) -> str:
    rows = list(row_traces(view, traces, cursor))
    edges = view.get("options", {}).get("edges")
    for t, j, name, step, row in rows:
        row = np.asarray(row, dtype=float).ravel()
        e = np.asarray(edges, float) if edges is not None and len(edges) == len(row) + 1 \
            else np.arange(len(row) + 1) - 0.5
        color = fill_color(traces, t, j)
        item = canvas.get(f"{t}|{name}", pg.PlotDataItem)
        y = y_transform(row, opts.log_y, []) if opts.log_y else row
        item.setData(x_transform(e, opts.log_x), np.nan_to_num(y, nan=0.0), stepMode="center",
                     fillLevel=0 if not opts.log_y else None, brush=brush(color, 70), pen=pen(color))
        canvas.legend.entry(f"bar|{color}", legend_label(view, traces, t, short_name(view, name)),
                            lambda: pg.BarGraphItem(x0=[0], x1=[0], height=[0], brush=brush(color, 70),
                                                    pen=pen(color)))
    return row_note(rows, cursor)


def paint_curve(canvas: PlotCanvas, view: dict, traces: list[Trace], opts: PlotOptions, cursor) -> str:
    rows = list(row_traces(view, traces, cursor))
    x_opt = view.get("options", {}).get("x")
    labels = view.get("options", {}).get("labels") or []  # names of a curve's columns
    lines = []  # (trace, series name, column, legend name) of every curve drawn
    for t, j, name, step, row in rows:
        row = np.asarray(row, dtype=float)
        row = row.reshape(len(row), -1)
        x = np.asarray(x_opt, float) if x_opt is not None and len(x_opt) == len(row) else np.arange(len(row))
        for c in range(row.shape[1]):
            legend = str(labels[c]) if len(labels) == row.shape[1] else \
                short_name(view, name) + (f"[{c}]" if row.shape[1] > 1 else "")
            lines.append((t, name, c, legend, x, row[:, c]))
    names = list(dict.fromkeys(line[3] for line in lines))
    for t, name, c, legend, x, y in lines:
        color, dash = line_style(traces, t, names.index(legend), len(names))
        item = canvas.get(f"{t}|{name}|{c}", pg.PlotDataItem)
        item.setPen(pen(color, 255, dash))
        item.setData(x_transform(x, opts.log_x), y_transform(y, opts.log_y, []), connect="finite")
    if lines and not any(np.isfinite(line[5]).any() for line in lines):
        canvas.say_empty(NONE_FOUND)
    else:
        canvas.legend.line_entries(traces, names)
    return row_note(rows, cursor)


def paint_scatter(canvas: PlotCanvas, view: dict, traces: list[Trace], opts: PlotOptions, cursor) -> str:
    rows = list(row_traces(view, traces, cursor))
    for t, j, name, step, row in rows:
        p = np.asarray(row, dtype=float).reshape(-1, np.shape(row)[-1])
        x, y = x_transform(p[:, 0], opts.log_x), y_transform(p[:, 1], opts.log_y, [])
        color = fill_color(traces, t, j)
        if p.shape[1] >= 3 and len(traces) == 1:
            c = p[:, 2]
            span = np.nanmax(c) - np.nanmin(c) if np.isfinite(c).any() else 0.0
            norm = (c - np.nanmin(c)) / span if span > 0 else np.zeros_like(c)
            brushes = pg.colormap.get("viridis").map(np.nan_to_num(norm), mode="qcolor")
        else:
            brushes = brush(color, 160)
        item = canvas.get(f"{t}|{name}", pg.ScatterPlotItem)
        item.setData(x, y, size=5, pen=None, brush=brushes)
        canvas.legend.entry(f"dot|{color}", legend_label(view, traces, t, short_name(view, name)),
                            lambda: pg.PlotDataItem(pen=None, symbol="o", symbolSize=9, symbolPen=None,
                                                    symbolBrush=brush(color, 160)))
    return row_note(rows, cursor)


def paint_image_grid(canvas: PlotCanvas, view: dict, traces: list[Trace], opts: PlotOptions, cursor) -> str:
    rows = list(row_traces(view, traces[:1], cursor))
    if not rows:
        return "no data yet"
    _, _, name, step, row = rows[0]
    imgs = np.asarray(row, dtype=float)
    imgs = imgs.reshape(-1, *imgs.shape[-2:])
    if not np.isfinite(imgs).any():
        canvas.say_empty(NONE_FOUND)
        return row_note(rows, cursor)
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
    return row_note(rows, cursor)


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
    rows = list(row_traces(view, traces[:1], cursor))
    doc = rows[0][4] if rows else {"columns": [], "rows": []}
    columns = [str(c) for c in doc.get("columns", [])]
    body = doc.get("rows", [])
    canvas.clearSpans()
    canvas.setColumnCount(len(columns))
    canvas.setHorizontalHeaderLabels(columns)
    canvas.setRowCount(len(body))
    if rows and not body and columns:  # one row across the table says so
        canvas.setRowCount(1)
        canvas.setSpan(0, 0, 1, len(columns))
        canvas.setItem(0, 0, QtWidgets.QTableWidgetItem(NONE_FOUND))
    for i, r in enumerate(body):
        for j, v in enumerate(r[:len(columns)]):
            item = canvas.item(i, j)
            if item is None:
                item = QtWidgets.QTableWidgetItem()
                canvas.setItem(i, j, item)
            item.setText(fmt_value(v) if isinstance(v, float) else str(v))
    canvas.resizeColumnsToContents()
    return row_note(rows, cursor)
