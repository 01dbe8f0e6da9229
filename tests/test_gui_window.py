"""The main window driven like a user: fill the form, train real (short) runs in the engine process,
watch the curves, pause/resume/stop, reopen, overlay, and survive an engine crash."""
import pytest

pytest.importorskip("pytestqt")

from PySide6 import QtCore  # noqa: E402

from engine.config import RunConfig  # noqa: E402
from engine.errors import ConfigError  # noqa: E402
from engine.store import latest_checkpoint, open_run  # noqa: E402
from gui.window import MainWindow  # noqa: E402
from conftest import RUN_TIMEOUT  # noqa: E402

def type_into(qtbot, window, key, text):
    """Replace a form field's text by typing, as a user does."""
    editor = window.form.all_editors()[key]
    editor.input.clear()
    qtbot.keyClicks(editor.input, text)
    return editor


def small_run(qtbot, window, name, steps, plugins=True):
    type_into(qtbot, window, "run.name", name)
    type_into(qtbot, window, "run.steps", str(steps))
    type_into(qtbot, window, "run.eval_every", "20")
    type_into(qtbot, window, "model.hidden", "16")
    for box in window.form.plugin_boxes.values():
        box.setChecked(plugins and box.name == "calibration")
    qtbot.waitUntil(lambda: window.form.config is not None and window.start_button.isEnabled())


def rows(window, run_id, name="train/loss"):
    return window.runs[run_id].data.length(name)


def assert_readable_ticks(window):
    """Every plot on screen labels both axes with two ticks or more, each whole inside the plot."""
    from gui.views.axis import drawn_ticks
    from gui.views.export import settle_axes
    checked = 0
    for (_, title), w in window.plots.widgets.items():
        if w.view["kind"] in ("table", "image_grid"):
            continue
        settle_axes(w.canvas)  # as painting it would: an axis widens to its labels when drawn
        for plot in w.canvas.plots:
            for name in ("left", "bottom"):
                axis = plot.getAxis(name)
                ticks = drawn_ticks(axis)
                assert len(ticks) >= 2, (title, name, ticks)
                for text, rect in ticks:
                    drawn = w.canvas.mapFromScene(axis.mapRectToScene(rect)).boundingRect()
                    assert w.canvas.rect().contains(drawn), (title, name, text)
                checked += 1
    assert checked


def test_opens_on_the_ready_default_with_the_five_analyses_as_the_cli_reads_it(window):
    from gui.form import DEFAULT_CONFIG
    form = window.form
    assert form.editors["run.name"].get() == "digits-mlp" and form.editors["data.source"].get() == "digits"
    analyses = {"sharpness", "oscillation", "opposing_signals", "error_slices", "calibration"}
    assert {n for n, b in form.plugin_boxes.items() if b.isChecked()} == analyses
    assert form.config.to_dict() == RunConfig.from_toml(DEFAULT_CONFIG).to_dict()
    assert form.config is not None and window.start_button.isEnabled()
    assert window.run_status.state_label.text() == "idle"


def test_bad_settings_show_the_engine_message_next_to_the_field(qtbot, window):
    lr = type_into(qtbot, window, "optimizer.lr", "-1")
    with pytest.raises(ConfigError) as engine_says:
        RunConfig.from_dict({"optimizer": {"lr": -1}})
    qtbot.waitUntil(lambda: lr.error.isVisible())
    assert lr.error.text() == str(engine_says.value) == "optimizer.lr: got -1.0, expected a number ≥ 0.0"
    assert not window.start_button.isEnabled() and not window.start_run()
    steps = type_into(qtbot, window, "run.steps", "lots")
    qtbot.waitUntil(lambda: steps.error.isVisible())
    assert steps.error.text().startswith("run.steps: got 'lots', expected an integer ≥ 1")
    assert "2 settings to fix" in window.form.summary.text()
    type_into(qtbot, window, "optimizer.lr", "0.05")
    type_into(qtbot, window, "run.steps", "60")
    qtbot.waitUntil(lambda: window.start_button.isEnabled())
    assert not lr.error.isVisible() and not steps.error.isVisible()


