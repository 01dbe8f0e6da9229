"""Explain a step in the window: spike markers on the Loss plot, the Explain panel (the same content
as ``traindx explain``), its links to the step and the plot, and every way of asking for it."""
import tomllib

import pytest

pytest.importorskip("pytestqt")

from PySide6 import QtCore, QtWidgets  # noqa: E402

from conftest import ROOT  # noqa: E402
from engine import open_run, run_training  # noqa: E402
from engine.explain import explain, run_spikes  # noqa: E402
from gui.window.explain_panel import explanation_html  # noqa: E402

LOSS = ("core", "Loss")


@pytest.fixture(scope="module")
def spiky_run(tmp_path_factory):
    """The planted opposing-signals example, shortened: loss spikes, and sharpness measured at them."""
    cfg = tomllib.loads((ROOT / "assets" / "examples" / "opposing-signals.toml").read_text())
    cfg["run"].update(steps=900, eval_every=300, threads=1)
    cfg["plugins"]["sharpness"].update(trace=False, slices="off", batch_every=0)
    path = tmp_path_factory.mktemp("spiky") / "run.h5"
    assert run_training(cfg, path) == "finished"
    with open_run(path) as run:
        spikes = [s["step"] for s in run_spikes(run)]
    assert len(spikes) >= 2, spikes  # the panel's spike-to-spike buttons need two
    return path, spikes


def shown(qtbot, window, path):
    """Open the run and wait until the Loss plot has drawn its spike markers and the findings are in
    (a finished run's findings arriving later would refresh the panel's explanation)."""
    run_id = window.open_run(path)
    qtbot.waitUntil(lambda: run_id in window.findings, timeout=20_000)
    qtbot.waitUntil(lambda: LOSS in window.plots.widgets, timeout=10_000)
    loss = window.plots.widgets[LOSS]
    window.plots.ensureWidgetVisible(loss)
    qtbot.waitUntil(lambda: loss.canvas.drawn("0|spikes") is not None and
                    len(loss.canvas.drawn("0|spikes").points()) >= 2, timeout=10_000)
    return run_id, loss


def marker_position(loss, i):
    """Where the i-th spike marker is on screen (viewport pixels) and its step."""
    point = loss.canvas.drawn("0|spikes").points()[i]
    scene = loss.canvas.plotItem.vb.mapViewToScene(point.pos())
    return loss.canvas.mapFromScene(scene), int(point.data())


def explained(qtbot, window, request_before):
    panel = window.explain_panel
    qtbot.waitUntil(lambda: panel.shown_request == panel.request > request_before, timeout=10_000)
    qtbot.waitUntil(lambda: window.tasks.pool.activeThreadCount() == 0, timeout=10_000)
    return panel.result


def test_spike_markers_sit_on_the_loss_curve_at_the_runs_spikes(qtbot, window, spiky_run):
    path, spikes = spiky_run
    run_id, loss = shown(qtbot, window, path)
    points = loss.canvas.drawn("0|spikes").points()
    data = window.runs[run_id].data
    assert [int(p.data()) for p in points] == spikes
    for p in points:
        step = int(p.data())
        at = list(data.steps("train/loss")).index(step)
        assert p.pos().x() == step and p.pos().y() == pytest.approx(data.values("train/loss")[at])
    assert "loss spike" in loss.canvas.legend.labels
    loss.set_cursor(spikes[0])
    assert "loss spike ×" in loss.values.text()
    loss.set_cursor(spikes[0] + 1)
    assert "loss spike" not in loss.values.text()


def test_clicking_a_spike_marker_explains_it_as_the_cli_does(qtbot, window, spiky_run):
    path, spikes = spiky_run
    _, loss = shown(qtbot, window, path)
    before = window.explain_panel.request
    pos, step = marker_position(loss, 1)
    qtbot.mouseClick(loss.canvas.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=pos)
    result = explained(qtbot, window, before)
    with open_run(path) as run:
        expected = explain(run, step).to_dict()
    assert result["step"] == step == spikes[1] and result["spike"]["step"] == step
    assert result["summary"] == expected["summary"] and result["evidence"] == expected["evidence"]
    assert window.plots.cursor == step and window.plots.cursor_pinned
    assert window.side_tabs.currentWidget() is window.explain_panel
    text = window.explain_panel.body.toPlainText()
    assert result["summary"] in text
    for e in result["evidence"]:
        assert e["text"] in text
    assert "Opposing signals · step" in text  # items are titled by their analysis, not its id


