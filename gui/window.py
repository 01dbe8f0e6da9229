"""The main window: run setup on the left, live plots in the middle, runs and findings on the right.

The GUI thread only lays out and paints. Training runs in the engine process (``EngineProcess``);
run files are read by ``RunPoller`` (a worker thread); findings are computed by tasks on a pool.
"""
from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from engine.config import RunConfig
from engine.errors import ConfigError, RunFileError
from engine.store import check_target, latest_checkpoint

from . import theme as theme_mod
from .config_form import DEFAULT_CONFIG, ConfigForm, load_plugin_classes
from .rundata import RunData
from .tasks import RunPoller, TaskRunner
from .views import PALETTE, THEMES, Trace, ViewWidget

FINAL = ("finished", "stopped", "failed", "diverged", "crashed")
ACTIVE = ("starting", "running", "paused")
CONTINUABLE = ("stopped", "crashed")  # a failed or diverged run would only fail again
STATE_COLORS = {"idle": "#808080", "starting": "#3d7bd9", "running": "#2e9e44", "paused": "#d9a400",
                "finished": "#3d7bd9", "stopped": "#808080", "diverged": "#d9534f", "failed": "#d9534f",
                "crashed": "#d9534f"}
SEVERITY_COLORS = {"ok": "#2e9e44", "info": "#3d7bd9", "warning": "#d9a400", "problem": "#d9534f"}
MAX_RECENT = 10


@dataclass
class RunEntry:
    run_id: str
    path: Path
    data: RunData
    color: str
    item: QtWidgets.QListWidgetItem


def compute_findings(state, path: str) -> list[dict]:
    """Each plugin's findings for a run file (a task): plugins not installed here are skipped."""
    from engine.plugin import load_plugin_class
    from engine.store import open_run
    out = []
    with open_run(path) as run:
        for name in sorted(run.views()):
            if name == "core" or state.is_interruption_requested():
                continue
            try:
                cls = load_plugin_class(name)
            except ConfigError:
                continue  # not installed here: nothing to judge with
            except Exception as exc:  # a broken plugin must not hide the others' findings
                out.append({"plugin": name, "severity": "info", "message": f"could not load: {exc}", "step": None})
                continue
            try:
                found = cls.findings(run)
            except Exception as exc:
                out.append({"plugin": name, "severity": "info", "message": f"findings failed: {exc}", "step": None})
                continue
            out.extend({"plugin": f.plugin, "severity": f.severity, "message": f.message, "step": f.step,
                        "value": f.value, "unit": f.unit} for f in found)
    return out