def test_plugin_setting_error_comes_from_the_plugin_declaration(qtbot, window):
    box = window.form.plugin_boxes["calibration"]
    key, editor = next((k, e) for k, e in box.all_editors().items() if e.kind in (int, float))
    editor.input.setText("-5")
    qtbot.waitUntil(lambda: editor.error.isVisible())
    assert editor.error.text().startswith(f"{key}: got -5")


def test_config_save_load_and_recent(qtbot, window, tmp_path):
    type_into(qtbot, window, "optimizer.lr", "0.02")
    type_into(qtbot, window, "model.hidden", "8, 4")
    qtbot.waitUntil(lambda: window.form.config is not None)
    path = tmp_path / "mine.toml"
    assert window.setup_panel.save_config(path)
    assert RunConfig.from_toml(path).sections["model"]["hidden"] == [8, 4]
    window.setup_panel.load_config(window.form.source_path)  # back to the default…
    assert window.form.editors["optimizer.lr"].get() == 0.1
    window.setup_panel.load_config(path)  # …and the saved one again
    assert window.form.editors["optimizer.lr"].get() == 0.02
    assert window.form.all_editors()["model.hidden"].get() == [8, 4]
    assert str(path.resolve()) in window.recent.paths("recent_configs")
    assert [a.text() for a in window.setup_panel.recent_menu.actions()][0] == str(path.resolve())


def test_train_watch_pause_resume_stop_reopen_and_overlay(qtbot, window):
    # 1. a short run: the curves grow while it trains and it finishes with findings
    small_run(qtbot, window, "first", 60)
    seen = []
    window.poller.rows.connect(lambda rid, chunk: seen.append(len(chunk.get("train/loss", ((),))[0])))
    with qtbot.waitSignal(window.findings_ready, timeout=RUN_TIMEOUT):
        qtbot.mouseClick(window.start_button, QtCore.Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: window.state == "finished", timeout=RUN_TIMEOUT)
    first = window.live_run_id
    qtbot.waitUntil(lambda: rows(window, first) == 60)
    loss = window.plots.widgets[("core", "Loss")]
    qtbot.waitUntil(lambda: any(k.startswith("0|train/loss") for k in loss.canvas._items))
    drawn = [it for k, it in loss.canvas._items.items() if k.startswith("0|train/loss|None|smooth")][0]
    assert drawn.getData()[0][-1] == 60
    assert sum(seen) >= 60 and window.run_status.progress.value() == 60
    assert window.run_status.rate_label.text().endswith("steps/s · done") and window.windowTitle() == \
        f"{window.runs[first].path.stem} (finished)"  # Qt adds the application's name
    assert window.findings_list.count() > 0 and "calibration" in window.findings_list.item(0).text()
    assert ("calibration", "Reliability diagram") in window.plots.widgets
    assert_readable_ticks(window)

    # the linked cursor: pinning a step marks it in every step plot; row plots show that row
    window.plots.pin_cursor(30)
    assert loss.canvas.cursor_line.isVisible() and loss.canvas.cursor_line.value() == 30
    assert loss.values.text().startswith("step 30: train/loss")
    assert window.plots.widgets[("calibration", "Reliability diagram")].values.text() == "step 20"
    window.plots.release_cursor()
    # clicking a finding pins the cursor at its step
    item = next(window.findings_list.item(i) for i in range(window.findings_list.count())
                if window.findings_list.item(i).data(QtCore.Qt.ItemDataRole.UserRole) is not None)
    window.findings_list.itemClicked.emit(item)
    assert window.plots.cursor == item.data(QtCore.Qt.ItemDataRole.UserRole) and window.plots.cursor_pinned
    window.plots.release_cursor()

    # 2. a long run: pause, resume, stop
    small_run(qtbot, window, "second", 100_000, plugins=False)
    window.act_start.trigger()
    second = window.live_run_id
    assert second != first
    rate = window.run_status.rate_label
    assert rate.text() == " starting the engine…"  # nothing of the first run's speed or end stays
    qtbot.waitUntil(lambda: window.state == "running" and rows(window, second) > 0, timeout=RUN_TIMEOUT)
    qtbot.waitUntil(lambda: "ETA" in rate.text(), timeout=10_000)
    window.act_pause.trigger()
    qtbot.waitUntil(lambda: window.state == "paused", timeout=10_000)
    assert window.act_pause.text() == "Resume"
    stem = window.runs[second].path.stem
    assert rate.text().startswith(" paused at step") and "ETA" not in rate.text()
    assert window.runs[second].item.text() == f"{stem} — paused" and window.windowTitle() == f"{stem} (paused)"
    paused_at = rows(window, second)
    window.act_pause.trigger()
    qtbot.waitUntil(lambda: window.state == "running" and rows(window, second) > paused_at, timeout=10_000)
    window.act_ckpt.trigger()
    qtbot.waitUntil(lambda: any(e["kind"] == "checkpoint" for e in window.runs[second].data.events), timeout=10_000)
    window.act_stop.trigger()
    qtbot.waitUntil(lambda: window.state == "stopped" and window.engine_run.process is None, timeout=RUN_TIMEOUT)
    assert rate.text().startswith(" stopped after step") and "ETA" not in rate.text()
    kinds = [e["kind"] for e in open_run(window.runs[second].path).events()]
    assert {"paused", "resumed", "stopped"} <= set(kinds)
    assert open_run(window.runs[second].path).status == "stopped"

    # 3. open the first run again from its file
    path = window.runs[first].path
    window.runs[first].item.setSelected(True)
    window.close_selected_run()
    assert first not in window.runs
    assert window.open_run(path) == first
    qtbot.waitUntil(lambda: rows(window, first) == 60 and window.runs[first].data.status == "finished")
    assert str(path) in window.recent.paths("recent_runs")

    # 4. overlay: both runs ticked draw in the same plots, with a legend naming each run
    for entry in window.runs.values():
        entry.item.setCheckState(QtCore.Qt.CheckState.Checked)
    loss = window.plots.widgets[("core", "Loss")]
    assert len(loss.traces) == 2
    qtbot.waitUntil(lambda: loss.canvas.legend.item.isVisible())
    labels = loss.canvas.legend.labels
    assert any(t.startswith("first") for t in labels) and any(t.startswith("second") for t in labels)

    # 5. with every run closed the window says how to begin, and its title names no run
    while window.runs:
        next(iter(window.runs.values())).item.setSelected(True)
        window.close_selected_run()
    assert window.windowTitle() == "" and window.placeholder.isVisible()
    assert window.placeholder.text().startswith("Set up a run on the left")


