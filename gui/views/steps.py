"""Painters of views over training steps (line, band, heatmap), the step cursor, and the values
listed at it. Curves are reduced to the plot's pixel columns after smoothing at full resolution."""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui

from ..reduce import band_envelope, column_starts, envelope, log10_or_nan, value_at
from ..rundata import RunData
from .canvas import PlotCanvas
from .legend import line_style, short_name
from .options import PlotOptions, Trace, x_transform, y_transform
from .style import brush, fmt_value, pen

FEW_POINTS = 60  # below this many visible points a line gets markers (sparse eval series)
SPIKE_COLOR = "#d62728"
SPIKE_KEY = "spikes"  # canvas items "<run index>|spikes": the widget finds clicked markers by it


def lines_of(view: dict, data: RunData):
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


def reduce_x_window(canvas: PlotCanvas, xs: list[np.ndarray], log_x: bool) -> tuple[float, float]:
    finite = [x for x in xs if len(x)]
    lo = min((float(x[0]) for x in finite), default=0.0)
    hi = max((float(x[-1]) for x in finite), default=1.0)
    x0, x1 = canvas.x_window(lo, hi)
    if log_x and canvas.plotItem.vb.state["autoRange"][0] is False:
        x0, x1 = 10 ** x0, 10 ** x1
    return x0, x1


def paint_line(canvas: PlotCanvas, view: dict, traces: list[Trace], opts: PlotOptions, cursor) -> str:
    cols = canvas.columns()
    per_run = [lines_of(view, tr.data) for tr in traces]
    names = list(dict.fromkeys(legend for lines in per_run for _, _, legend in lines))  # j: the same in every run
    xs = {(t, name): traces[t].data.x(name, opts.x_mode) for t, lines in enumerate(per_run) for name, _, _ in lines}
    x0, x1 = reduce_x_window(canvas, list(xs.values()), opts.log_x)
    hidden: list[int] = []
    drawn = []
    for t, lines in enumerate(per_run):
        data = traces[t].data
        for name, col, legend in lines:
            x = xs[(t, name)]
            color, dash = line_style(traces, t, names.index(legend), len(names))
            layers = [("raw", data.column(name, col))]
            if opts.smoothing > 0:
                layers.append(("smooth", data.smoothed(name, col, opts.smoothing)))
            for layer, y in layers:
                faint = layer == "raw" and len(layers) == 2
                rx, ry = envelope(x, y, x0, x1, cols)
                ry = y_transform(ry, opts.log_y, hidden)
                item = canvas.get(f"{t}|{name}|{col}|{layer}", pg.PlotDataItem)
                item.setPen(pen(color, 70 if faint else 255, dash))
                sparse = len(rx) < FEW_POINTS and not faint
                item.setSymbol("o" if sparse else None)
                if sparse:
                    item.setSymbolSize(4)
                    item.setSymbolPen(pen(color))
                    item.setSymbolBrush(brush(color, 255))
                item.setData(x_transform(rx, opts.log_x), ry, connect="finite")
                drawn.append(ry)
    canvas.keep_y_readable(drawn, opts.log_y)
    canvas.legend.line_entries(traces, names)
    paint_spike_markers(canvas, view, traces, opts)
    return f"{sum(hidden)} values ≤ 0 not shown on the log axis" if sum(hidden) else ""


def spike_steps(view: dict, data: RunData) -> np.ndarray:
    """The steps of the loss spikes a view marks (its ``spikes`` option names their series)."""
    name = view.get("options", {}).get("spikes")
    return data.steps(name) if name and data.has(name) else np.zeros(0, np.int64)


def paint_spike_markers(canvas: PlotCanvas, view: dict, traces: list[Trace], opts: PlotOptions) -> None:
    """A triangle on the first curve at each of a run's loss spikes; each marker keeps its step,
    so a click on it can ask for the step's explanation."""
    curve, drawn = view["series"][0], False
    for t, tr in enumerate(traces):
        steps = spike_steps(view, tr.data)
        if not len(steps) or not tr.data.has(curve):
            continue
        c_steps = tr.data.steps(curve)
        at = np.clip(np.searchsorted(c_steps, steps), 0, len(c_steps) - 1)
        x = np.interp(steps, c_steps, tr.data.x(curve, opts.x_mode))
        item = canvas.get(f"{t}|{SPIKE_KEY}", lambda: pg.ScatterPlotItem(symbol="t", size=12))
        item.setZValue(50)  # over the curves, under the cursor line
        item.setBrush(brush(SPIKE_COLOR if len(traces) == 1 else tr.color, 230))
        item.setPen(pen(canvas.theme["fg"]))
        item.setData(x=x_transform(x, opts.log_x), y=y_transform(tr.data.column(curve, None)[at], opts.log_y, []),
                     data=steps)
        drawn = True
    if drawn:
        canvas.legend.entry("spike", "loss spike", spike_sample)


