"""The main window: run setup on the left, live plots in the middle, runs and side panels on the right.

It composes the parts and routes between them: the config form, the plot area, the runs panel,
the engine run and the findings and events panels. The GUI thread only lays out and paints:
training runs in the engine process, run files are read by ``RunPoller`` (a worker thread), and
findings are computed by tasks on a pool.
"""
from __future__ import annotations

import datetime as _dt
import html
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from engine.config import RunConfig
from engine.errors import ConfigError, RunFileError
from engine.store import check_target, latest_checkpoint

from .. import theme as theme_mod
from ..form import DEFAULT_CONFIG, ConfigForm, load_plugin_classes
from ..tasks import RunPoller, TaskRunner
from ..views import THEMES, Trace
from .actions import build_actions, build_menus, build_toolbar
from .colors import STATE_COLORS, dot
from .engine_run import ACTIVE, FINAL, EngineRun
from .explain_panel import ExplainPanel, explain_task
from .findings import EventsTable, FindingsList, compute_findings
from .plot_area import PlotArea
from .recent import RecentFiles, fill_menu
from .runs_panel import RunEntry, RunsPanel
from .setup_panel import SetupPanel
from .status import RunStatus

CONTINUABLE = ("stopped", "crashed")  # a failed or diverged run would only fail again
START_HINT = ("Set up a run on the left and press <b>Start</b> (Ctrl+R),<br>or open a run file (Ctrl+O) — "
              "dropping one here works too.")