def test_engine_crash_keeps_the_plots_and_opens_the_partial_run(qtbot, window):
    small_run(qtbot, window, "doomed", 100_000, plugins=False)
    window.act_start.trigger()
    run_id = window.live_run_id
    qtbot.waitUntil(lambda: window.state == "running" and rows(window, run_id) > 0, timeout=RUN_TIMEOUT)
    window.engine_run.process.kill()  # the engine process dies without closing its run file
    qtbot.waitUntil(lambda: window.state == "crashed", timeout=10_000)
    kept = rows(window, run_id)
    assert kept > 0 and window.banner.isVisible() and "died" in window.banner.text()
    assert window.run_status.rate_label.text().startswith(" crashed after step")
    assert window.plots.isVisible() and window.act_start.isEnabled()
    window._on_banner_link("reopen")
    qtbot.waitUntil(lambda: rows(window, run_id) >= kept and window.runs[run_id].data.status == "crashed",
                    timeout=10_000)
    # a crashed run can be continued exactly when it got as far as a checkpoint
    assert window.act_continue.isEnabled() == (latest_checkpoint(window.runs[run_id].path) is not None)


def test_a_stopped_run_continues_from_its_checkpoint_into_the_same_file(qtbot, window):
    small_run(qtbot, window, "again", 100_000, plugins=False)
    assert not window.act_continue.isEnabled()
    window.act_start.trigger()
    run_id = window.live_run_id
    qtbot.waitUntil(lambda: window.state == "running" and rows(window, run_id) > 0, timeout=RUN_TIMEOUT)
    assert not window.act_continue.isEnabled()
    window.act_stop.trigger()
    qtbot.waitUntil(lambda: window.engine_run.process is None and window.runs[run_id].data.status == "stopped",
                    timeout=RUN_TIMEOUT)
    # the step it stopped at, as the window read it (all rows are flushed before the file closes);
    # not from a second handle: HDF5 shares one file state between the handles a process holds
    ticks = window.poller.ticks
    qtbot.waitUntil(lambda: window.poller.ticks >= ticks + 2)
    stopped_at = int(window.runs[run_id].data.steps("train/loss")[-1])
    assert window.act_continue.isEnabled()
    window.act_continue.trigger()
    # the run stays on screen while the engine starts, and the progress goes on from its checkpoint
    assert window.state == "starting" and window.run_status.progress.value() == stopped_at
    shown = []
    qtbot.waitUntil(lambda: shown.append((window.plots.isVisible(), rows(window, run_id))) or (
        window.state == "running" and rows(window, run_id) > stopped_at + 20), timeout=RUN_TIMEOUT)
    assert all(visible and n >= stopped_at for visible, n in shown), shown[:5]
    assert window.live_run_id == run_id and len(window.runs) == 1
    window.act_stop.trigger()
    qtbot.waitUntil(lambda: window.engine_run.process is None and window.runs[run_id].data.status == "stopped",
                    timeout=RUN_TIMEOUT)
    shown = window.runs[run_id].data.steps("train/loss")
    assert list(shown) == list(range(1, len(shown) + 1))  # what the window plots: no gap, no repeat
    # read the file once the window has let go of it: HDF5 shares one file state between the
    # handles a process holds, so a second handle would see the poller's SWMR view
    path = window.runs[run_id].path
    window.runs[run_id].item.setSelected(True)
    window.close_selected_run()
    ticks = window.poller.ticks
    qtbot.waitUntil(lambda: window.poller.ticks >= ticks + 2)
    with open_run(path) as run:
        steps = run.series("train/loss")[0]
        assert [e["step"] for e in run.events() if e["kind"] == "resumed"] == [stopped_at]
    assert list(steps) == list(range(1, len(steps) + 1)) and len(steps) > stopped_at + 20