class PlotArea(QtWidgets.QScrollArea):
    """A scrolling grid of view widgets, one section per plugin (core first)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.inner = QtWidgets.QWidget()
        self.grid = QtWidgets.QVBoxLayout(self.inner)
        self.grid.setContentsMargins(6, 6, 6, 6)
        self.setWidget(self.inner)
        self.widgets: dict[tuple[str, str], ViewWidget] = {}
        self.layout_key = None
        self.columns = 2

    def rebuild(self, views: dict[str, list[dict]], titles: dict[str, str]) -> list[ViewWidget]:
        """Lay out one widget per (plugin, view title); keeps existing widgets. Returns new ones."""
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
        created, keep = [], {}
        for plugin, vs in views.items():
            if not vs:
                continue
            header = QtWidgets.QLabel(f"<b>{titles.get(plugin, plugin)}</b>")
            header.setStyleSheet("font-size: 11pt; padding: 4px 0 2px 2px;")
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
                w.setMinimumHeight(230)
            self.grid.addWidget(section)
        self.grid.addStretch(1)
        for k, w in self.widgets.items():
            if k not in keep:
                w.deleteLater()
        self.widgets = keep
        return created


class MainWindow(QtWidgets.QMainWindow):
    """TrainDx's desktop window."""

    state_changed = QtCore.Signal(str)
    findings_ready = QtCore.Signal(str)  # run id

    def __init__(self, settings: QtCore.QSettings | None = None, runs_dir: str | Path | None = None):
        super().__init__()
        self.settings = settings or QtCore.QSettings()
        self.runs_dir = Path(runs_dir or self.settings.value("runs_dir", str(Path.cwd() / "runs")))
        self.setWindowTitle("TrainDx")
        self.setAcceptDrops(True)
        self.tasks = TaskRunner(self)
        self.poller = RunPoller(self)
        self.poller.rows.connect(self._on_rows)
        self.poller.meta.connect(self._on_meta)
        self.poller.failed.connect(self._on_poll_failed)
        self.poller.start()
        self.runs: dict[str, RunEntry] = {}
        self.findings: dict[str, list[dict]] = {}
        self.engine = None
        self.live_run_id: str | None = None
        self.resuming: Path | None = None  # a continued run's file, until its engine has it open
        self.state = "idle"
        self.cursor: int | None = None
        self.cursor_pinned = False
        self.global_smoothing = 0.0
        self.theme_mode = str(self.settings.value("theme", "system"))
        self.theme_name = "light"
        self.confirm_close = True  # ask before closing while training (tests turn it off)

        self.form = ConfigForm()
        self.plots = PlotArea()
        self.banner = QtWidgets.QLabel()
        self.banner.setWordWrap(True)
        self.banner.setObjectName("banner")
        self.banner.setTextFormat(QtCore.Qt.TextFormat.RichText)
        self.banner.linkActivated.connect(self._on_banner_link)
        self.banner.hide()
        self.placeholder = QtWidgets.QLabel(
            "Set up a run on the left and press <b>Start</b> (Ctrl+R),<br>or open a run file (Ctrl+O) — "
            "dropping one here works too.")
        self.placeholder.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setStyleSheet("color: palette(placeholder-text); font-size: 12pt;")
        center = QtWidgets.QWidget()
        cl = QtWidgets.QVBoxLayout(center)
        cl.setContentsMargins(0, 0, 0, 0)
        cl.addWidget(self.banner)
        cl.addWidget(self.placeholder, 1)
        cl.addWidget(self.plots, 10)
        self.plots.hide()
        self.setCentralWidget(center)
        self._build_actions()
        self._build_setup_dock()
        self._build_runs_dock()
        self._build_toolbar()
        self._build_menus()
        self._build_statusbar()

        self._engine_timer = QtCore.QTimer(self, interval=100)
        self._engine_timer.timeout.connect(self._poll_engine)
        self._findings_timer = QtCore.QTimer(self, interval=15_000)  # live runs: findings so far
        self._findings_timer.timeout.connect(
            lambda: self._request_findings(self.live_run_id) if self.state == "running" else None)
        self._redraw_timer = QtCore.QTimer(self, singleShot=True, interval=15)
        self._redraw_timer.timeout.connect(self._redraw_visible)
        self._redraw_queue: list[ViewWidget] = []
        self._redraw_step = QtCore.QTimer(self, singleShot=True, interval=0)
        self._redraw_step.timeout.connect(self._redraw_next)
        self.plots.verticalScrollBar().valueChanged.connect(lambda _: self._redraw_timer.start())
        self.form.validity_changed.connect(lambda ok: self._update_actions())
        QtWidgets.QApplication.instance().styleHints().colorSchemeChanged.connect(
            lambda _: self.apply_theme(self.theme_mode))
        self.apply_theme(self.theme_mode)
        self._restore_window()
        self.form.load_toml(DEFAULT_CONFIG)
        self.tasks.start(load_plugin_classes, on_done=self._on_plugins_loaded,
                         on_exception=lambda e: self.form.set_plugins({}, {"plugins": str(e)}))
        self._set_state("idle")

    # =============================================================================================
    # Building
    # =============================================================================================
    def _action(self, text: str, slot, shortcut=None, tip: str = "", icon=None) -> QtGui.QAction:
        a = QtGui.QAction(text, self)
        if icon is not None:
            a.setIcon(self.style().standardIcon(icon))
        if shortcut:
            a.setShortcut(QtGui.QKeySequence(shortcut))
            tip = f"{tip} ({QtGui.QKeySequence(shortcut).toString(QtGui.QKeySequence.SequenceFormat.NativeText)})"
        a.setToolTip(tip.strip())
        a.setStatusTip(tip.strip())
        a.triggered.connect(slot)
        return a

    def _build_actions(self) -> None:
        sp = QtWidgets.QStyle.StandardPixmap
        self.act_start = self._action("Start", self.start_run, "Ctrl+R", "Start training the run set up on the left",
                                      sp.SP_MediaPlay)
        self.act_continue = self._action("Continue run", self.continue_run, "Ctrl+Shift+R",
                                         "Train the selected stopped or crashed run on from its last "
                                         "checkpoint, into the same file", sp.SP_MediaSeekForward)
        self.act_pause = self._action("Pause", self.toggle_pause, "Ctrl+P", "Pause or resume training",
                                      sp.SP_MediaPause)
        self.act_stop = self._action("Stop", self.stop_run, "Ctrl+.", "Stop training (evaluates and checkpoints first)",
                                     sp.SP_MediaStop)
        self.act_ckpt = self._action("Checkpoint now", self.checkpoint_now, "Ctrl+K",
                                     "Save a checkpoint after the current step", sp.SP_DialogSaveButton)
        self.act_open = self._action("Open run…", self.open_run_dialog, "Ctrl+O", "Open a run file (.h5)",
                                     sp.SP_DialogOpenButton)
        self.act_load = self._action("Load config…", self.load_config_dialog, "Ctrl+L", "Load a run config (.toml)")
        self.act_save = self._action("Save config…", self.save_config_dialog, "Ctrl+S", "Save the form as a TOML file")
        self.act_default = self._action("Default config", lambda: self.load_config(DEFAULT_CONFIG), None,
                                        "Reset the form to the bundled digits example")
        self.act_export = self._action("Export report…", self.export_report_dialog, "Ctrl+E",
                                       "Write the shown run's analysis report as one HTML or PDF file",
                                       sp.SP_FileDialogDetailedView)
        self.act_reopen = self._action("Reopen run file", self.reopen_live_run, None,
                                       "Read the run file again from disk (e.g. after a crash)")
        self.act_unpin = self._action("Release cursor", self.release_cursor, "Esc",
                                      "Let the step cursor follow the mouse again")
        self.act_zoom = self._action("Reset zoom", self.reset_zoom, "Ctrl+0", "Show all data in every plot")
        self.act_quit = self._action("Quit", self.close, "Ctrl+Q", "Close TrainDx")
        self.act_fullscreen = self._action("Full screen", self._toggle_full_screen, "F11", "Toggle full screen")

    def _add_dock(self, title: str, name: str, area,
                  min_width: int) -> tuple[QtWidgets.QDockWidget, QtWidgets.QVBoxLayout]:
        """A dock on one side of the window, with an empty vertical layout to fill."""
        dock = QtWidgets.QDockWidget(title, self)
        dock.setObjectName(name)
        w = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(w)
        lay.setContentsMargins(2, 2, 2, 2)
        dock.setWidget(w)
        dock.setMinimumWidth(min_width)
        self.addDockWidget(area, dock)
        return dock, lay

    def _build_setup_dock(self) -> None:
        dock, lay = self._add_dock("Run setup", "setup_dock", QtCore.Qt.DockWidgetArea.LeftDockWidgetArea, 330)
        row = QtWidgets.QHBoxLayout()
        for act in (self.act_load, self.act_save):
            b = QtWidgets.QToolButton()
            b.setDefaultAction(act)
            row.addWidget(b)
        self.recent_configs_button = QtWidgets.QToolButton(text="Recent")
        self.recent_configs_button.setToolTip("Configs loaded or saved recently")
        self.recent_configs_button.setPopupMode(QtWidgets.QToolButton.ToolButtonPopupMode.InstantPopup)
        self.recent_configs_menu = QtWidgets.QMenu(self)
        self.recent_configs_button.setMenu(self.recent_configs_menu)
        row.addWidget(self.recent_configs_button)
        b = QtWidgets.QToolButton()
        b.setDefaultAction(self.act_default)
        row.addWidget(b)
        row.addStretch(1)
        lay.addLayout(row)
        self.source_label = QtWidgets.QLabel()
        self.source_label.setStyleSheet("color: palette(placeholder-text); font-size: 8pt;")
        lay.addWidget(self.source_label)
        scroll = QtWidgets.QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.form)
        scroll.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        lay.addWidget(scroll, 1)
        self.start_button = QtWidgets.QPushButton("Start")
        self.start_button.setIcon(self.act_start.icon())
        self.start_button.setToolTip(self.act_start.toolTip())
        self.start_button.clicked.connect(self.start_run)
        self.start_button.setMinimumHeight(30)
        lay.addWidget(self.start_button)
        self.setup_dock = dock

    def _build_runs_dock(self) -> None:
        dock, lay = self._add_dock("Runs", "runs_dock", QtCore.Qt.DockWidgetArea.RightDockWidgetArea, 300)
        self.run_list = QtWidgets.QListWidget()
        self.run_list.setToolTip("Open runs: tick several to overlay them in the same plots")
        self.run_list.itemChanged.connect(lambda _: self._traces_changed())
        self.run_list.itemSelectionChanged.connect(self._update_actions)  # Continue follows the selection
        self.run_list.setMaximumHeight(100)
        self.run_list.setTextElideMode(QtCore.Qt.TextElideMode.ElideMiddle)
        self.run_list.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        lay.addWidget(QtWidgets.QLabel("<b>Open runs</b> (tick to overlay)"))
        lay.addWidget(self.run_list)
        row = QtWidgets.QHBoxLayout()
        b = QtWidgets.QToolButton()
        b.setDefaultAction(self.act_open)
        b.setToolButtonStyle(QtCore.Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        row.addWidget(b)
        close = QtWidgets.QToolButton(text="Close run")
        close.setToolTip("Remove the selected run from the window (the file stays)")
        close.clicked.connect(self.close_selected_run)
        row.addWidget(close)
        row.addStretch(1)
        lay.addLayout(row)
        lay.addWidget(QtWidgets.QLabel("<b>Recent runs</b> (double-click to open)"))
        self.recent_runs = QtWidgets.QListWidget()
        self.recent_runs.setMaximumHeight(110)
        self.recent_runs.itemActivated.connect(lambda it: self.open_run(it.data(QtCore.Qt.ItemDataRole.UserRole)))
        lay.addWidget(self.recent_runs)
        tabs = QtWidgets.QTabWidget()
        self.findings_list = QtWidgets.QListWidget()
        self.findings_list.setWordWrap(True)
        self.findings_list.setResizeMode(QtWidgets.QListView.ResizeMode.Adjust)
        self.findings_list.setSpacing(2)
        self.findings_list.setToolTip("What each analysis concluded; click one to jump to its step")
        self.findings_list.itemClicked.connect(self._on_finding_clicked)
        tabs.addTab(self.findings_list, "Findings")
        self.events_tree = QtWidgets.QTreeWidget()
        self.events_tree.setHeaderLabels(["step", "event", "message"])
        self.events_tree.setRootIsDecorated(False)
        self.events_tree.itemClicked.connect(
            lambda it, _c: self.pin_cursor(int(it.text(0))) if it.text(0).isdigit() else None)
        tabs.addTab(self.events_tree, "Events")
        self.log_view = QtWidgets.QPlainTextEdit(readOnly=True)
        self.log_view.setMaximumBlockCount(2000)
        tabs.addTab(self.log_view, "Engine log")
        self.side_tabs = tabs
        lay.addWidget(tabs, 1)
        self.runs_dock = dock
        self._refresh_recent_runs()

    def _build_toolbar(self) -> None:
        tb = self.addToolBar("Run control")
        tb.setObjectName("run_toolbar")
        tb.setToolButtonStyle(QtCore.Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for a in (self.act_start, self.act_continue, self.act_pause, self.act_stop, self.act_ckpt, self.act_export):
            tb.addAction(a)
        tb.addSeparator()
        self.state_label = QtWidgets.QLabel()
        self.state_label.setObjectName("state")
        self.state_label.setMinimumWidth(90)
        self.state_label.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        tb.addWidget(self.state_label)
        self.progress = QtWidgets.QProgressBar()
        self.progress.setMaximumWidth(260)
        self.progress.setMinimumWidth(140)
        self.progress.setFormat("no run")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        tb.addWidget(self.progress)
        self.rate_label = QtWidgets.QLabel()
        self.rate_label.setMinimumWidth(170)
        tb.addWidget(self.rate_label)
        tb.addSeparator()
        tb.addWidget(QtWidgets.QLabel(" Smoothing "))
        self.smoothing_slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.smoothing_slider.setRange(0, 99)
        self.smoothing_slider.setMaximumWidth(130)
        self.smoothing_slider.setToolTip("Debiased EMA weight for all line plots (TensorBoard's smoothing); "
                                         "the raw curve stays faint underneath")
        self.smoothing_value = QtWidgets.QLabel("0.00")
        self.smoothing_slider.valueChanged.connect(self._on_smoothing)
        tb.addWidget(self.smoothing_slider)
        tb.addWidget(self.smoothing_value)
        self.run_toolbar = tb

    def _build_menus(self) -> None:
        m = self.menuBar().addMenu("&File")
        m.addAction(self.act_open)
        self.recent_runs_menu = m.addMenu("Recent runs")
        m.addAction(self.act_export)
        m.addSeparator()
        for a in (self.act_load, self.act_save, self.act_default):
            m.addAction(a)
        self.recent_configs_file_menu = m.addMenu("Recent configs")
        m.addSeparator()
        m.addAction(self.act_quit)
        r = self.menuBar().addMenu("&Run")
        for a in (self.act_start, self.act_continue, self.act_pause, self.act_stop, self.act_ckpt, self.act_reopen):
            r.addAction(a)
        v = self.menuBar().addMenu("&View")
        v.addAction(self.act_zoom)
        v.addAction(self.act_unpin)
        v.addAction(self.act_fullscreen)
        tm = v.addMenu("Theme")
        group = QtGui.QActionGroup(tm)
        for mode in theme_mod.MODES:
            a = tm.addAction(mode.capitalize() if mode != "system" else "Follow system")
            a.setCheckable(True)
            a.setChecked(mode == self.theme_mode)
            a.triggered.connect(lambda _=False, md=mode: self.apply_theme(md))
            group.addAction(a)
        v.addSeparator()
        v.addAction(self.setup_dock.toggleViewAction())
        v.addAction(self.runs_dock.toggleViewAction())
        h = self.menuBar().addMenu("&Help")
        h.addAction("About TrainDx", self._about)
        self._refresh_recent_menus()

    def _build_statusbar(self) -> None:
        self.cursor_label = QtWidgets.QLabel()
        self.statusBar().addPermanentWidget(self.cursor_label)

    # =============================================================================================
    # Config
    # =============================================================================================
    def _on_plugins_loaded(self, result) -> None:
        classes, failures = result
        raw = getattr(self.form, "_pending_raw", None)
        self.form.set_plugins(classes, failures)
        if raw is not None:
            default = self.form.source_path is not None and self.form.source_path.resolve() == DEFAULT_CONFIG
            self.form.set_raw(raw, enable_all_plugins=default)
        self.plugins_loaded = True

    def load_config(self, path: str | Path) -> bool:
        path = Path(path)
        try:
            self.form.load_toml(path)
        except (OSError, ValueError) as exc:
            QtWidgets.QMessageBox.warning(self, "Cannot load config", f"{path}: {exc}")
            return False
        self.source_label.setText(f"from {path}")
        self._add_recent("recent_configs", path)
        return True

    def load_config_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Load run config", str(self._last_dir()),
                                                        "Run config (*.toml)")
        if path:
            self.load_config(path)

    def save_config(self, path: str | Path) -> bool:
        try:
            text = self.form.to_toml()
        except ConfigError as exc:
            QtWidgets.QMessageBox.warning(self, "Cannot save config", str(exc))
            return False
        Path(path).write_text(text + "\n")
        self._add_recent("recent_configs", path)
        self.statusBar().showMessage(f"saved {path}", 4000)
        return True

    def save_config_dialog(self) -> None:
        name = (self.form.editors["run.name"].get() or "run") + ".toml"
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save run config", str(self._last_dir() / name),
                                                        "Run config (*.toml)")
        if path:
            self.save_config(path)

    def _last_dir(self) -> Path:
        return Path(self.settings.value("last_dir", str(Path.cwd())))

    # =============================================================================================
    # Run control
    # =============================================================================================
    def start_run(self) -> bool:
        if self.state in ACTIVE:
            return False
        config = self.form.validate()
        if config is None:
            self.statusBar().showMessage("fix the settings marked in red first", 5000)
            self.setup_dock.show()
            return False
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = self.runs_dir / f"{config.sections['run']['name']}-{stamp}.h5"
        n = 1
        while out.exists():
            out = out.with_name(f"{config.sections['run']['name']}-{stamp}-{n}.h5")
            n += 1
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self._launch(config, out)
        return True

    def continue_target(self) -> RunEntry | None:
        """The target run, if it stopped or crashed and has a checkpoint to continue from."""
        if self.state in ACTIVE:
            return None
        entry = self.target_run()
        if entry is None or entry.data.status not in CONTINUABLE or latest_checkpoint(entry.path) is None:
            return None
        return entry

    def continue_run(self) -> bool:
        """Train a stopped or crashed run on from its last checkpoint, into its own file; the
        engine drops what was written after that checkpoint, so the run is shown afresh."""
        entry = self.continue_target()
        if entry is None:
            return False
        try:
            config = RunConfig.from_dict(entry.data.config)
            check_target(entry.path, resume=True)  # refused if another process writes it
        except (ConfigError, RunFileError) as exc:
            QtWidgets.QMessageBox.warning(self, "Cannot continue run", str(exc) if isinstance(exc, RunFileError)
                                          else f"{entry.path}: {exc}")
            return False
        self._remove_run(entry.run_id)
        self._launch(config, entry.path, resume=True)
        return True

    def _launch(self, config: RunConfig, out: Path, resume: bool = False) -> None:
        from engine.worker import EngineProcess
        self.engine = EngineProcess(config, out, resume=resume)
        self.engine.start()
        verb = "continuing" if resume else "started"
        self.log_view.appendPlainText(f"{verb} engine (pid {self.engine.process.pid}) → {out}")
        self.total_steps = config.sections["run"]["steps"]
        self.progress.setRange(0, self.total_steps or 0)
        self.progress.setValue(0)
        self.progress.setFormat("%v / %m")
        self._hide_banner()
        self.run_list.blockSignals(True)
        for entry in self.runs.values():  # a new run is shown alone; tick others to compare
            entry.item.setCheckState(QtCore.Qt.CheckState.Unchecked)
        self.run_list.blockSignals(False)
        if resume:  # a SWMR reader must open the file only after the writer has reopened it
            self.live_run_id, self.resuming = None, out
        else:
            self.live_run_id = self.open_run(out, check_exists=False)
        self._engine_timer.start()
        self._findings_timer.start()
        self._set_state("starting")

    def toggle_pause(self) -> None:
        if self.engine is None:
            return
        if self.state == "running":
            self.engine.pause()
        elif self.state == "paused":
            self.engine.resume_training()

    def stop_run(self) -> None:
        if self.engine is not None and self.state in ACTIVE:
            self.engine.stop()
            self.statusBar().showMessage("stopping after this step…", 3000)

    def checkpoint_now(self) -> None:
        if self.engine is not None and self.state in ("running", "paused"):
            self.engine.checkpoint()
            self.statusBar().showMessage("checkpoint requested", 3000)

    def _poll_engine(self) -> None:
        """Drain the engine's status messages (non-blocking)."""
        if self.engine is None:
            self._engine_timer.stop()
            return
        for msg in self.engine.poll():
            kind = msg.get("kind")
            if kind == "progress":
                self._on_progress(msg)
            elif kind == "state":
                self._set_state(msg["state"])
                if msg.get("message"):
                    self.log_view.appendPlainText(msg["message"])
            elif kind == "error":
                self.log_view.appendPlainText(msg.get("traceback") or msg.get("message", ""))
                self.engine_error = msg.get("message", "")
            elif kind == "exit":
                self._on_engine_exit(msg.get("exitcode"))

    def _on_progress(self, msg: dict) -> None:
        total = int(msg.get("total") or 0)
        self.progress.setRange(0, total)
        self.progress.setValue(int(msg["step"]))
        eta = msg.get("eta_s")
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta is not None else "?"
        self.rate_label.setText(f" {msg.get('steps_per_s', 0):.0f} steps/s · ETA {eta_text}")
        if self.state == "starting":
            self._set_state("running")

    def _on_engine_exit(self, exitcode) -> None:
        self._engine_timer.stop()
        self._findings_timer.stop()
        if self.state not in FINAL:
            error = getattr(self, "engine_error", "")
            if self.state == "failed" or error:
                self._set_state("failed")
            else:
                self._set_state("crashed")
            self._show_banner(
                f"<b>The engine process {'failed' if self.state == 'failed' else 'died'}</b> (exit code {exitcode})"
                f"{': ' + _escape(error) if error else ''}. Everything plotted is kept. "
                "<a href='reopen'>Open the partial run</a> · <a href='log'>Show the engine log</a>")
        elif self.state in ("failed", "diverged"):
            self._show_banner(f"<b>Training {self.state}</b>: {_escape(getattr(self, 'engine_error', ''))} "
                              "Everything written before is kept. <a href='log'>Show the engine log</a>")
        self.log_view.appendPlainText(f"engine exited with code {exitcode}")
        self.engine = None
        self.engine_error = ""
        self._update_actions()
        if self.live_run_id in self.runs:
            self.poller.add(self.live_run_id, self.runs[self.live_run_id].path, fresh=False)  # one last read
            self._request_findings(self.live_run_id)

    def _set_state(self, state: str) -> None:
        self.state = state
        if self.resuming is not None and state != "starting":  # running, or failed before it could
            self.live_run_id, self.resuming = self.open_run(self.resuming), None
        color = STATE_COLORS.get(state, "#808080")
        self.state_label.setText(state)
        self.state_label.setStyleSheet(f"background: {color}; color: white; border-radius: 8px; "
                                       "padding: 2px 10px; font-weight: bold;")
        self.state_label.setToolTip(f"Training state: {state}")
        live = self.runs.get(self.live_run_id)
        self.setWindowTitle(f"TrainDx — {live.path.stem} ({state})" if live else "TrainDx")
        self.act_pause.setText("Resume" if state == "paused" else "Pause")
        if state == "finished":
            self.progress.setValue(self.progress.maximum())
            self.rate_label.setText(self.rate_label.text().split(" · ")[0] + " · done")
        self._update_actions()
        if state in FINAL and self.live_run_id in self.runs:
            self._request_findings(self.live_run_id)
        self.state_changed.emit(state)

    def _update_actions(self) -> None:
        active = self.state in ACTIVE
        can_start = not active and self.form.config is not None
        self.act_start.setEnabled(can_start)
        self.start_button.setEnabled(can_start)
        self.act_pause.setEnabled(self.state in ("running", "paused"))
        self.act_stop.setEnabled(active)
        self.act_ckpt.setEnabled(self.state in ("running", "paused"))
        self.act_reopen.setEnabled(self.live_run_id is not None and not active)
        self.act_continue.setEnabled(self.continue_target() is not None)

    def reopen_live_run(self) -> None:
        if self.live_run_id in self.runs:
            path = self.runs[self.live_run_id].path
            self._remove_run(self.live_run_id)
            self.live_run_id = self.open_run(path)

    def _on_banner_link(self, link: str) -> None:
        if link == "reopen":
            self.reopen_live_run()
        elif link == "log":
            self.side_tabs.setCurrentWidget(self.log_view)
            self.runs_dock.show()

    def _show_banner(self, html: str) -> None:
        self.banner.setText(html)
        self.banner.setStyleSheet("background: #5c1f1f; color: #ffdede; padding: 6px; border-radius: 4px;"
                                  if self.theme_name == "dark" else
                                  "background: #fbe3e3; color: #6b1111; padding: 6px; border-radius: 4px;")
        self.banner.show()

    def _hide_banner(self) -> None:
        self.banner.hide()

    # =============================================================================================
    # Runs
    # =============================================================================================
    def open_run_dialog(self) -> None:
        paths, _ = QtWidgets.QFileDialog.getOpenFileNames(self, "Open run", str(self.runs_dir),
                                                          "Run files (*.h5);;All files (*)")
        for p in paths:
            self.open_run(p)

    def open_run(self, path: str | Path, check_exists: bool = True) -> str | None:
        """Show a run file (live, finished or crashed); returns its id. Reading happens in the poller."""
        path = Path(path).resolve()
        run_id = str(path)
        if check_exists and not path.is_file():
            QtWidgets.QMessageBox.warning(self, "Cannot open run", f"{path}: no such file")
            return None
        if run_id in self.runs:
            self.runs[run_id].item.setCheckState(QtCore.Qt.CheckState.Checked)
            return run_id
        color = PALETTE[len(self.runs) % len(PALETTE)]
        item = QtWidgets.QListWidgetItem(path.stem)
        item.setFlags(item.flags() | QtCore.Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(QtCore.Qt.CheckState.Checked)
        item.setData(QtCore.Qt.ItemDataRole.UserRole, run_id)
        item.setToolTip(str(path))
        item.setIcon(_dot(color))
        data = RunData(label=path.stem, path=str(path))
        self.runs[run_id] = RunEntry(run_id, path, data, color, item)
        self.run_list.blockSignals(True)
        self.run_list.addItem(item)
        self.run_list.blockSignals(False)
        self.poller.add(run_id, path)
        self._add_recent("recent_runs", path)
        self.settings.setValue("last_dir", str(path.parent))
        self._traces_changed()
        return run_id

    def target_run(self) -> RunEntry | None:
        """The run that Export report and Continue act on: the selected one, else the first shown
        (the live run, when it is shown)."""
        selected = [self.runs[i.data(QtCore.Qt.ItemDataRole.UserRole)] for i in self.run_list.selectedItems()]
        shown = selected or self.visible_runs()
        return shown[0] if shown else None

    def export_report_dialog(self) -> None:
        entry = self.target_run()
        if entry is None:
            QtWidgets.QMessageBox.information(self, "Export report", "Open or start a run first.")
            return
        path, _ = QtWidgets.QFileDialog.getSaveFileName(
            self, "Export report", str(entry.path.with_suffix(".html")),
            "HTML report (*.html);;PDF report (*.pdf)")
        if path:
            self.export_report(entry.path, path)

    def export_report(self, run_path: Path, out: str | Path) -> Path | None:
        """Write the report. Its plots are drawn with Qt widgets, which live in this thread, so the
        work is cut into plot-sized pieces with the event loop served between them."""
        from .report import export_report
        dialog = QtWidgets.QProgressDialog("Writing report…", None, 0, 100, self)
        dialog.setWindowTitle("Export report")
        dialog.setMinimumDuration(300)

        def progress(percent: float, text: str) -> None:
            dialog.setValue(int(percent))
            dialog.setLabelText(text)
            QtWidgets.QApplication.processEvents()
        try:
            written = export_report(run_path, out, progress=progress)
        except (OSError, ValueError) as exc:
            dialog.close()
            QtWidgets.QMessageBox.warning(self, "Export report", f"The report could not be written: {exc}")
            return None
        dialog.close()
        self.statusBar().showMessage(f"Report written to {written}", 10000)
        return written

    def close_selected_run(self) -> None:
        for item in self.run_list.selectedItems():
            run_id = item.data(QtCore.Qt.ItemDataRole.UserRole)
            if run_id == self.live_run_id and self.state in ACTIVE:
                continue
            self._remove_run(run_id)

    def _remove_run(self, run_id: str) -> None:
        entry = self.runs.pop(run_id, None)
        if entry is None:
            return
        self.poller.remove(run_id)
        self.run_list.takeItem(self.run_list.row(entry.item))
        self.findings.pop(run_id, None)
        self._traces_changed()

    def visible_runs(self) -> list[RunEntry]:
        """Ticked runs; the live run (or the first ticked) first, so it sets the x axis."""
        ticked = [e for e in self.runs.values() if e.item.checkState() == QtCore.Qt.CheckState.Checked]
        ticked.sort(key=lambda e: e.run_id != self.live_run_id)
        return ticked

    def _on_rows(self, run_id: str, chunk: dict) -> None:
        entry = self.runs.get(run_id)
        if entry is None:
            return
        for name, (steps, values) in chunk.items():
            entry.data.extend(name, steps, values)
        if run_id == self.live_run_id and "train/loss" in chunk:  # progress also follows the file
            self.progress.setValue(max(self.progress.value(), int(chunk["train/loss"][0][-1])))
        self._redraw_timer.start()

    def _on_meta(self, run_id: str, meta: dict) -> None:
        entry = self.runs.get(run_id)
        if entry is None:
            return
        d = entry.data
        first, old_label = not d.views, d.label
        d.status, d.views, d.titles, d.events = meta["status"], meta["views"], meta["titles"], meta["events"]
        d.config, d.meta = meta["config"], meta["meta"]
        d.label = (d.config.get("run") or {}).get("name") or entry.path.stem
        d.version += 1
        entry.item.setText(f"{entry.path.stem} — {d.status}")
        self._update_actions()
        if first or d.label != old_label:
            self._traces_changed()
        self._show_events()
        if run_id != self.live_run_id and (first or d.status in FINAL) and run_id not in self.findings:
            self._request_findings(run_id)
        if run_id == self.live_run_id and self.engine is None and d.status == "crashed" and self.state not in FINAL:
            self._set_state("crashed")

    def _on_poll_failed(self, run_id: str, message: str) -> None:
        """A run that cannot be read is marked with the message; the others keep updating."""
        self.statusBar().showMessage(message, 10000)
        entry = self.runs.get(run_id)
        if entry is not None:
            entry.data.status = "unreadable"
            entry.item.setText(f"{entry.path.stem} — unreadable")
            entry.item.setToolTip(message)
            entry.item.setIcon(_dot(STATE_COLORS["failed"]))

    def _traces_changed(self) -> None:
        """Rebuild the plot grid for the union of the ticked runs' views; hand each widget its traces."""
        visible = self.visible_runs()
        views: dict[str, list[dict]] = {}
        titles: dict[str, str] = {}
        for e in visible:
            for plugin, vs in sorted(e.data.views.items(), key=lambda kv: (kv[0] != "core", kv[0])):
                have = {v["title"] for v in views.setdefault(plugin, [])}
                views[plugin].extend(v for v in vs if v["title"] not in have)
            titles.update(e.data.titles)
        if "core" in views:
            views = {"core": views.pop("core"), **views}
        for w in self.plots.rebuild(views, titles):
            w.hovered.connect(self.hover_cursor)
            w.clicked.connect(self.pin_cursor)
            w.set_global_smoothing(self.global_smoothing)
            w.canvas.apply_theme(THEMES[self.theme_name])
        names = [e.data.label for e in visible]
        traces = [Trace(e.data, e.color, e.data.label if names.count(e.data.label) == 1 else
                        f"{e.data.label} ({e.path.stem})") for e in visible]
        for w in self.plots.widgets.values():
            w.traces = traces
            w._drawn_key = None
        has_views = bool(self.plots.widgets)
        self.plots.setVisible(has_views)
        self.placeholder.setVisible(not has_views)
        if not has_views and visible:
            self.placeholder.setText("waiting for the run file…")
        self._show_findings()
        self._show_events()
        self._update_actions()  # what Continue acts on follows what is shown
        self._redraw_timer.start()

    def _redraw_visible(self) -> None:
        """Queue the widgets on screen for repainting (off-screen ones repaint when scrolled to)."""
        for w in self.plots.widgets.values():
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

    # =============================================================================================
    # Cursor
    # =============================================================================================
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
        for w in self.plots.widgets.values():
            w.set_cursor(step)
        pin = " (pinned — Esc releases)" if self.cursor_pinned else ""
        self.cursor_label.setText("" if step is None else f"cursor: step {step}{pin}")

    def _ensure_step_visible(self, step: int) -> None:
        for w in self.plots.widgets.values():
            canvas = w.canvas
            if w.view["kind"] not in ("line", "band", "heatmap") or not hasattr(canvas, "plotItem"):
                continue
            vb = canvas.plotItem.vb
            if vb.state["autoRange"][0] is False and w.opts.x_mode == "step" and not w.opts.log_x:
                x0, x1 = vb.viewRange()[0]
                if not x0 <= step <= x1:
                    half = (x1 - x0) / 2
                    vb.setXRange(step - half, step + half, padding=0)

    def reset_zoom(self) -> None:
        for w in self.plots.widgets.values():
            w.reset_zoom()

    def _on_smoothing(self, value: int) -> None:
        self.global_smoothing = value / 100
        self.smoothing_value.setText(f"{self.global_smoothing:.2f}")
        for w in self.plots.widgets.values():
            w.set_global_smoothing(self.global_smoothing)

    # =============================================================================================
    # Findings and events
    # =============================================================================================
    def _request_findings(self, run_id: str) -> None:
        entry = self.runs.get(run_id)
        if entry is None or not entry.path.exists():
            return
        self.tasks.start(compute_findings, str(entry.path),
                         on_done=lambda result, r=run_id: self._on_findings(r, result),
                         on_exception=lambda exc, r=run_id: self._on_findings(
                             r, [{"plugin": "", "severity": "info", "message": f"findings unavailable: {exc}",
                                  "step": None}]))

    def _on_findings(self, run_id: str, found: list[dict]) -> None:
        if run_id not in self.runs:
            return
        self.findings[run_id] = found
        self._show_findings()
        self.findings_ready.emit(run_id)

    def _show_findings(self) -> None:
        tree = self.findings_list
        tree.clear()
        visible = self.visible_runs()
        order = {s: i for i, s in enumerate(("problem", "warning", "info", "ok"))}
        rows = [(e, f) for e in visible for f in self.findings.get(e.run_id, [])]
        rows.sort(key=lambda ef: order.get(ef[1]["severity"], 9))
        for e, f in rows:
            prefix = f"[{e.data.label}] " if len(visible) > 1 else ""
            where = "" if f.get("step") is None else f"  (step {f['step']})"
            item = QtWidgets.QListWidgetItem(f"{prefix}{f['plugin']}: {f['message']}{where}")
            item.setIcon(_dot(SEVERITY_COLORS.get(f["severity"], "#808080")))
            item.setToolTip(f"{f['severity']}: {f['message']}" + ("\nclick to jump to its step" if where else ""))
            item.setData(QtCore.Qt.ItemDataRole.UserRole, f.get("step"))
            tree.addItem(item)
        if not rows:
            waiting = any(e.run_id not in self.findings for e in visible)
            tree.addItem("computing findings…" if waiting and visible else "no findings")

    def _on_finding_clicked(self, item) -> None:
        step = item.data(QtCore.Qt.ItemDataRole.UserRole)
        if step is not None:
            self.pin_cursor(int(step))

    def _show_events(self) -> None:
        visible = self.visible_runs()
        if not visible:
            self.events_tree.clear()
            return
        events = visible[0].data.events
        if self.events_tree.topLevelItemCount() == len(events):
            return
        self.events_tree.clear()
        for e in events:
            it = QtWidgets.QTreeWidgetItem([str(e["step"]), e["kind"], e["message"]])
            it.setToolTip(2, e["message"])
            if e["kind"] in ("diverged", "failed", "plugin_error"):
                it.setForeground(1, QtGui.QColor("#d9534f"))
            self.events_tree.addTopLevelItem(it)

    # =============================================================================================
    # Recent files, theme, window state
    # =============================================================================================
    def _recent(self, key: str) -> list[str]:
        value = self.settings.value(key, [])
        if isinstance(value, str):
            value = [value]
        return [v for v in (value or []) if v]

    def _add_recent(self, key: str, path) -> None:
        path = str(Path(path).resolve())
        items = [path] + [p for p in self._recent(key) if p != path]
        self.settings.setValue(key, items[:MAX_RECENT])
        self._refresh_recent_menus()
        if key == "recent_runs":
            self._refresh_recent_runs()

    def _refresh_recent_menus(self) -> None:
        if not hasattr(self, "recent_runs_menu"):
            return
        for menu, key, slot in ((self.recent_runs_menu, "recent_runs", self.open_run),
                                (self.recent_configs_file_menu, "recent_configs", self.load_config),
                                (self.recent_configs_menu, "recent_configs", self.load_config)):
            menu.clear()
            for p in self._recent(key):
                menu.addAction(p, lambda p=p, s=slot: s(p))
            menu.setEnabled(bool(self._recent(key)))

    def _refresh_recent_runs(self) -> None:
        self.recent_runs.clear()
        for p in self._recent("recent_runs"):
            it = QtWidgets.QListWidgetItem(Path(p).name)
            it.setToolTip(p)
            it.setData(QtCore.Qt.ItemDataRole.UserRole, p)
            self.recent_runs.addItem(it)

    def apply_theme(self, mode: str) -> None:
        self.theme_mode = mode
        self.settings.setValue("theme", mode)
        self.theme_name = theme_mod.apply(QtWidgets.QApplication.instance(), mode)
        for w in self.plots.widgets.values():
            w.apply_theme(THEMES[self.theme_name])

    def _restore_window(self) -> None:
        geometry = self.settings.value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1500, 950)
        state = self.settings.value("window_state")
        if state is not None:
            self.restoreState(state)
        self.smoothing_slider.setValue(int(self.settings.value("smoothing", 60)))

    def _toggle_full_screen(self) -> None:
        self.showNormal() if self.isFullScreen() else self.showFullScreen()

    def _about(self) -> None:
        from engine import __version__
        QtWidgets.QMessageBox.about(self, "About TrainDx",
                                    f"<b>TrainDx</b> {__version__}<br>Training diagnostics for neural networks.")

    # -- drag and drop ------------------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:
        if any(u.toLocalFile().endswith((".h5", ".toml")) for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        self.open_paths([u.toLocalFile() for u in event.mimeData().urls()])
        event.acceptProposedAction()

    def open_paths(self, paths) -> None:
        """Run files open as runs, TOML files load into the form."""
        for p in paths:
            if str(p).endswith(".toml"):
                self.load_config(p)
            elif p:
                self.open_run(p)

    # -- closing ------------------------------------------------------------------------------------
    def closeEvent(self, event) -> None:
        if self.confirm_close and self.engine is not None and self.engine.is_alive():
            answer = QtWidgets.QMessageBox.question(
                self, "Training is running", "Stop training and close? (The run file keeps what was written.)")
            if answer != QtWidgets.QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop the engine, the poller, the timers and the tasks; save the window state."""
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("window_state", self.saveState())
        self.settings.setValue("smoothing", self.smoothing_slider.value())
        self._redraw_queue.clear()
        for timer in (self._engine_timer, self._findings_timer, self._redraw_timer, self._redraw_step,
                      self.form._timer):
            timer.stop()
        self.statusBar().clearMessage()  # stops its timeout timer
        if self.engine is not None:
            self.engine.stop()
            self.engine.join(10)
            self.engine.kill()
            self.engine = None
        if self.poller.isRunning():
            self.poller.stop()
        self.tasks.shutdown()


def _dot(color: str) -> QtGui.QIcon:
    pix = QtGui.QPixmap(12, 12)
    pix.fill(QtCore.Qt.GlobalColor.transparent)
    p = QtGui.QPainter(pix)
    p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
    p.setBrush(QtGui.QColor(color))
    p.setPen(QtCore.Qt.PenStyle.NoPen)
    p.drawEllipse(1, 1, 10, 10)
    p.end()
    return QtGui.QIcon(pix)


def _escape(text: str) -> str:
    return (text or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