def spike_sample() -> pg.PlotDataItem:
    return pg.PlotDataItem(pen=None, symbol="t", symbolSize=9, symbolBrush=brush(SPIKE_COLOR, 230))


def paint_band(canvas: PlotCanvas, view: dict, traces: list[Trace], opts: PlotOptions, cursor) -> str:
    cols = canvas.columns()
    hidden: list[int] = []
    xs = [tr.data.x(n, opts.x_mode) for tr in traces for n in view["series"] if tr.data.has(n)]
    x0, x1 = reduce_x_window(canvas, xs, opts.log_x)
    names = [n for n in view["series"] if any(tr.data.has(n) for tr in traces)]
    for t, tr in enumerate(traces):
        for name in (n for n in names if tr.data.has(n)):
            color, dash = line_style(traces, t, names.index(name), len(names))
            x = tr.data.x(name, opts.x_mode)
            v = tr.data.values(name)
            key = f"{t}|{name}"
            bx, lo, hi = band_envelope(x, v[:, 0], v[:, 2], x0, x1, cols)
            bx = x_transform(bx, opts.log_x)
            lo_item = canvas.get(key + "|lo", pg.PlotDataItem)
            hi_item = canvas.get(key + "|hi", pg.PlotDataItem)
            for item, y in ((lo_item, lo), (hi_item, hi)):
                item.setPen(pen(color, 60))
                item.setData(bx, y_transform(y, opts.log_y, hidden), connect="finite")
            fill = canvas.get(key + "|fill", lambda: pg.FillBetweenItem(lo_item, hi_item))
            fill.setBrush(brush(color, 50))
            mid = tr.data.smoothed(name, 1, opts.smoothing) if opts.smoothing > 0 else v[:, 1]
            mx, my = envelope(x, mid, x0, x1, cols)
            item = canvas.get(f"{key}|mid", pg.PlotDataItem)
            item.setPen(pen(color, 255, dash))
            item.setData(x_transform(mx, opts.log_x), y_transform(my, opts.log_y, hidden), connect="finite")
    canvas.legend.line_entries(traces, [short_name(view, n) for n in names])
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
    bar = colour_bar(canvas, img)
    if np.isfinite(v).any():
        bar.setLevels((float(np.nanmin(v)), float(np.nanmax(v))))
    bar.axis.setLabel("log₁₀" if opts.log_y else "")
    x_lo, x_hi = float(x[0]), float(x[-1])
    width = (x_hi - x_lo) * len(x) / max(1, len(x) - 1) if len(x) > 1 else 1.0
    img.setRect(QtCore.QRectF(x_lo, -0.5, width, v.shape[1]))
    labels = view.get("options", {}).get("y_labels")
    if labels and len(labels) == v.shape[1]:
        step = max(1, len(labels) // 12)
        axis = canvas.plotItem.getAxis("left")
        shown = [(i, str(labels[i])) for i in range(0, len(labels), step)]
        axis.setTicks([shown])
        font = QtGui.QFontMetrics(axis.style["tickFont"] or axis.font())  # names are wider than numbers:
        axis.setWidth(max(font.horizontalAdvance(t) for _, t in shown) + axis.style["tickTextOffset"][0] + 12)
    return "" if len(traces) == 1 else f"showing {tr.label} only"


def colour_bar(canvas: PlotCanvas, img: pg.ImageItem) -> pg.ColorBarItem:
    """The heatmap's colour scale, beside it (made once per plot)."""
    bar = getattr(canvas, "colour_bar", None)
    if bar is None:
        bar = canvas.colour_bar = pg.ColorBarItem(colorMap=pg.colormap.get("viridis"), interactive=False, width=10)
        bar.setImageItem(img, insert_in=canvas.plotItem)
        canvas.apply_theme(canvas.theme)  # its axis takes the plot's colours
    return bar


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
        for name, col, legend in lines_of(view, tr.data) if view["kind"] == "line" else \
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
        if step in spike_steps(view, tr.data):
            spikes = view["options"]["spikes"]
            _, ratio = value_at(tr.data.steps(spikes), tr.data.values(spikes), step)
            parts.append(f"{prefix}loss spike ×{ratio:.2f} (click its marker to explain)")
    return f"step {step}: " + ", ".join(parts) if parts else ""