def test_drop_opens_runs_and_configs(qtbot, window, tmp_path):
    from gui.synthetic import write_synthetic_run
    run = write_synthetic_run(tmp_path / "dropped.h5", steps=300)
    window.open_paths([str(run)])
    run_id = str(run.resolve())
    qtbot.waitUntil(lambda: run_id in window.runs and rows(window, run_id) == 300)
    qtbot.waitUntil(lambda: ("demo", "Histogram") in window.plots.widgets)
    window.plots.pin_cursor(150)
    assert window.plots.widgets[("demo", "Histogram")].values.text() == "step 100"
    assert_readable_ticks(window)


def test_loading_a_file_with_an_unknown_key_says_what_was_ignored(qtbot, window, tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text('[optimizer]\nname = "adam"\nlearning_rate = 0.1\n')
    assert window.setup_panel.load_config(path)
    assert window.form.editors["optimizer.name"].get() == "adam"
    assert window.form.summary.isVisible()
    assert "optimizer.learning_rate" in window.form.summary.text()


def test_a_diverging_run_says_so(qtbot, window):
    small_run(qtbot, window, "boom", 2000, plugins=False)
    type_into(qtbot, window, "optimizer.lr", "1e12")
    qtbot.waitUntil(lambda: window.start_button.isEnabled())
    window.act_start.trigger()
    qtbot.waitUntil(lambda: window.state == "diverged" and window.engine_run.process is None, timeout=RUN_TIMEOUT)
    assert window.run_status.state_label.text() == "diverged" and window.banner.isVisible()
    assert "diverged" in window.banner.text()


def lightness(widget) -> tuple[float, float]:
    """(median, brightest) grey level of a widget's picture: its background and its text."""
    import numpy as np
    from PySide6 import QtGui
    img = widget.grab().toImage().convertToFormat(QtGui.QImage.Format.Format_Grayscale8)
    a = np.frombuffer(img.constBits(), np.uint8, img.sizeInBytes()).reshape(img.height(), img.bytesPerLine())
    a = a[:, :img.width()]
    return float(np.median(a)), float(a.max())


def test_a_live_theme_switch_recolours_headings_and_legends(qtbot, window, tmp_path):
    from gui.synthetic import write_synthetic_run
    from gui.views import THEMES
    for seed in range(2):  # two runs overlaid: the plots have legends
        window.open_run(write_synthetic_run(tmp_path / f"r{seed}.h5", steps=200, seed=seed))
    loss = lambda: window.plots.widgets.get(("core", "Loss"))  # noqa: E731
    qtbot.waitUntil(lambda: loss() is not None and len(loss().traces) == 2 and bool(loss().canvas.legend.labels))
    for mode in ("light", "dark", "light"):
        window.apply_theme(mode)
        qtbot.wait(50)
        background, text = lightness(window.plots.headers[0])
        assert (background < 90 and text > 170) if mode == "dark" else (background > 200 and text > background - 1)
        if mode == "dark":
            assert lightness(window.plots.headers[0])[1] - background > 100  # the heading reads
        fg = THEMES[mode]["fg"]
        assert [fg in label.item.toHtml() for _, label in loss().canvas.legend.item.items] == \
            [True] * len(loss().canvas.legend.labels)


def test_shortcuts_theme_and_window_state_are_remembered(qtbot, window, tmp_path):
    shortcuts = {a.text(): a.shortcut().toString() for a in
                 (window.act_start, window.act_pause, window.act_stop, window.act_ckpt, window.act_open)}
    assert shortcuts == {"Start": "Ctrl+R", "Pause": "Ctrl+P", "Stop": "Ctrl+.", "Checkpoint now": "Ctrl+K",
                         "Open run…": "Ctrl+O"}
    from PySide6 import QtGui, QtWidgets
    window_color = lambda: QtWidgets.QApplication.palette().color(QtGui.QPalette.ColorRole.Window)  # noqa: E731
    window.apply_theme("dark")
    assert window_color().lightness() < 80
    assert window.plots.widgets == {} or all(w.canvas.theme["bg"] == "#1e1f22" for w in window.plots.widgets.values())
    window.apply_theme("light")
    assert window_color().lightness() > 200
    window.resize(window.width(), 480)
    window.smoothing_slider.setValue(42)
    window.shutdown()
    settings = QtCore.QSettings(str(tmp_path / "settings.ini"), QtCore.QSettings.Format.IniFormat)
    again = MainWindow(settings=settings, runs_dir=tmp_path / "runs")
    qtbot.addWidget(again)
    try:
        assert again.size().height() == 480 and again.smoothing_slider.value() == 42
        assert again.theme_mode == "light"
    finally:
        again.shutdown()


def test_export_report_of_the_shown_run(qtbot, window, tmp_path):
    from html.parser import HTMLParser

    from gui.synthetic import write_synthetic_run
    run = write_synthetic_run(tmp_path / "shown.h5", steps=200)
    run_id = window.open_run(run)
    qtbot.waitUntil(lambda: rows(window, run_id) == 200)
    assert window.act_export.isEnabled() and window.target_run().path == run.resolve()
    out = window.export_report(window.target_run().path, tmp_path / "shown.html")
    text = out.read_text()
    HTMLParser().feed(text)
    assert out == tmp_path / "shown.html" and "data:image/png;base64," in text  # plots embedded
    assert (tmp_path / "shown.json").is_file()


PYTHON_MODEL = """import torch.nn as nn


def make(input_shape, n_classes, width=16):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, n_classes))
"""


def test_a_python_models_options_survive_load_edit_start_and_save(qtbot, window, tmp_path):
    from engine.models import build_model
    (tmp_path / "mymodel.py").write_text(PYTHON_MODEL)
    path = tmp_path / "py.toml"
    path.write_text('[run]\nname = "py"\nsteps = 5\neval_every = 5\n\n[model]\nname = "python:mymodel.py:make"\n'
                    'width = 48\n')
    assert window.setup_panel.load_config(path)
    (key, value, _), = window.form.model_options.rows
    assert (key.text(), value.text()) == ("width", "48") and not key.isHidden()
    value.setText("40")  # edited in the form
    qtbot.waitUntil(lambda: window.form.config is not None and window.start_button.isEnabled())
    window.act_start.trigger()
    run_id = window.live_run_id
    qtbot.waitUntil(lambda: window.state == "finished", timeout=RUN_TIMEOUT)
    saved = tmp_path / "saved.toml"
    assert window.setup_panel.save_config(saved)
    cli = RunConfig.from_toml(saved)
    with open_run(window.runs[run_id].path) as run:
        trained, env = run.config["model"], run.meta
    assert trained == cli.sections["model"] == {"name": "python:mymodel.py:make", "width": 40}
    model = build_model(cli.sections["model"], env["input_shape"], env["n_classes"], tmp_path)
    assert env["parameters"] == sum(p.numel() for p in model.parameters()) == 64 * 40 + 40 + 40 * 10 + 10


def test_the_settings_to_fix_note_does_not_push_the_form_down(qtbot, window):
    name = window.form.editors["run.name"].input
    before = name.mapTo(window, QtCore.QPoint(0, 0))
    type_into(qtbot, window, "optimizer.lr", "-1")
    qtbot.waitUntil(window.form.summary.isVisible)
    assert name.mapTo(window, QtCore.QPoint(0, 0)) == before


def test_export_asks_which_run_when_several_are_shown(qtbot, window, tmp_path, monkeypatch):
    from PySide6 import QtWidgets

    from gui.synthetic import write_synthetic_run
    paths = [write_synthetic_run(tmp_path / f"{name}.h5", steps=50, name=name) for name in ("alpha", "beta")]
    for p in paths:
        window.open_run(p)
    asked, written = [], []
    monkeypatch.setattr(QtWidgets.QInputDialog, "getItem",
                        lambda parent, title, label, items, *a: asked.append(items) or (items[1], True))
    monkeypatch.setattr(QtWidgets.QFileDialog, "getSaveFileName", lambda *a, **k: (str(tmp_path / "r.html"), ""))
    monkeypatch.setattr(window, "export_report", lambda run, out: written.append((run, out)))
    window.export_report_dialog()
    assert asked == [["alpha (alpha.h5)", "beta (beta.h5)"]]
    assert written == [(paths[1].resolve(), str(tmp_path / "r.html"))]
    window.runs[str(paths[0].resolve())].item.setSelected(True)  # a selected run is not asked about
    window.export_report_dialog()
    assert len(asked) == 1 and written[-1][0] == paths[0].resolve()


def test_help_shows_the_usage_the_run_file_format_and_every_shortcut(qtbot, window):
    window.show_help("Shortcuts")
    dialog = window.help_dialog
    qtbot.addWidget(dialog)
    pages = {dialog.tabs.tabText(i): dialog.tabs.widget(i).toPlainText() for i in range(dialog.tabs.count())}
    assert "Set-up and use: two commands" in pages["Using TrainDx"]
    assert "/series/<name>" in pages["The run file"] and "SWMR" in pages["The run file"]
    for action in (window.act_start, window.act_pause, window.act_stop, window.act_ckpt, window.act_open,
                   window.act_export, window.act_continue, window.act_help):
        assert action.shortcut().toString() in pages["Shortcuts"], action.text()
    assert dialog.tabs.tabText(dialog.tabs.currentIndex()) == "Shortcuts"
    dialog.close()


def test_the_events_table_shows_whole_messages(qtbot):
    from PySide6 import QtCore, QtGui

    from gui.window.findings import EventsTable, breakable
    table = EventsTable()
    qtbot.addWidget(table)
    table.resize(320, 300)
    table.show()
    qtbot.waitExposed(table)
    long_path = "/runs/a-very-long-run-name-20261201-224947.ckpt/step_00000500.pt"
    events = [{"step": 0, "kind": "started", "message": "training for 1500 steps"},
              {"step": 500, "kind": "checkpoint", "message": long_path},
              {"step": 812, "kind": "plugin_error", "message": "sharpness: RuntimeError: " + "much to say " * 8}]
    table.show_events(events)
    qtbot.wait(20)
    metrics = QtGui.QFontMetrics(table.font())
    for row, e in enumerate(events):
        width = table.columnWidth(2) - 8  # the cell's text margins
        needed = metrics.boundingRect(QtCore.QRect(0, 0, width, 10_000), QtCore.Qt.TextFlag.TextWordWrap,
                                      breakable(e["message"])).height()
        assert table.rowHeight(row) >= needed, (row, table.rowHeight(row), needed)
        assert table.item(row, 2).toolTip() == e["message"]
    assert table.rowHeight(2) > 2 * table.rowHeight(0)  # wrapped over several lines, not cut
