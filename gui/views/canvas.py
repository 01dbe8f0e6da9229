"""Drawing surfaces: a plot whose items painters fetch by key (so a live redraw reuses them), the
two-panel reliability plot, and a table."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from .axis import END_MARGIN, Axis
from .legend import Legend
from .style import THEMES

PLOT_MARGINS = (1, END_MARGIN, END_MARGIN, 1)  # room for the labels at the ends of the axes


class PlotCanvas(pg.PlotWidget):
    """A plot whose items are fetched by key, so painters can redraw without rebuilding."""

    def __init__(self, parent=None):
        super().__init__(parent, axisItems={"left": Axis("left"), "bottom": Axis("bottom")})
        self._items: dict[str, QtWidgets.QGraphicsItem] = {}
        self._touched: set[str] = set()
        self.plotItem.setMenuEnabled(False)
        self.plotItem.showGrid(x=True, y=True, alpha=0.15)
        self.plotItem.layout.setContentsMargins(*PLOT_MARGINS)
        self.legend = Legend(self.plotItem)
        self.cursor_line = pg.InfiniteLine(angle=90, movable=False)
        self.cursor_line.setZValue(100)
        self.cursor_line.setVisible(False)
        self.plotItem.addItem(self.cursor_line, ignoreBounds=True)
        self.empty = QtWidgets.QLabel(self)  # over the plot when the row at the cursor holds nothing
        self.empty.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.empty.setStyleSheet("color: gray; background: transparent;")
        self.empty.hide()
        self._empty_text: str | None = None
        self.theme = THEMES["light"]

    @property
    def legends(self) -> tuple[Legend, ...]:
        return (self.legend,)

    def begin(self) -> None:
        self._touched.clear()
        self._empty_text = None
        for legend in self.legends:
            legend.begin()

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

    def drawn(self, key: str):
        """The item drawn under ``key`` in the last paint, or None."""
        return self._items.get(key)

    def end(self) -> None:
        for key in [k for k in self._items if k not in self._touched]:
            item = self._items.pop(key)
            for plot in self.plots:  # removeItem ignores an item that is not in that plot
                plot.removeItem(item)
        for legend in self.legends:
            legend.end()
        self.empty.setText(self._empty_text or "")
        self.empty.setVisible(self._empty_text is not None)

    def say_empty(self, text: str) -> None:
        """This paint drew nothing, and ``text`` says why (e.g. the analysis found none there)."""
        self._empty_text = text

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if hasattr(self, "empty"):  # pyqtgraph resizes the view while it is being built
            self.empty.setGeometry(self.rect().adjusted(20, 20, -20, -20))

    def show_legends(self, on: bool | None) -> None:
        """Legends on, off, or (None) shown automatically where they fit."""
        for legend in self.legends:
            legend.show = on

    def columns(self) -> int:
        """Pixel columns of the data area: the resolution curves are reduced to."""
        return max(50, int(self.plotItem.vb.width()) or self.width())

    def x_window(self, lo: float, hi: float) -> tuple[float, float]:
        """The x interval on screen: the data's whole span while x auto-ranges, else the view."""
        vb = self.plotItem.vb
        if vb.state["autoRange"][0] is not False:
            return lo, hi
        return tuple(vb.viewRange()[0])

    def keep_y_readable(self, ys: list[np.ndarray], log_y: bool) -> None:
        """A y range never narrower than the values warrant: a learning rate stored as 0.3 and
        0.30000000000000004 would else get tick labels 17 digits long. A flat series gets ±5 %
        (0.1 decade on a log axis), any other at least 1e-4 of its size."""
        finite = [y[np.isfinite(y)] for y in ys if len(y)]
        finite = [y for y in finite if len(y)]
        if not finite:
            return
        lo, hi = min(float(y.min()) for y in finite), max(float(y.max()) for y in finite)
        size = max(abs(lo), abs(hi))
        flat = hi - lo <= 1e-9 * size
        floor = (0.2 if flat else None) if log_y else (0.1 * size if flat else 1e-4 * size) or None
        if self.plotItem.vb.state["limits"]["yRange"][0] != floor:
            self.plotItem.vb.setLimits(minYRange=floor)

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
        axes = [self.plotItem.getAxis(name) for name in ("left", "bottom")]
        if getattr(self, "colour_bar", None) is not None:
            axes.append(self.colour_bar.axis)
        for axis in axes:
            axis.setPen(pg.mkPen(theme["fg"]))
            axis.setTextPen(pg.mkPen(theme["fg"]))
        self.plotItem.titleLabel.setAttr("color", theme["fg"])
        self.cursor_line.setPen(pg.mkPen(theme["cursor"], width=1, style=QtCore.Qt.PenStyle.DashLine))
        for legend in self.legends:
            legend.apply_theme(theme)


class ReliabilityCanvas(PlotCanvas):
    """Two panels sharing x (Guo et al. 2017): the reliability plot (``plotItem``, 2/3 of the height)
    over a histogram of the samples per confidence bin (``share_plot``, 1/3)."""

    AXIS_WIDTH = 46  # both left axes equally wide, so the linked x axes line up

    def __init__(self, parent=None):
        super().__init__(parent)
        self.share_plot = pg.PlotItem(axisItems={"left": Axis("left"), "bottom": Axis("bottom")})
        self.share_plot.setMenuEnabled(False)
        self.share_plot.layout.setContentsMargins(*PLOT_MARGINS)
        self.share_plot.showGrid(x=True, y=True, alpha=0.15)
        self.share_plot.setXLink(self.plotItem)
        self.share_plot.vb.setMouseEnabled(x=True, y=False)  # y always fits the histogram
        # the means, top left over a short panel: confident models' bars stand at the right
        self.share_legend = Legend(self.share_plot, offset=(4, 4), min_entries=1, place=False, max_height=0.75)
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
        self.legend.item.setOffset((4, 4))  # top left: high-confidence bars reach the top right
        self.legend.place = False  # the bars are not curves: the emptiest-corner count would miss them

    @property
    def plots(self) -> tuple:
        return (self.plotItem, self.share_plot)

    @property
    def legends(self) -> tuple[Legend, ...]:
        return (self.legend, self.share_legend)

    def set_share_label(self, axis: str, text: str) -> None:
        if self.share_plot.getAxis(axis).labelText != text:
            self.share_plot.setLabel(axis, text)

    def apply_theme(self, theme: dict) -> None:
        super().apply_theme(theme)
        for name in ("left", "bottom"):
            axis = self.share_plot.getAxis(name)
            axis.setPen(pg.mkPen(theme["fg"]))
            axis.setTextPen(pg.mkPen(theme["fg"]))


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
