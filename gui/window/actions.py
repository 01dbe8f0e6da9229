"""The window's actions (each with its shortcut and tip), its toolbar and its menus, built in one
place so every command is reachable the same way from a button, a menu and the keyboard."""
from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets

from .. import theme as theme_mod

SP = QtWidgets.QStyle.StandardPixmap


def make_action(window: QtWidgets.QWidget, text: str, slot, shortcut=None, tip: str = "",
                icon=None) -> QtGui.QAction:
    a = QtGui.QAction(text, window)
    if icon is not None:
        a.setIcon(window.style().standardIcon(icon))
    if shortcut:
        a.setShortcut(QtGui.QKeySequence(shortcut))
        tip = f"{tip} ({QtGui.QKeySequence(shortcut).toString(QtGui.QKeySequence.SequenceFormat.NativeText)})"
    a.setToolTip(tip.strip())
    a.setStatusTip(tip.strip())
    a.triggered.connect(slot)
    return a


def build_actions(w) -> None:
    """``w.act_*`` for every command of the main window ``w``."""
    w.act_start = make_action(w, "Start", w.start_run, "Ctrl+R", "Start training the run set up on the left",
                              SP.SP_MediaPlay)
    w.act_continue = make_action(w, "Continue run", w.continue_run, "Ctrl+Shift+R",
                                 "Train the selected stopped or crashed run on from its last "
                                 "checkpoint, into the same file", SP.SP_MediaSeekForward)
    w.act_pause = make_action(w, "Pause", w.engine_run.toggle_pause, "Ctrl+P", "Pause or resume training",
                              SP.SP_MediaPause)
    w.act_stop = make_action(w, "Stop", w.stop_run, "Ctrl+.", "Stop training (evaluates and checkpoints first)",
                             SP.SP_MediaStop)
    w.act_ckpt = make_action(w, "Checkpoint now", w.checkpoint_now, "Ctrl+K",
                             "Save a checkpoint after the current step", SP.SP_DialogSaveButton)
    w.act_open = make_action(w, "Open run…", w.open_run_dialog, "Ctrl+O", "Open a run file (.h5)",
                             SP.SP_DialogOpenButton)
    w.act_load = make_action(w, "Load config…", lambda: w.setup_panel.load_dialog(), "Ctrl+L",
                             "Load a run config (.toml)")
    w.act_save = make_action(w, "Save config…", lambda: w.setup_panel.save_dialog(), "Ctrl+S",
                             "Save the form as a TOML file")
    w.act_default = make_action(w, "Default config", lambda: w.setup_panel.load_default(), None,
                                "Reset the form to the bundled digits example")
    w.act_export = make_action(w, "Export report…", w.export_report_dialog, "Ctrl+E",
                               "Write the shown run's analysis report as one HTML or PDF file",
                               SP.SP_FileDialogDetailedView)
    w.act_reopen = make_action(w, "Reopen run file", w.reopen_live_run, None,
                               "Read the run file again from disk (e.g. after a crash)")
    w.act_explain = make_action(w, "Explain this step", lambda: w.explain_step(), "Ctrl+I",
                                "What every analysis knows about the cursor's step (no cursor: the first "
                                "loss spike), in the Explain panel")
    w.act_unpin = make_action(w, "Release cursor", w.plots.release_cursor, "Esc",
                              "Let the step cursor follow the mouse again")
    w.act_zoom = make_action(w, "Reset zoom", w.plots.reset_zoom, "Ctrl+0", "Show all data in every plot")
    w.act_quit = make_action(w, "Quit", w.close, "Ctrl+Q", "Close TrainDx")
    w.act_fullscreen = make_action(w, "Full screen", w.toggle_full_screen, "F11", "Toggle full screen")
    w.act_help = make_action(w, "Using TrainDx", lambda: w.show_help("Using TrainDx"), "F1",
                             "How to set up, watch, compare and report runs")


def build_toolbar(w) -> None:
    """Run control, the run's status, and the window-wide smoothing slider."""
    tb = w.addToolBar("Run control")
    tb.setObjectName("run_toolbar")
    tb.setToolButtonStyle(QtCore.Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    for a in (w.act_start, w.act_continue, w.act_pause, w.act_stop, w.act_ckpt, w.act_export):
        tb.addAction(a)
    tb.addSeparator()
    w.run_status.add_to(tb)
    tb.addSeparator()
    tb.addWidget(QtWidgets.QLabel(" Smoothing "))
    w.smoothing_slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
    w.smoothing_slider.setRange(0, 99)
    w.smoothing_slider.setMaximumWidth(130)
    w.smoothing_slider.setToolTip("Debiased EMA weight for all line plots (TensorBoard's smoothing); "
                                  "the raw curve stays faint underneath")
    w.smoothing_value = QtWidgets.QLabel("0.00")
    w.smoothing_slider.valueChanged.connect(w.on_smoothing)
    tb.addWidget(w.smoothing_slider)
    tb.addWidget(w.smoothing_value)
    w.run_toolbar = tb


def build_menus(w) -> None:
    m = w.menuBar().addMenu("&File")
    m.addAction(w.act_open)
    w.recent_runs_menu = m.addMenu("Recent runs")
    m.addAction(w.act_export)
    m.addSeparator()
    for a in (w.act_load, w.act_save, w.act_default):
        m.addAction(a)
    w.recent_configs_file_menu = m.addMenu("Recent configs")
    m.addSeparator()
    m.addAction(w.act_quit)
    r = w.menuBar().addMenu("&Run")
    for a in (w.act_start, w.act_continue, w.act_pause, w.act_stop, w.act_ckpt, w.act_reopen):
        r.addAction(a)
    r.addSeparator()
    r.addAction(w.act_explain)
    v = w.menuBar().addMenu("&View")
    v.addAction(w.act_zoom)
    v.addAction(w.act_unpin)
    v.addAction(w.act_fullscreen)
    tm = v.addMenu("Theme")
    group = QtGui.QActionGroup(tm)
    for mode in theme_mod.MODES:
        a = tm.addAction(mode.capitalize() if mode != "system" else "Follow system")
        a.setCheckable(True)
        a.setChecked(mode == w.theme_mode)
        a.triggered.connect(lambda _=False, md=mode: w.apply_theme(md))
        group.addAction(a)
    v.addSeparator()
    v.addAction(w.setup_dock.toggleViewAction())
    v.addAction(w.runs_dock.toggleViewAction())
    h = w.menuBar().addMenu("&Help")
    h.addAction(w.act_help)
    h.addAction("The run file format", lambda: w.show_help("The run file"))
    h.addAction("Keyboard shortcuts", lambda: w.show_help("Shortcuts"))
    h.addSeparator()
    h.addAction("About TrainDx", w.about)
