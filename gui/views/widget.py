"""``ViewWidget``: one declared view, live in the window."""
from __future__ import annotations

from dataclasses import replace

from PySide6 import QtCore, QtGui, QtWidgets

from .canvas import PlotCanvas, make_canvas
from .export import view_csv, widget_image
from .options import STEP_KINDS, PlotOptions, Trace, effective
from .paint import paint
from .steps import SPIKE_KEY, cursor_values, place_cursor

SMOOTHING_CHOICES = (("Follow window slider", None), ("Off", 0.0), ("0.6", 0.6), ("0.8", 0.8), ("0.9", 0.9),
                     ("0.95", 0.95), ("0.99", 0.99))


class ElidedLabel(QtWidgets.QLabel):
    """One line of plain text cut with "…" to the width it gets, whole in its tooltip."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._full = ""
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
        self.setTextFormat(QtCore.Qt.TextFormat.PlainText)

    def setText(self, text: str) -> None:
        self._full = text
        self.setToolTip(text)
        self._elide()

    def text(self) -> str:
        """The whole text, not the part on screen."""
        return self._full

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        shown = self.fontMetrics().elidedText(self._full, QtCore.Qt.TextElideMode.ElideRight, max(self.width(), 1))
        super().setText(shown)


class ViewWidget(QtWidgets.QFrame):
    """One declared view, live: header (title with the view's help as tooltip, values at the cursor,
    a menu with smoothing, log axes, x mode and export), and the canvas below."""

    hovered = QtCore.Signal(int)  # a step under the mouse
    clicked = QtCore.Signal(int)  # a step clicked (pins the shared cursor)
    explain_requested = QtCore.Signal(object, int)  # (the run's RunData, step): a spike marker clicked, or asked

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
        self.values = ElidedLabel()  # what the plot shows at the cursor, or a note on what it shows
        self.values.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.values.setStyleSheet("color: palette(placeholder-text); font-size: 8pt;")
        self.menu_button = QtWidgets.QToolButton(text="⋯")
        self.menu_button.setAutoRaise(True)
        self.menu_button.setToolTip("Smoothing, log axes, x axis, export")
        self.menu_button.setPopupMode(QtWidgets.QToolButton.ToolButtonPopupMode.InstantPopup)
        self.menu_button.setMenu(self._build_menu())
        head = QtWidgets.QHBoxLayout()
        head.setContentsMargins(6, 2, 2, 0)
        head.setSpacing(10)  # the note never runs into the title
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
            self.legend_action.setToolTip("Shown automatically when there are two entries or more and "
                                          "they fit; ticked while shown")
            self.legend_action.toggled.connect(self._toggle_legend)
        if step_kind:
            self.wall_action = menu.addAction("x axis: wall time")
            self.wall_action.setCheckable(True)
            self.wall_action.toggled.connect(lambda on: self.set_options(x_mode="wall_time" if on else "step"))
            menu.addAction("Reset zoom", self.reset_zoom)
            self.explain_action = menu.addAction("Explain the cursor step", self._explain_cursor)
            self.explain_action.setToolTip("What every analysis of the run knows about the step under the cursor")
            menu.aboutToShow.connect(lambda: self.explain_action.setEnabled(self.cursor is not None and
                                                                            bool(self.traces)))
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
        self.canvas.show_legends(on)
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
        if hasattr(self, "legend_action"):  # the menu says what the plot shows
            self.legend_action.blockSignals(True)
            self.legend_action.setChecked(self.canvas.legend.item.isVisible())
            self.legend_action.blockSignals(False)

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

    def spike_at(self, scene_pos) -> tuple[int, int] | None:
        """(run index, step) of the spike marker under ``scene_pos``, if any."""
        for t in range(len(self.traces)):
            item = self.canvas.drawn(f"{t}|{SPIKE_KEY}")
            if item is not None and item.isVisible():
                hit = item.pointsAt(item.mapFromScene(scene_pos))
                if len(hit):
                    return t, int(hit[0].data())
        return None

    def _on_mouse_clicked(self, event) -> None:
        if event.double():
            return
        step = self._step_at(event.scenePos())
        if event.button() == QtCore.Qt.MouseButton.RightButton and step is not None:
            self._step_menu(step, event.screenPos())
        elif event.button() == QtCore.Qt.MouseButton.LeftButton:
            spike = self.spike_at(event.scenePos())
            if spike is not None:
                self.clicked.emit(spike[1])
                self.explain_requested.emit(self.traces[spike[0]].data, spike[1])
            elif step is not None:
                self.clicked.emit(step)

    def _step_menu(self, step: int, screen_pos) -> None:
        """Right-click on a step plot: explain or pin that step."""
        menu = QtWidgets.QMenu(self)
        for tr in self.traces:
            of = f" of {tr.label}" if len(self.traces) > 1 else ""
            menu.addAction(f"Explain step {step:,}{of}", lambda d=tr.data: self.explain_requested.emit(d, step))
        menu.addAction(f"Pin the cursor at step {step:,}", lambda: self.clicked.emit(step))
        menu.popup(QtCore.QPoint(int(screen_pos.x()), int(screen_pos.y())))

    def _explain_cursor(self) -> None:
        if self.cursor is not None and self.traces:
            self.explain_requested.emit(self.traces[0].data, self.cursor)

    def flash(self, ms: int = 1200) -> None:
        """Outline the plot for a moment: the one a link in the Explain panel points at."""
        self.setStyleSheet("#ViewWidget { border: 2px solid palette(highlight); }")
        QtCore.QTimer.singleShot(ms, self, lambda: self.setStyleSheet(""))

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
