"""Legends: what a plot's entries are called and look like, how many columns they take, and where
the legend goes so that it hides no curve.

Painters declare the entries of each paint (``Legend.entry``); with several runs and several
lines a plot gets one entry per line (its colour) and one per run (its dash pattern) instead of
one per pair, so five metrics of two runs need seven entries, not ten. The legend takes as many
columns as fit the plot's width and goes to the corner that hides the fewest drawn points; when
every corner would hide some, the view gets headroom above the data and the legend sits there.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from pyqtgraph.graphicsItems.LegendItem import ItemSample
from PySide6 import QtCore, QtGui

from .style import DASHES, PALETTE, pen

CORNERS = ((-4, 4), (4, 4), (-4, -4), (4, -4))  # offsets: top right, top left, bottom right, bottom left
TOP_CORNERS = CORNERS[:2]
MAX_HEIGHT_SHARE = 0.45  # an automatic legend takes no more of the plot's height than this
MAX_WIDTH_SHARE = 0.96
GAP = 6  # pixels between the data and a legend placed in headroom


def short_name(view: dict, name: str) -> str:
    """A series' legend name: without its plugin prefix when every series of the view shares it."""
    prefixes = {n.split("/", 1)[0] for n in view["series"] if "/" in n}
    if len(prefixes) == 1 and all("/" in n for n in view["series"]) and len(view["series"]) > 1:
        return name.split("/", 1)[1]
    return name


def legend_label(view: dict, traces: list, t: int, name: str) -> str:
    """An entry for one run's series: the series' name for one run; with several, the run's label,
    plus the series' when the view has several."""
    if len(traces) == 1:
        return name
    if len(view["series"]) == 1 and "[" not in name:
        return traces[t].label
    return f"{traces[t].label}: {name}"


def line_style(traces: list, t: int, j: int, n_lines: int) -> tuple[str, QtCore.Qt.PenStyle]:
    """Colour and dash of line ``j`` of run ``t``: one run, or one line per run, tells them apart by
    colour; several runs with several lines each: colour per line, dash pattern per run."""
    if len(traces) == 1:
        return PALETTE[j % len(PALETTE)], DASHES[0]
    if n_lines == 1:
        return traces[t].color, DASHES[0]
    return PALETTE[j % len(PALETTE)], DASHES[t % len(DASHES)]


def line_sample(color: str, dash=DASHES[0]) -> pg.PlotDataItem:
    return pg.PlotDataItem(pen=pen(color, 255, dash))


class Sample(ItemSample):
    """A legend entry's sample, 12 × 12 px: pyqtgraph's 20 × 20 makes each row taller than its label.
    Clicking it does nothing (it stands for a style, not for one curve to hide)."""

    SIZE = (12, 12)

    def __init__(self, item):
        super().__init__(item)
        self.setFixedWidth(self.SIZE[0])
        self.setFixedHeight(self.SIZE[1])

    def boundingRect(self):
        return QtCore.QRectF(0, 0, *self.SIZE)

    def paint(self, p, *args):
        p.scale(self.SIZE[0] / 20, self.SIZE[1] / 20)
        super().paint(p, *args)

    def mouseClickEvent(self, event):
        event.ignore()