class MainWindow(QtWidgets.QMainWindow):
    """TrainDx's desktop window."""

    state_changed = QtCore.Signal(str)
    findings_ready = QtCore.Signal(str)  # run id

    def __init__(self, settings: QtCore.QSettings | None = None, runs_dir: str | Path | None = None):
        super().__init__()
        self.settings = settings or QtCore.QSettings()
        self.runs_dir = Path(runs_dir or self.settings.value("runs_dir", str(Path.cwd() / "runs")))
        self.setAcceptDrops(True)
        self.tasks = TaskRunner(self)
        self.poller = RunPoller(self)
        self.poller.rows.connect(self._on_rows)
        self.poller.meta.connect(self._on_meta)
        self.poller.failed.connect(self._on_poll_failed)
        self.poller.start()
        self.recent = RecentFiles(self.settings, self)
        self.recent.changed.connect(self._refresh_recent)
        self.engine_run = EngineRun(self)
        self.engine_run.state_changed.connect(self._on_state)
        self.engine_run.progress.connect(self._on_progress)
        self.engine_run.exited.connect(self._on_engine_exit)
        self.findings: dict[str, list[dict]] = {}
        self._findings_requests: dict[str, int] = {}  # per run: the latest findings task started
        self._findings_shown: dict[str, int] = {}  # and the one whose findings are shown
        self.live_run_id: str | None = None
        self.resuming: Path | None = None  # a continued run's file, until its engine has it open
        self.theme_mode = str(self.settings.value("theme", "system"))
        self.theme_name = "light"
        self.confirm_close = True  # ask before closing while training (tests turn it off)

        self.form = ConfigForm()
        self.plots = PlotArea()
        self.plots.cursor_moved.connect(self._show_cursor)
        self.plots.explain_requested.connect(self._explain_data)
        self.run_status = RunStatus()
        self.banner = QtWidgets.QLabel()
        self.banner.setWordWrap(True)
        self.banner.setObjectName("banner")
        self.banner.setTextFormat(QtCore.Qt.TextFormat.RichText)
        self.banner.linkActivated.connect(self._on_banner_link)
        self.banner.hide()
        self.placeholder = QtWidgets.QLabel(START_HINT)
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
        build_actions(self)
        self._build_setup_dock()
        self._build_side_dock()
        self.engine_run.log.connect(self.log_view.appendPlainText)
        build_toolbar(self)
        build_menus(self)
        self.cursor_label = QtWidgets.QLabel()
        self.statusBar().addPermanentWidget(self.cursor_label)
        self._refresh_recent("recent_runs")
        self._refresh_recent("recent_configs")

        self._findings_timer = QtCore.QTimer(self, interval=15_000)  # live runs: findings so far
        self._findings_timer.timeout.connect(
            lambda: self._request_findings(self.live_run_id) if self.state == "running" else None)
        self.form.validity_changed.connect(lambda ok: self._update_actions())
        QtWidgets.QApplication.instance().styleHints().colorSchemeChanged.connect(
            lambda _: self.apply_theme(self.theme_mode))
        self.apply_theme(self.theme_mode)
        self._restore_window()
        self.form.load_toml(DEFAULT_CONFIG)
        self.tasks.start(load_plugin_classes, on_done=self._on_plugins_loaded,
                         on_exception=lambda e: self.form.set_plugins({}, {"plugins": str(e)}))
        self._on_state("idle")

    @property
    def state(self) -> str:
        """The trained run's state: idle, starting, running, paused, or how it ended."""
        return self.engine_run.state

    @property
    def runs(self) -> dict[str, RunEntry]:
        return self.runs_panel.entries

    # =============================================================================================
    # Building
    # =============================================================================================
    def _add_dock(self, title: str, name: str, area, widget: QtWidgets.QWidget,
                  min_width: int) -> QtWidgets.QDockWidget:
        dock = QtWidgets.QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(widget)
        dock.setMinimumWidth(min_width)
        self.addDockWidget(area, dock)
        return dock

    def _build_setup_dock(self) -> None:
        self.setup_panel = SetupPanel(self.form, self, self.recent, self.settings)
        self.setup_panel.message.connect(self.statusBar().showMessage)
        self.start_button = self.setup_panel.start_button
        self.setup_dock = self._add_dock("Run setup", "setup_dock", QtCore.Qt.DockWidgetArea.LeftDockWidgetArea,
                                         self.setup_panel, 330)

    def _build_side_dock(self) -> None:
        """The runs panel over the side panels (tabs): findings, events, the engine log, and any
        panel added later with ``add_side_panel``."""
        self.runs_panel = RunsPanel(self.act_open)
        self.runs_panel.ticks_changed.connect(self._traces_changed)
        self.runs_panel.selection_changed.connect(self._update_actions)
        self.runs_panel.close_clicked.connect(self.close_selected_run)
        self.runs_panel.recent_activated.connect(self.open_run)
        self.side_tabs = QtWidgets.QTabWidget()
        self.findings_list = FindingsList()
        self.findings_list.step_clicked.connect(self.plots.pin_cursor)
        self.findings_list.step_activated.connect(lambda run_id, step: self.explain_step(self.runs.get(run_id), step))
        self.events_table = EventsTable()
        self.events_table.step_clicked.connect(self.plots.pin_cursor)
        self.events_table.step_activated.connect(lambda step: self.explain_step(None, step))
        self.explain_panel = ExplainPanel()
        self.explain_panel.go_to.connect(self._go_to_evidence)
        self.explain_panel.explain.connect(lambda path, step: self.explain_step(self.runs.get(path), step))
        self.log_view = QtWidgets.QPlainTextEdit(readOnly=True)
        self.log_view.setMaximumBlockCount(2000)
        for panel, title in ((self.findings_list, "Findings"), (self.explain_panel, "Explain"),
                             (self.events_table, "Events"), (self.log_view, "Engine log")):
            self.add_side_panel(panel, title)
        side = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(side)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.runs_panel)
        lay.addWidget(self.side_tabs, 1)
        self.runs_dock = self._add_dock("Runs", "runs_dock", QtCore.Qt.DockWidgetArea.RightDockWidgetArea, side, 300)

    def add_side_panel(self, panel: QtWidgets.QWidget, title: str) -> None:
        """A panel beside the plots, as a tab under the runs (e.g. one explaining the cursor step)."""
        self.side_tabs.addTab(panel, title)

    # =============================================================================================
    # Config
    # =============================================================================================
    def _on_plugins_loaded(self, result) -> None:
        self.form.set_plugins(*result)
        self.plugins_loaded = True

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
        """Train a stopped or crashed run on from its last checkpoint, into its own file. What is
        plotted stays until the engine has reopened the file (dropping the rows written after the
        checkpoint); then the run is read afresh."""
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
        self.poller.remove(entry.run_id)  # the engine must reopen the file for writing: no reader holds it
        checkpoint = latest_checkpoint(entry.path)
        self._launch(config, entry.path, resume=True, step=int(checkpoint.stem.removeprefix("step_")))
        return True

    def _launch(self, config: RunConfig, out: Path, resume: bool = False, step: int = 0) -> None:
        self.run_status.start(config.sections["run"]["steps"], step)
        self._hide_banner()
        self.runs_panel.untick_all()
        if resume:  # a SWMR reader may open the file only after the writer has reopened it
            self.resuming = out
            self.live_run_id = str(out)
            self.runs[self.live_run_id].item.setCheckState(QtCore.Qt.CheckState.Checked)
        else:
            self.live_run_id = self.open_run(out, check_exists=False)
        self._findings_timer.start()
        self.engine_run.launch(config, out, resume)

    def stop_run(self) -> None:
        if self.engine_run.stop():
            self.statusBar().showMessage("stopping after this step…", 3000)

    def checkpoint_now(self) -> None:
        if self.engine_run.checkpoint():
            self.statusBar().showMessage("checkpoint requested", 3000)

    def _on_progress(self, msg: dict) -> None:
        if self.state != "paused":  # no speed or time left for a run that is not moving
            self.run_status.show_progress(msg)

    def _on_engine_exit(self, exitcode, error: str, unexpected: bool) -> None:
        self._findings_timer.stop()
        if unexpected:
            self._show_banner(
                f"<b>The engine process {'failed' if self.state == 'failed' else 'died'}</b> (exit code {exitcode})"
                f"{': ' + _escape(error) if error else ''}. Everything plotted is kept. "
                "<a href='reopen'>Open the partial run</a> · <a href='log'>Show the engine log</a>")
        elif self.state in ("failed", "diverged"):
            self._show_banner(f"<b>Training {self.state}</b>: {_escape(error)} "
                              "Everything written before is kept. <a href='log'>Show the engine log</a>")
        self._update_actions()
        if self.live_run_id in self.runs:
            self.poller.add(self.live_run_id, self.runs[self.live_run_id].path, fresh=False)  # one last read
            self._request_findings(self.live_run_id)

    def _on_state(self, state: str) -> None:
        if self.resuming is not None and state != "starting":  # running, or failed before it could
            self.resuming = None
            self._reload(self.live_run_id)
        self.run_status.show_state(state)
        if self.live_run_id in self.runs:
            self._label_entry(self.runs[self.live_run_id])
        self._update_title()
        self.act_pause.setText("Resume" if state == "paused" else "Pause")
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

    def _update_title(self) -> None:
        """The run shown (the live one first) and its state; Qt adds the application's name."""
        shown = self.visible_runs()
        entry = self.runs.get(self.live_run_id) or (shown[0] if shown else None)
        self.setWindowTitle(f"{entry.path.stem} ({self._status_of(entry)})" if entry else "")

    def _status_of(self, entry: RunEntry) -> str:
        """The engine's state for the run it trains (the file says "running" while paused)."""
        live = entry.run_id == self.live_run_id and self.engine_run.process is not None
        return self.state if live else entry.data.status

    def _label_entry(self, entry: RunEntry) -> None:
        entry.item.setText(f"{entry.path.stem} — {self._status_of(entry)}")

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

    def _show_banner(self, text: str) -> None:
        self.banner.setText(text)
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
        self.runs_panel.add(path)
        self.poller.add(run_id, path)
        self.recent.add("recent_runs", path)
        self.settings.setValue("last_dir", str(path.parent))
        self._traces_changed()
        return run_id

    def target_run(self) -> RunEntry | None:
        """The run that Export report and Continue act on: the selected one, else the first shown
        (the live run, when it is shown)."""
        shown = self.runs_panel.selected() or self.visible_runs()
        return shown[0] if shown else None

    def choose_run(self, title: str) -> RunEntry | None:
        """The run an action acts on: the selected one, else the one shown, else the one the user
        picks among those shown (None: no run, or no choice)."""
        shown = self.runs_panel.selected() or self.visible_runs()
        if len(shown) <= 1:
            return shown[0] if shown else None
        names = [f"{e.data.label} ({e.path.name})" for e in shown]
        name, ok = QtWidgets.QInputDialog.getItem(self, title, "Several runs are shown. Which one?", names, 0, False)
        return shown[names.index(name)] if ok else None

    def export_report_dialog(self) -> None:
        if not self.visible_runs() and not self.runs_panel.selected():
            QtWidgets.QMessageBox.information(self, "Export report", "Open or start a run first.")
            return
        entry = self.choose_run("Export report")
        if entry is None:
            return
        path, _ = QtWidgets.QFileDialog.getSaveFileName(
            self, "Export report", str(entry.path.with_suffix(".html")),
            "HTML report (*.html);;PDF report (*.pdf)")
        if path:
            self.export_report(entry.path, path)

    def export_report(self, run_path: Path, out: str | Path) -> Path | None:
        """Write the report. Its plots are drawn with Qt widgets, which live in this thread, so the
        work is cut into plot-sized pieces with the event loop served between them."""
        from ..report import export_report
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
        for entry in self.runs_panel.selected():
            if entry.run_id == self.live_run_id and self.state in ACTIVE:
                continue
            self._remove_run(entry.run_id)

    def _remove_run(self, run_id: str) -> None:
        if self.runs_panel.remove(run_id) is None:
            return
        self.poller.remove(run_id)
        self.findings.pop(run_id, None)
        self.explain_panel.forget(run_id)
        self._traces_changed()

    def visible_runs(self) -> list[RunEntry]:
        """Ticked runs; the live run (or the first ticked) first, so it sets the x axis."""
        return self.runs_panel.ticked(self.live_run_id)

    def _reload(self, run_id: str) -> None:
        """Read a run file afresh; what is drawn stays until its first rows arrive."""
        entry = self.runs.get(run_id)
        if entry is not None:
            entry.reloading = True
            self.poller.add(run_id, entry.path, fresh=True)

    def _on_rows(self, run_id: str, chunk: dict) -> None:
        entry = self.runs.get(run_id)
        if entry is None:
            return
        if entry.reloading:  # the file read afresh: its rows replace the ones shown
            entry.reloading = False
            entry.data = entry.data.emptied()
            self._traces_changed()
        for name, (steps, values) in chunk.items():
            entry.data.extend(name, steps, values)
        if run_id == self.live_run_id and "train/loss" in chunk:
            self.run_status.advance_to(int(chunk["train/loss"][0][-1]))
        self.plots.redraw_soon()

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
        self._label_entry(entry)
        self._update_actions()
        self._update_title()
        if first or d.label != old_label:
            self._traces_changed()
        self._show_events()
        if run_id != self.live_run_id and (first or d.status in FINAL) and run_id not in self.findings:
            self._request_findings(run_id)
        if run_id == self.live_run_id and self.engine_run.process is None and d.status == "crashed" \
                and self.state not in FINAL:
            self.engine_run.set_state("crashed")

    def _on_poll_failed(self, run_id: str, message: str) -> None:
        """A run that cannot be read is marked with the message and taken out of the plots (it has
        nothing to draw); the others keep updating."""
        self.statusBar().showMessage(message, 10000)
        entry = self.runs.get(run_id)
        if entry is not None:
            entry.data.status = "unreadable"
            self._label_entry(entry)
            entry.item.setToolTip(message)
            entry.item.setIcon(dot(STATE_COLORS["failed"]))
            entry.item.setCheckState(QtCore.Qt.CheckState.Unchecked)

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
        names = [e.data.label for e in visible]
        traces = [Trace(e.data, e.color, e.data.label if names.count(e.data.label) == 1 else
                        f"{e.data.label} ({e.path.stem})") for e in visible]
        self.plots.show_runs(views, titles, traces)
        has_views = bool(self.plots.widgets)
        self.plots.setVisible(has_views)
        self.placeholder.setVisible(not has_views)
        self.placeholder.setText("waiting for the run file…" if visible else START_HINT)
        self._update_title()
        self._show_findings()
        self._show_events()
        self._update_actions()  # what Continue acts on follows what is shown

    def _show_cursor(self, step, pinned: bool) -> None:
        pin = " (pinned — Esc releases)" if pinned else ""
        self.cursor_label.setText("" if step is None else f"cursor: step {step}{pin}")

    def on_smoothing(self, value: int) -> None:
        weight = value / 100
        self.smoothing_value.setText(f"{weight:.2f}")
        self.plots.set_smoothing(weight)

    # =============================================================================================
    # Findings and events
    # =============================================================================================
    def _request_findings(self, run_id: str) -> None:
        entry = self.runs.get(run_id)
        if entry is None or not entry.path.exists():
            return
        request = self._findings_requests[run_id] = self._findings_requests.get(run_id, 0) + 1
        self.tasks.start(compute_findings, str(entry.path),
                         on_done=lambda result, r=run_id: self._on_findings(r, request, result),
                         on_exception=lambda exc, r=run_id: self._on_findings(
                             r, request, [{"plugin": "", "severity": "info", "step": None,
                                           "message": f"findings unavailable: {exc}"}]))

    def _on_findings(self, run_id: str, request: int, found: list[dict]) -> None:
        """Show a run's findings, unless those of a later request are already shown (two tasks
        may finish out of order; a live file's last read wins)."""
        if run_id not in self.runs or request < self._findings_shown.get(run_id, 0):
            return
        self._findings_shown[run_id] = request
        self.findings[run_id] = found
        self._show_findings()
        if self.explain_panel.path == run_id and self.explain_panel.result is not None:
            self._start_explain(self.runs[run_id], self.explain_panel.step, quiet=True)  # what it measured since
        self.findings_ready.emit(run_id)

    def _show_findings(self) -> None:
        visible = self.visible_runs()
        rows = [(e.run_id, e.data.label, f) for e in visible for f in self.findings.get(e.run_id, [])]
        waiting = bool(visible) and any(e.run_id not in self.findings for e in visible)
        self.findings_list.show_findings(rows, prefixed=len(visible) > 1, waiting=waiting)

    def _show_events(self) -> None:
        visible = self.visible_runs()
        self.events_table.show_events(visible[0].data.events if visible else [])

    # =============================================================================================
    # Explaining a step
    # =============================================================================================
    def explain_step(self, entry: RunEntry | None = None, step: int | None = None) -> None:
        """Explain ``step`` of a run in the Explain panel: by default the run shown first and the
        cursor's step (no cursor: the run's first loss spike, or its last step)."""
        entry = entry or (self.visible_runs() or [None])[0]
        if entry is None:
            self.statusBar().showMessage("Open or start a run first, then explain one of its steps", 5000)
            return
        self._start_explain(entry, self.plots.cursor if step is None else step)
        self.side_tabs.setCurrentWidget(self.explain_panel)
        self.runs_dock.show()

    def _start_explain(self, entry: RunEntry, step: int | None, quiet: bool = False) -> None:
        request = self.explain_panel.begin(entry.run_id, entry.data.label, step, quiet)
        self.tasks.start(explain_task, str(entry.path), step,
                         on_done=lambda result: self.explain_panel.show_result(request, result),
                         on_exception=lambda exc: self.explain_panel.show_error(request, exc))

    def _explain_data(self, data, step: int) -> None:
        """A plot asked to explain a step of the run it drew from ``data``."""
        entry = next((e for e in self.runs.values() if e.data is data), None)
        if entry is not None:
            self.explain_step(entry, step)

    def _go_to_evidence(self, step: int, series: str) -> None:
        self.plots.pin_cursor(step)
        if series:
            self.plots.show_series(series)

    # =============================================================================================
    # Recent files, theme, window state
    # =============================================================================================
    def _refresh_recent(self, key: str) -> None:
        paths = self.recent.paths(key)
        if key == "recent_runs":
            fill_menu(self.recent_runs_menu, paths, self.open_run)
            self.runs_panel.set_recent(paths)
        else:
            fill_menu(self.recent_configs_file_menu, paths, self.setup_panel.load_config)
            fill_menu(self.setup_panel.recent_menu, paths, self.setup_panel.load_config)

    def apply_theme(self, mode: str) -> None:
        self.theme_mode = mode
        self.settings.setValue("theme", mode)
        self.theme_name = theme_mod.apply(QtWidgets.QApplication.instance(), mode)
        self.plots.apply_theme(THEMES[self.theme_name])

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

    def toggle_full_screen(self) -> None:
        self.showNormal() if self.isFullScreen() else self.showFullScreen()

    def show_help(self, tab: str) -> None:
        from .help import HelpDialog
        if getattr(self, "help_dialog", None) is None:
            self.help_dialog = HelpDialog(self.findChildren(QtGui.QAction), self)
        self.help_dialog.show_tab(tab)

    def about(self) -> None:
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
                self.setup_panel.load_config(p)
            elif p:
                self.open_run(p)

    # -- closing ------------------------------------------------------------------------------------
    def closeEvent(self, event) -> None:
        process = self.engine_run.process
        if self.confirm_close and process is not None and process.is_alive():
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
        self.plots.stop()
        self._findings_timer.stop()
        self.form._timer.stop()
        self.statusBar().clearMessage()  # stops its timeout timer
        self.engine_run.shutdown()
        if self.poller.isRunning():
            self.poller.stop()
        self.tasks.shutdown()


def _escape(text: str) -> str:
    return html.escape(text or "", quote=False)