def test_evidence_links_move_the_cursor_and_scroll_to_the_plot(qtbot, window, spiky_run):
    path, spikes = spiky_run
    shown(qtbot, window, path)
    before = window.explain_panel.request
    window.explain_step(None, spikes[0])
    result = explained(qtbot, window, before)
    lam = next(i for i, e in enumerate(result["evidence"]) if e["series"] == "sharpness/lambda_max")
    target = window.plots.show_series("sharpness/lambda_max")
    window.plots.verticalScrollBar().setValue(0)  # the sharpness plots are below the fold
    qtbot.waitUntil(lambda: target.visibleRegion().isEmpty())
    window.explain_panel.body.anchorClicked.emit(QtCore.QUrl(f"item:{lam}"))
    assert window.plots.cursor == result["evidence"][lam]["step"] and window.plots.cursor_pinned
    qtbot.waitUntil(lambda: not target.visibleRegion().isEmpty())
    assert "border" in target.styleSheet()  # flashed, then back to normal
    qtbot.waitUntil(lambda: target.styleSheet() == "", timeout=3000)


def test_ctrl_i_explains_the_cursor_step_or_else_the_first_spike(qtbot, window, spiky_run):
    path, spikes = spiky_run
    shown(qtbot, window, path)
    panel = window.explain_panel
    before = panel.request
    window.act_explain.trigger()  # no cursor yet: the run's first spike, as `traindx explain RUN`
    assert explained(qtbot, window, before)["step"] == spikes[0]
    window.plots.pin_cursor(123)
    before = panel.request
    qtbot.keyClick(window, QtCore.Qt.Key.Key_I, QtCore.Qt.KeyboardModifier.ControlModifier)
    result = explained(qtbot, window, before)
    assert result["step"] == 123 and result["spike"] is None
    assert panel.heading.text().endswith("step 123")


def test_spike_buttons_and_spike_links_walk_the_runs_spikes(qtbot, window, spiky_run):
    path, spikes = spiky_run
    shown(qtbot, window, path)
    panel = window.explain_panel
    before = panel.request
    window.explain_step(None, spikes[0])
    explained(qtbot, window, before)
    assert not panel.prev_button.isEnabled() and panel.next_button.isEnabled()
    before = panel.request
    qtbot.mouseClick(panel.next_button, QtCore.Qt.MouseButton.LeftButton)
    assert explained(qtbot, window, before)["step"] == spikes[1]
    assert window.plots.cursor == spikes[1] and panel.prev_button.isEnabled()
    before = panel.request
    panel.body.anchorClicked.emit(QtCore.QUrl(f"spike:{spikes[0]}"))
    assert explained(qtbot, window, before)["step"] == spikes[0]


def test_right_click_a_step_or_double_click_a_finding_to_explain_it(qtbot, window, spiky_run):
    path, spikes = spiky_run
    run_id, loss = shown(qtbot, window, path)
    vb = loss.canvas.plotItem.vb
    pos = loss.canvas.mapFromScene(vb.mapViewToScene(QtCore.QPointF(300, vb.viewRange()[1][0] * 0.5 +
                                                                    vb.viewRange()[1][1] * 0.5)))
    before = window.explain_panel.request
    qtbot.mouseClick(loss.canvas.viewport(), QtCore.Qt.MouseButton.RightButton, pos=pos)
    menu = next(m for m in QtWidgets.QApplication.topLevelWidgets() if isinstance(m, QtWidgets.QMenu) and m.isVisible())
    action = menu.actions()[0]
    assert action.text().startswith("Explain step ")
    step = int(action.text().removeprefix("Explain step ").replace(",", ""))
    assert abs(step - 300) <= 2
    action.trigger()
    menu.close()
    assert explained(qtbot, window, before)["step"] == step
    findings = window.findings_list
    row = next(i for i in range(findings.count())
               if findings.item(i).data(QtCore.Qt.ItemDataRole.UserRole) == spikes[1])
    before = window.explain_panel.request
    findings.itemDoubleClicked.emit(findings.item(row))
    assert explained(qtbot, window, before)["step"] == spikes[1]


def test_closing_the_run_clears_the_panel(qtbot, window, spiky_run):
    path, spikes = spiky_run
    run_id, _ = shown(qtbot, window, path)
    before = window.explain_panel.request
    window.explain_step(None, spikes[0])
    explained(qtbot, window, before)
    window.runs_panel.run_list.setCurrentItem(window.runs[run_id].item)
    window.close_selected_run()
    assert window.explain_panel.result is None and "Click a spike marker" in window.explain_panel.body.toPlainText()


def test_the_panel_escapes_text_and_says_when_a_run_has_no_spikes():
    result = {"step": 5, "summary": "Step 5 <b>x</b>", "spike": None, "spikes": [], "titles": {},
              "evidence": [{"plugin": "core", "text": "a <script>", "step": 5, "value": 1.5, "unit": "",
                            "weight": 0.0, "phrase": "", "series": "train/loss"}]}
    page = explanation_html(result)
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;x" in page
    assert "The run has no loss spikes." in page
    assert "Training curves · step 5" in page