class Legend:
    """A legend in one plot panel, rebuilt from the entries declared during each paint."""

    def __init__(self, plot: pg.PlotItem, offset=(-4, 4), min_entries: int = 2, place: bool = True,
                 max_height: float = MAX_HEIGHT_SHARE):
        self.plot, self.min_entries, self.place, self.max_height = plot, min_entries, place, max_height
        self.item = pg.LegendItem(offset=offset, labelTextSize="8pt", verSpacing=-2, sampleType=Sample)
        self.item.setParentItem(plot.vb)
        self.item.setVisible(False)
        self.show: bool | None = None  # None: automatically, when there is room
        self.fg = "#303030"
        self._samples: dict[str, QtGui.QGraphicsItem] = {}
        self._wanted: list[tuple[str, str]] = []
        self._shown: list[str] = []
        self._fit_key, self._fits = None, False
        self.headroom: tuple[float, float] | None = None  # a point the view must show: room for the legend
        self.headroom_item = pg.PlotDataItem(pen=pg.mkPen(0, 0, 0, 0))  # that point, unseen, in the auto-range
        self.headroom_item.setVisible(False)
        self._headroom_drawn = None
        plot.addItem(self.headroom_item)

    def begin(self) -> None:
        self._wanted = []

    def entry(self, key: str, label: str, factory) -> None:
        """An entry of this paint: ``label`` beside a sample made by ``factory`` (kept under ``key``)."""
        if key not in self._samples:
            self._samples[key] = factory()
        self._wanted.append((key, label))

    def line_entries(self, traces: list, names: list[str]) -> None:
        """The entries of lines drawn with ``line_style``: one per line and, with several runs, one per run."""
        if len(traces) > 1 and len(names) == 1:
            for t, tr in enumerate(traces):
                self.entry(f"run|{tr.color}", tr.label, lambda c=tr.color: line_sample(c))
            return
        for j, name in enumerate(names):
            color = PALETTE[j % len(PALETTE)]
            self.entry(f"line|{color}", name, lambda c=color: line_sample(c))
        if len(traces) > 1:
            for t, tr in enumerate(traces):
                dash = DASHES[t % len(DASHES)]
                self.entry(f"dash|{t}|{self.fg}", tr.label, lambda d=dash: line_sample(self.fg, d))

    @property
    def labels(self) -> list[str]:
        return [label.text for _, label in self.item.items]

    def end(self) -> None:
        """Show this paint's entries, laid out as low as the plot's width allows, where they hide no data."""
        keys = [k for k, _ in self._wanted]
        if keys != self._shown:
            self.item.clear()
            for key, label in self._wanted:
                self.item.addItem(self._samples[key], label)
            for _, label in self.item.items:
                label.item.document().setDocumentMargin(0)  # a row as tall as its text
                label.setText(label.text)
            self.item.updateSize()
            self._shown = keys
        else:
            for (_, text), (_, label) in zip(self._wanted, self.item.items):
                if label.text != text:
                    label.setText(text)
        self._samples = {k: s for k, s in self._samples.items() if k in keys}
        n = len(keys)
        vb = self.plot.vb
        fit_key = (tuple(self.labels), round(vb.width()), round(vb.height()))
        if fit_key != self._fit_key:  # laying the legend out again costs more than the rest of a paint
            self._fit_key, self._fits = fit_key, self._fit_columns()
        fits = self._fits
        self.item.setVisible(n > 0 and (self.show or (self.show is None and n >= self.min_entries and fits)))
        self.headroom = None
        if self.item.isVisible() and self.place:
            self._place()
        self._show_headroom()

    def _show_headroom(self) -> None:
        """The unseen point that makes the auto-range leave room for the legend (hidden, it neither
        paints nor counts)."""
        if self.headroom != self._headroom_drawn:
            self._headroom_drawn = self.headroom
            if self.headroom is not None:
                self.headroom_item.setData([self.headroom[0]], [self.headroom[1]])
            self.headroom_item.setVisible(self.headroom is not None)

    def _fit_columns(self) -> bool:
        """The columns that make the legend lowest within the plot's width (fewer on a tie: a low
        legend hides the fewest points); returns whether it fits the plot."""
        vb = self.plot.vb
        width, height = MAX_WIDTH_SHARE * max(vb.width(), 1.0), self.max_height * max(vb.height(), 1.0)
        best = (float("inf"), 1)
        for columns in range(1, max(1, len(self.item.items)) + 1):
            self.item.setColumnCount(columns)
            size = self.item.boundingRect()
            if size.width() > width:
                break
            best = min(best, (size.height(), columns))
        self.item.setColumnCount(best[1])
        return best[0] <= height

    def _place(self) -> None:
        """The corner hiding the fewest drawn points (top right first); if every corner hides some
        and the view fits its data, headroom above the data for a top corner."""
        vb = self.plot.vb
        points = _drawn_points(self.plot, skip=self.headroom_item)
        if not len(points):
            return
        auto_y = vb.state["autoRange"][1] is not False
        (x0, x1), (y0, y1) = vb.viewRange()
        if auto_y:  # judge against the data, not a view that headroom already stretched
            y0, y1 = float(points[:, 1].min()), float(points[:, 1].max())
        if vb.state["autoRange"][0] is not False:
            x0, x1 = float(points[:, 0].min()), float(points[:, 0].max())
        size = self.item.boundingRect()
        w, h = size.width() / max(vb.width(), 1.0), (size.height() + GAP) / max(vb.height(), 1.0)
        fx = (points[:, 0] - x0) / ((x1 - x0) or 1.0)
        fy = (points[:, 1] - y0) / ((y1 - y0) or 1.0)
        inside = (fx >= 0) & (fx <= 1) & (fy >= 0) & (fy <= 1)

        def hidden(offset) -> int:
            xs = fx >= 1 - w if offset[0] < 0 else fx <= w
            ys = fy >= 1 - h if offset[1] > 0 else fy <= h  # a positive y offset hangs from the top
            return int(np.count_nonzero(xs & ys & inside))

        best = min(CORNERS, key=hidden)
        if hidden(best) and auto_y and h < 1:
            best = min(TOP_CORNERS, key=hidden)
            self.headroom = ((x0 + x1) / 2, y0 + (y1 - y0) / (1 - h))
        if tuple(self.item.opts["offset"]) != best:
            self.item.setOffset(best)

    def apply_theme(self, theme: dict) -> None:
        """Colours for entries already drawn, too (pyqtgraph applies a text colour to new ones only)."""
        self.fg = theme["fg"]
        self.item.setLabelTextColor(theme["fg"])
        for _, label in self.item.items:
            label.setText(label.text, color=theme["fg"])
        bg = QtGui.QColor(theme["bg"])
        bg.setAlpha(190)
        self.item.setBrush(pg.mkBrush(bg))


def _drawn_points(plot: pg.PlotItem, skip) -> np.ndarray:
    """Every finite (x, y) drawn by the plot's data items but ``skip``, as an (n, 2) array (steps
    of a histogram at their middles)."""
    parts = []
    for item in plot.listDataItems():
        if item is skip:
            continue
        x, y = item.getData()
        if x is None or y is None or not len(x):
            continue
        x, y = np.asarray(x, float), np.asarray(y, float)
        if len(x) == len(y) + 1:
            x = (x[:-1] + x[1:]) / 2
        if len(x) == len(y):
            parts.append(np.column_stack([x, y]))
    if not parts:
        return np.zeros((0, 2))
    points = np.concatenate(parts)
    return points[np.isfinite(points).all(axis=1)]
