"""A view's data as CSV, a widget as PNG/SVG bytes, and a view drawn offscreen for reports."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from ..rundata import RunData
from .axis import drawn_ticks
from .canvas import PlotCanvas, make_canvas
from .options import ROW_KINDS, STEP_KINDS, PlotOptions, Trace, effective
from .paint import paint
from .rows import row_traces
from .style import PALETTE, THEMES


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
        for t, j, name, step, row in row_traces(view, traces, cursor):
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
        gen.setResolution(widget.logicalDpiX())  # else text is drawn at 72 dpi, smaller than laid out
        with export_mode(widget):
            QtWidgets.QWidget.render(widget, gen)  # QGraphicsView overrides render(); want the widget one
        return bytes(buf.data())
    raise ValueError(f"fmt: got {fmt!r}, expected 'png' or 'svg'")


def graphics_items(widget: QtWidgets.QWidget) -> list:
    """Everything the plots in ``widget`` (itself one, or holding some) draw; a table: nothing."""
    views = [widget] if isinstance(widget, QtWidgets.QGraphicsView) else []
    views += widget.findChildren(QtWidgets.QGraphicsView)
    return [item for view in views if view.scene() is not None for item in view.scene().items()]


@contextlib.contextmanager
def export_mode(widget: QtWidgets.QWidget):
    """Every item drawn as pyqtgraph's exporters draw it (symbols as shapes, curves antialiased)
    while a picture is taken: drawn from its pixmap atlas, an SVG would embed the whole atlas for
    each scatter point, every point showing all the colours of the plot."""
    items = [i for i in graphics_items(widget) if hasattr(i, "setExportMode")]
    for item in items:
        item.setExportMode(True, {"antialias": True})
    try:
        yield
    finally:
        for item in items:
            item.setExportMode(False)


def settle_axes(canvas) -> None:
    """Let every axis take the room its labels need before a picture is taken: pyqtgraph widens an
    axis only while drawing it, so a single offscreen paint would leave labels out."""
    if not isinstance(canvas, PlotCanvas):
        return
    axes = [plot.getAxis(name) for plot in canvas.plots for name in ("left", "bottom")]
    for _ in range(4):
        before = [axis.geometry() for axis in axes]
        for axis in axes:
            drawn_ticks(axis)
        QtWidgets.QApplication.processEvents()
        if [axis.geometry() for axis in axes] == before:
            return


def ensure_app() -> QtWidgets.QApplication:
    """The running QApplication, or a new one (offscreen when there is no display)."""
    app = QtWidgets.QApplication.instance()
    if app is None:
        if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
            os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        app = QtWidgets.QApplication([])
    return app


@contextlib.contextmanager
def rendered_view(view: dict, run, step: int | None = None, width: int = 720, height: int = 360,
                  smoothing: float = 0.0, theme: str = "light"):
    """One declared view of a run (a RunReader, or a RunData) drawn offscreen, title above: yields
    (frame, canvas) ready to be pictured. ``step`` marks the cursor (row views show the row there;
    None: the latest row). Uses the same painters as the live ``ViewWidget``."""
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
    settle_axes(canvas)
    try:
        yield frame, canvas
    finally:
        frame.close()
        frame.deleteLater()


def render_view_image(view: dict, run, step: int | None = None, width: int = 720, height: int = 360,
                      fmt: str = "png", smoothing: float = 0.0, *, theme: str = "light") -> bytes:
    """One declared view of a run drawn offscreen as PNG or SVG bytes (see ``rendered_view``)."""
    if fmt not in ("png", "svg"):
        raise ValueError(f"fmt: got {fmt!r}, expected 'png' or 'svg'")
    with rendered_view(view, run, step, width, height, smoothing, theme) as (frame, _):
        return widget_image(frame, fmt)
