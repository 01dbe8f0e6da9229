"""The plots in the middle of the window: one section per plugin (core first), the step cursor
shared by every plot, and repaints spread over event-loop passes so input is never starved."""
from __future__ import annotations

from PySide6 import QtCore, QtWidgets

from ..views import THEMES, Trace, ViewWidget
from ..views.options import STEP_KINDS

MIN_HEIGHT = 230
MIN_HEIGHTS = {"reliability": 320}  # two panels, each with a legend


class PlotArea(QtWidgets.QScrollArea):
    """A scrolling grid of view widgets with a linked step cursor (hover follows, click pins)."""

    cursor_moved = QtCore.Signal(object, bool)  # step (None: no cursor), pinned
    explain_requested = QtCore.Signal(object, int)  # (RunData, step), from any plot

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.inner = QtWidgets.QWidget()
        self.grid = QtWidgets.QVBoxLayout(self.inner)
        self.grid.setContentsMargins(6, 6, 6, 6)
        self.setWidget(self.inner)
        self.widgets: dict[tuple[str, str], ViewWidget] = {}
        self.headers: list[QtWidgets.QLabel] = []  # one per section
        self.layout_key = None
        self.columns = 2
        self.cursor: int | None = None
        self.cursor_pinned = False
        self.smoothing = 0.0
        self.theme = THEMES["light"]
        self._redraw_timer = QtCore.QTimer(self, singleShot=True, interval=15)
        self._redraw_timer.timeout.connect(self._queue_visible)
        self._redraw_queue: list[ViewWidget] = []
        self._redraw_step = QtCore.QTimer(self, singleShot=True, interval=0)
        self._redraw_step.timeout.connect(self._redraw_next)
        self.verticalScrollBar().valueChanged.connect(lambda _: self.redraw_soon())

    # -- layout -----------------------------------------------------------------------------------
    def show_runs(self, views: dict[str, list[dict]], titles: dict[str, str], traces: list[Trace]) -> None:
        """Lay out the views (a section per plugin) and hand every widget the runs to draw."""
        for w in self._rebuild(views, titles):
            w.hovered.connect(self.hover_cursor)
            w.clicked.connect(self.pin_cursor)
            w.explain_requested.connect(self.explain_requested)
            w.set_global_smoothing(self.smoothing)
            w.canvas.apply_theme(self.theme)
        for w in self.widgets.values():
            w.traces = traces
            w._drawn_key = None
        self.redraw_soon()

    def _rebuild(self, views: dict[str, list[dict]], titles: dict[str, str]) -> list[ViewWidget]:
        """One widget per (plugin, view title); keeps existing widgets. Returns new ones."""
        key = tuple((p, tuple(v["title"] for v in vs)) for p, vs in views.items())
        if key == self.layout_key:
            return []
        self.layout_key = key
        for w in self.widgets.values():  # out of the old sections before those are deleted
            w.setParent(None)
        while self.grid.count():
            item = self.grid.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        created, keep, self.headers = [], {}, []
        for plugin, vs in views.items():
            if not vs:
                continue
            header = QtWidgets.QLabel(f"<b>{titles.get(plugin, plugin)}</b>")
            header.setStyleSheet("font-size: 11pt; padding: 4px 0 2px 2px;")
            self.headers.append(header)
            self.grid.addWidget(header)
            section = QtWidgets.QWidget()
            g = QtWidgets.QGridLayout(section)
            g.setContentsMargins(0, 0, 0, 0)
            g.setSpacing(6)
            for i, v in enumerate(vs):
                k = (plugin, v["title"])
                w = self.widgets.get(k)
                if w is None:
                    w = ViewWidget(v)
                    w.setObjectName(f"view:{plugin}:{v['title']}")
                    created.append(w)
                keep[k] = w
                g.addWidget(w, i // self.columns, i % self.columns)
                w.setMinimumHeight(MIN_HEIGHTS.get(v["kind"], MIN_HEIGHT))
            self.grid.addWidget(section)
        self.grid.addStretch(1)
        for k, w in self.widgets.items():
            if k not in keep:
                w.deleteLater()
        self.widgets = keep
        return created

    # -- repainting -------------------------------------------------------------------------------
    def redraw_soon(self) -> None:
        self._redraw_timer.start()

    def _queue_visible(self) -> None:
        """Queue the widgets on screen for repainting (off-screen ones repaint when scrolled to)."""
        for w in self.widgets.values():
            if not (w.isVisible() and w.visibleRegion().isEmpty()) and w not in self._redraw_queue:
                self._redraw_queue.append(w)
        self._redraw_step.start()

    def _redraw_next(self) -> None:
        """Repaint one queued widget per event-loop pass, so input is never starved for a whole grid."""
        while self._redraw_queue:
            w = self._redraw_queue.pop(0)
            try:
                w.redraw()
            except RuntimeError:  # deleted by a layout change meanwhile
                continue
            break
        if self._redraw_queue:
            self._redraw_step.start()

    def stop(self) -> None:
        self._redraw_queue.clear()
        self._redraw_timer.stop()
        self._redraw_step.stop()

    # -- cursor -----------------------------------------------------------------------------------
    def hover_cursor(self, step: int) -> None:
        if not self.cursor_pinned:
            self._set_cursor(step)

    def pin_cursor(self, step: int) -> None:
        self.cursor_pinned = True
        self._set_cursor(step)
        self._ensure_step_visible(step)

    def release_cursor(self) -> None:
        self.cursor_pinned = False
        self._set_cursor(None)

    def _set_cursor(self, step: int | None) -> None:
        self.cursor = step
        for w in self.widgets.values():
            w.set_cursor(step)
        self.cursor_moved.emit(step, self.cursor_pinned)

    def _ensure_step_visible(self, step: int) -> None:
        for w in self.widgets.values():
            canvas = w.canvas
            if w.view["kind"] not in STEP_KINDS or not hasattr(canvas, "plotItem"):
                continue
            vb = canvas.plotItem.vb
            if vb.state["autoRange"][0] is False and w.opts.x_mode == "step" and not w.opts.log_x:
                x0, x1 = vb.viewRange()[0]
                if not x0 <= step <= x1:
                    half = (x1 - x0) / 2
                    vb.setXRange(step - half, step + half, padding=0)

    def show_series(self, series: str) -> ViewWidget | None:
        """Scroll to the first plot that draws ``series`` and flash its frame; None if none does."""
        for w in self.widgets.values():
            if series in w.view["series"] or series == w.view.get("options", {}).get("spikes"):
                self.ensureWidgetVisible(w, 0, 30)
                w.flash()
                return w
        return None

    # -- view settings ----------------------------------------------------------------------------
    def reset_zoom(self) -> None:
        for w in self.widgets.values():
            w.reset_zoom()

    def set_smoothing(self, weight: float) -> None:
        self.smoothing = weight
        for w in self.widgets.values():
            w.set_global_smoothing(weight)

    def apply_theme(self, theme: dict) -> None:
        self.theme = theme
        for w in self.widgets.values():
            w.apply_theme(theme)
