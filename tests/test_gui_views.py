"""The view renderer: every declared kind draws, live and static, and what it draws is the data."""
import csv
import io

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6 import QtCore, QtGui, QtWidgets  # noqa: E402

from engine.store import open_run  # noqa: E402
from gui.reduce import smooth  # noqa: E402
from gui.rundata import RunData  # noqa: E402
from gui.synthetic import CORE_VIEWS, DEMO_VIEWS, write_synthetic_run  # noqa: E402
from gui.views import PlotOptions, Trace, ViewWidget, render_view_image  # noqa: E402


@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    return write_synthetic_run(tmp_path_factory.mktemp("views") / "syn.h5", steps=2000, eval_every=100)


@pytest.fixture(scope="module")
def data(run_path):
    with open_run(run_path) as run:
        return RunData.from_reader(run)


def widget(qtbot, view, data, **opts):
    w = ViewWidget(view)
    qtbot.addWidget(w)
    w.resize(600, 300)
    w.show()
    qtbot.waitExposed(w)
    w.opts = PlotOptions(**opts)
    w.set_traces([Trace(data, "#4c8fe0", "syn")])
    return w


def item(w, prefix):
    """The drawn item whose key starts with ``prefix``."""
    found = [it for k, it in w.canvas._items.items() if k.startswith(prefix)]
    assert len(found) == 1, (prefix, list(w.canvas._items))
    return found[0]


@pytest.mark.parametrize("view", CORE_VIEWS + DEMO_VIEWS, ids=lambda v: v["kind"] + ":" + v["title"])
def test_every_view_kind_renders_png_and_svg(qapp, run_path, view):
    with open_run(run_path) as run:
        png = render_view_image(view, run, step=1000, width=400, height=250)
        svg = render_view_image(view, run, fmt="svg", width=400, height=250)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 3000
    assert b"<svg" in svg[:500] and b"</svg>" in svg


def test_render_rejects_unknown_format(qapp, data):
    with pytest.raises(ValueError, match="fmt: got 'gif'"):
        render_view_image(CORE_VIEWS[0], data, fmt="gif")


def test_long_curve_is_reduced_per_pixel_and_keeps_its_spike(qtbot):
    d = RunData("long")
    steps = np.arange(1, 200_001)
    y = np.ones(len(steps))
    y[123_456] = 10.0
    d.extend("train/loss", steps, y)
    w = widget(qtbot, {"kind": "line", "title": "Loss", "series": ["train/loss"]}, d)
    x_drawn, y_drawn = item(w, "0|train/loss|None|raw").getData()
    assert len(x_drawn) <= 2 * w.canvas.columns() and y_drawn.max() == 10.0


def test_smoothing_draws_faint_raw_under_the_smoothed_curve(qtbot, data):
    w = widget(qtbot, CORE_VIEWS[0], data, smoothing=0.9)
    x, sm = item(w, "0|train/loss|None|smooth").getData()
    assert item(w, "0|train/loss|None|raw").opts["pen"].color().alpha() < 255
    # 2,000 rows fit the plot's pixel columns twice only if the plot is wide; compare where drawn raw
    full = smooth(data.values("train/loss"), 0.9)
    if len(x) == len(full):
        np.testing.assert_allclose(sm, full)
    else:
        assert sm.max() <= full.max() + 1e-12 and sm.min() >= full.min() - 1e-12


def test_cursor_marks_the_step_and_lists_values(qtbot, data):
    w = widget(qtbot, CORE_VIEWS[0], data)
    w.set_cursor(300)
    assert w.canvas.cursor_line.isVisible() and w.canvas.cursor_line.value() == 300
    expected = data.values("train/loss")[299]
    assert w.values.text().startswith("step 300: train/loss ") and f"{expected:.4g}" in w.values.text()
    assert f"val/loss {data.values('val/loss')[2]:.4g}" in w.values.text()


def test_row_view_shows_the_row_at_the_cursor_step(qtbot, data):
    view = next(v for v in DEMO_VIEWS if v["kind"] == "histogram")
    w = widget(qtbot, view, data)
    assert "latest, step 2000" in w.values.text()
    w.set_cursor(750)  # evaluations every 100 steps: the row written at 700
    assert w.values.text() == "step 700"
    x, y = item(w, "0|demo/heat").getData()
    np.testing.assert_allclose(y, data.row_at("demo/heat", 700)[1])


def test_table_view_fills_cells_from_the_json_row(qtbot, data):
    w = widget(qtbot, next(v for v in DEMO_VIEWS if v["kind"] == "table"), data)
    w.set_cursor(400)
    assert w.canvas.rowCount() == 2 and w.canvas.item(1, 0).text() == "step 400"


def test_log_axis_counts_hidden_non_positive_values(qtbot):
    d = RunData("neg")
    d.extend("grad_norm", np.arange(1, 11), np.array([1, 2, 0, -1, 5, 6, 7, 8, 9, 10.0]))
    w = widget(qtbot, {"kind": "line", "title": "g", "series": ["grad_norm"]}, d, log_y=True)
    w.set_cursor(None)
    assert "2 values ≤ 0 not shown" in w.values.text()
    _, y = item(w, "0|grad_norm|None|raw").getData()
    np.testing.assert_allclose(y[[0, 1]], np.log10([1, 2]))
    assert np.isnan(y[[2, 3]]).all()


def test_wall_time_axis_uses_the_wall_time_series(qtbot, data):
    w = widget(qtbot, {"kind": "line", "title": "lr", "series": ["lr"]}, data, x_mode="wall_time")
    x, _ = item(w, "0|lr|None|raw").getData()
    assert x[0] == pytest.approx(0.01) and x[-1] == pytest.approx(20.0)


def test_csv_export_has_every_row_at_full_resolution(qtbot, data):
    w = widget(qtbot, CORE_VIEWS[0], data)
    rows = list(csv.DictReader(io.StringIO(w.export_bytes("csv").decode())))
    loss = [r for r in rows if r["series"] == "train/loss"]
    assert len(loss) == 2000 and len(rows) == 2000 + 20
    assert float(loss[1000]["value"]) == data.values("train/loss")[1000]
    assert w.export_bytes("png")[:4] == b"\x89PNG" and b"<svg" in w.export_bytes("svg")[:500]


def test_hovering_a_plot_reports_the_step_under_the_mouse(qtbot, data):
    w = widget(qtbot, CORE_VIEWS[0], data)
    vb = w.canvas.plotItem.vb
    qtbot.waitUntil(lambda: vb.viewRange()[0][1] > 1500)  # auto-range settles on the next paint
    pos = QtCore.QPointF(w.canvas.mapFromScene(vb.mapViewToScene(QtCore.QPointF(1000, 1.0))))
    move = QtGui.QMouseEvent(QtCore.QEvent.Type.MouseMove, pos, w.canvas.viewport().mapToGlobal(pos),
                             QtCore.Qt.MouseButton.NoButton, QtCore.Qt.MouseButton.NoButton,
                             QtCore.Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(w.hovered, timeout=2000) as blocker:
        QtWidgets.QApplication.sendEvent(w.canvas.viewport(), move)
    assert abs(blocker.args[0] - 1000) <= 10


def test_overlay_draws_one_curve_per_run_with_a_legend(qtbot, data, tmp_path):
    other = write_synthetic_run(tmp_path / "b.h5", steps=500, demo=False, seed=3)
    with open_run(other) as run:
        d2 = RunData.from_reader(run)
    w = widget(qtbot, CORE_VIEWS[0], data)
    w.set_traces([Trace(data, "#4c8fe0", "a"), Trace(d2, "#f28e2b", "b")])
    assert item(w, "0|train/loss|None|raw") is not item(w, "1|train/loss|None|raw")
    # a colour per series and a dash pattern per run: two lines and two runs make four entries
    assert w.canvas.legend.labels == ["train/loss", "val/loss", "a", "b"]


def test_legend_moves_to_the_corner_the_curves_leave_free(qtbot):
    import pyqtgraph as pg
    from gui.views import PlotCanvas
    from gui.views.legend import line_sample
    canvas = PlotCanvas()
    qtbot.addWidget(canvas)
    canvas.resize(400, 300)
    canvas.show()
    qtbot.waitExposed(canvas)
    x = np.linspace(0, 1, 200)

    def draw(y):
        for _ in range(2):  # the second pass sees the view fitted to the new data
            canvas.begin()
            for name, scale in (("a", 1.0), ("b", 0.9)):
                canvas.get(name, pg.PlotDataItem).setData(x, y * scale)
                canvas.legend.entry(name, name, lambda: line_sample("#4c8fe0"))
            canvas.end()
            canvas.plotItem.vb.autoRange(padding=0)
        return canvas.legend.item.opts["offset"]

    assert draw(1 - x) == (-4, 4)  # a falling loss leaves the top right free: the default corner
    assert draw(x) == (4, 4)  # a rising curve ends there: the legend moves to the top left
    assert draw(np.where(x < 0.5, 1.0, 0.0)) == (-4, 4)  # a step down frees the top right again


def reliability_data() -> tuple[RunData, np.ndarray, np.ndarray]:
    """Two rows of quantile-like bins (unequal widths, one empty bin) at steps 100 and 200."""
    edges = np.array([0.0, 0.3, 0.55, 0.7, 0.85, 0.95, 1.0])
    conf = np.array([0.2, 0.45, 0.62, np.nan, 0.9, 0.97])
    acc = np.array([0.1, 0.5, 0.52, np.nan, 0.8, 0.99])
    count = np.array([10.0, 20, 30, 0, 60, 80])
    first = np.column_stack([edges[:-1], edges[1:], conf, acc, count, acc - 0.05, acc + 0.01])
    later = first.copy()
    later[:, 3] = np.clip(later[:, 2] + 0.01, 0, 1)  # nearly calibrated
    d = RunData("rel")
    d.extend("calibration/reliability", np.array([100, 200]), np.stack([first, later]))
    return d, first, later


def test_reliability_draws_gap_bars_over_a_confidence_histogram(qtbot):
    d, first, later = reliability_data()
    view = {"kind": "reliability", "title": "Reliability", "series": ["calibration/reliability"]}
    w = widget(qtbot, view, d)
    top, lower = w.canvas.plotItem, w.canvas.share_plot
    assert lower.vb.linkedView(0) is top.vb  # the histogram shares the reliability plot's x axis
    assert top.sceneBoundingRect().height() > 1.5 * lower.sceneBoundingRect().height() > 0
    assert top.sceneBoundingRect().top() < lower.sceneBoundingRect().top()  # histogram underneath

    for step, row in ((None, later), (150, first)):  # the latest row, then the row at the cursor
        w.set_cursor(step)
        full = row[row[:, 4] > 0]
        conf, acc, count = full[:, 2], full[:, 3], full[:, 4]
        bars = item(w, "0|calibration/reliability|bars")
        gap = item(w, "0|calibration/reliability|gap")
        assert bars in top.items and gap in top.items
        np.testing.assert_allclose(bars.opts["height"], acc)
        np.testing.assert_allclose(gap.opts["x0"], full[:, 0])  # unequal bin widths, from lower/upper
        np.testing.assert_allclose(gap.opts["x1"], full[:, 1])
        np.testing.assert_allclose(gap.opts["height"], np.abs(conf - acc))
        np.testing.assert_allclose(gap.opts["y0"], np.minimum(conf, acc))

        hist = item(w, "0|calibration/reliability|share")
        assert hist in lower.items and hist not in top.items
        np.testing.assert_allclose(hist.opts["height"], count / count.sum())
        np.testing.assert_allclose(hist.opts["x0"], full[:, 0])
        means = {"accuracy": count @ acc / count.sum(), "confidence": count @ conf / count.sum()}
        for what, mean in means.items():
            line = item(w, f"0|calibration/reliability|mean_{what}")
            assert line in lower.items
            x, _ = line.getData()
            np.testing.assert_allclose(x, [mean, mean])
        labels = w.canvas.share_legend.labels
        assert labels == [f"accuracy {means['accuracy']:.3f}", f"avg confidence {means['confidence']:.3f}"]
    assert means["accuracy"] != pytest.approx(means["confidence"], abs=1e-3)  # the lines are told apart
    assert w.canvas.legend.labels == ["accuracy", "gap"]
    assert w.canvas.share_plot.getAxis("left").labelText == "share of samples"


def test_a_log_axis_under_a_decade_gets_round_values_at_their_places(qtbot):
    from gui.views.axis import drawn_ticks
    from gui.views.export import settle_axes
    d = RunData("t")
    steps = np.arange(50, 1550, 50)
    d.extend("calibration/temperature", steps, 1.0 + 0.8 * (1 - np.exp(-steps / 400)))  # 1.1 … 1.8
    w = widget(qtbot, {"kind": "line", "title": "Temperature", "series": ["calibration/temperature"],
                       "options": {"log_y": True}}, d)
    settle_axes(w.canvas)
    axis = w.canvas.plotItem.getAxis("left")
    labels = [text for text, _ in drawn_ticks(axis)]
    assert len(labels) >= 2, labels  # pyqtgraph alone labels only 10^k here: one tick, "1", or none
    lo, hi = axis.range
    for spacing, values in axis.tickValues(lo, hi, axis.height()):
        for v, text in zip(values, axis.tickStrings(values, 1.0, spacing)):
            assert float(text) == pytest.approx(10 ** v, rel=1e-9) and lo <= v <= hi  # each at its value


@pytest.mark.parametrize("log_y", [False, True])
def test_a_flat_series_with_round_off_noise_gets_short_tick_labels(qtbot, log_y):
    """A constant learning rate read back as 0.3 and 0.30000000000000004 once auto-ranged to a
    span of 1e-16: its labels ran 17 digits long."""
    from gui.views.axis import drawn_ticks
    from gui.views.export import settle_axes
    d = RunData("t")
    steps = np.arange(1, 501)
    d.extend("lr", steps, np.where(steps % 7 == 0, 0.30000000000000004, 0.3))
    w = widget(qtbot, {"kind": "line", "title": "Learning rate", "series": ["lr"], "options": {"log_y": log_y}}, d)
    settle_axes(w.canvas)
    labels = [text for text, _ in drawn_ticks(w.canvas.plotItem.getAxis("left"))]
    assert len(labels) >= 2 and all(len(t) <= 6 for t in labels), labels
    d.extend("lr", np.arange(501, 1001), np.linspace(0.3, 0.0, 500))  # then a decay: the range follows the data
    w.redraw(force=True)
    if not log_y:
        qtbot.waitUntil(lambda: np.ptp(w.canvas.plotItem.vb.viewRange()[1]) > 0.3)


def test_a_heatmap_names_its_rows_whole_and_shows_its_colour_scale(qtbot):
    from gui.views.axis import drawn_ticks
    from gui.views.export import settle_axes
    d = RunData("t")
    values = np.random.default_rng(0).uniform(0.02, 0.3, size=(200, 3))
    d.extend("oscillation/flip_rate", np.arange(1, 201), values)
    names = ["features.1.weight_long_name", "features.3", "head"]
    w = widget(qtbot, {"kind": "heatmap", "title": "Reversals", "series": ["oscillation/flip_rate"],
                       "options": {"y_labels": names}}, d)
    settle_axes(w.canvas)
    axis = w.canvas.plotItem.getAxis("left")
    ticks = drawn_ticks(axis)
    assert [t for t, _ in ticks] == names
    assert all(rect.left() >= 0 for _, rect in ticks)  # none cut at the plot's left edge
    assert w.canvas.colour_bar.levels() == pytest.approx((values.min(), values.max()))


def test_a_row_that_holds_nothing_says_so(qtbot):
    from gui.views.rows import NONE_FOUND
    d = RunData("t")
    d.extend("x/table", np.array([10]), [{"columns": ["group", "size"], "rows": []}])
    d.extend("x/images", np.array([10]), np.full((1, 4, 6, 6), np.nan))
    d.extend("x/recent", np.array([10]), np.full((1, 8, 3), np.nan))
    table = widget(qtbot, {"kind": "table", "title": "T", "series": ["x/table"]}, d)
    assert table.canvas.rowCount() == 1 and table.canvas.item(0, 0).text() == NONE_FOUND
    assert table.canvas.columnSpan(0, 0) == 2
    for kind, name in (("image_grid", "x/images"), ("curve", "x/recent")):
        w = widget(qtbot, {"kind": kind, "title": kind, "series": [name], "options": {"captions": ["#1"]}}, d)
        assert w.canvas.empty.isVisible() and w.canvas.empty.text() == NONE_FOUND, kind
        assert "step 10" in w.values.text()
    d.extend("x/images", np.array([20]), np.ones((1, 4, 6, 6)))  # a later row with images: drawn
    grid = widget(qtbot, {"kind": "image_grid", "title": "g", "series": ["x/images"]}, d)
    assert not grid.canvas.empty.isVisible()


def test_several_runs_get_a_colour_per_metric_and_a_dash_per_run(qtbot):
    names = [f"calibration/{m}" for m in ("ece", "ace", "classwise_ece", "debiased_l2", "mce")]
    runs = []
    for seed in range(2):
        d = RunData(f"run{seed}")
        for i, name in enumerate(names):
            d.extend(name, np.arange(50, 1550, 50), np.full(30, 0.1 * (i + 1) + 0.01 * seed))
        runs.append(Trace(d, ("#4c8fe0", "#f28e2b")[seed], f"run{seed}"))
    w = widget(qtbot, {"kind": "line", "title": "Calibration error", "series": names, "options": {}}, runs[0].data)
    w.set_traces(runs)
    pens = {(t, n): item(w, f"{t}|{n}|None|raw").opts["pen"] for t in range(2) for n in names}
    for n in names:  # the same metric: one colour, a dash pattern per run
        assert pens[0, n].color() == pens[1, n].color() and pens[0, n].style() != pens[1, n].style()
    assert len({pens[0, n].color().name() for n in names}) == len(names)  # every metric its own colour
    assert w.canvas.legend.labels == ["ece", "ace", "classwise_ece", "debiased_l2", "mce", "run0", "run1"]


def scene_rect(item):
    return item.mapRectToScene(item.boundingRect())


def test_the_legend_fits_the_plot_hides_no_drawn_point_and_the_menu_says_so(qtbot):
    """Five metrics of two runs: one high curve (MCE) and four low ones, over the whole run."""
    names = [f"calibration/{m}" for m in ("ece", "ace", "classwise_ece", "debiased_l2", "mce")]
    rng = np.random.default_rng(0)
    runs = []
    for seed in range(2):
        d = RunData(f"digits-{seed}")
        for name in names:
            base = 0.7 if name.endswith("mce") else 0.02
            d.extend(name, np.arange(50, 1550, 50), base + 0.1 * rng.random(30))
        runs.append(Trace(d, ("#4c8fe0", "#f28e2b")[seed], f"digits-{seed}"))
    w = widget(qtbot, {"kind": "line", "title": "Calibration error", "series": names, "options": {}}, runs[0].data)
    w.resize(480, 240)
    w.set_traces(runs)
    qtbot.waitUntil(lambda: w.canvas.legend.item.isVisible())
    for _ in range(3):  # the auto-range follows the data (and the legend's headroom) after a paint
        w.redraw(force=True)
        QtWidgets.QApplication.processEvents()
    legend, vb = scene_rect(w.canvas.legend.item), scene_rect(w.canvas.plotItem.vb)
    assert vb.contains(legend)  # not cut
    for it in w.canvas.plotItem.listDataItems():
        if it is w.canvas.legend.headroom_item:
            continue
        x, y = it.getData()
        points = [it.mapToScene(QtCore.QPointF(a, b)) for a, b in zip(x, y)]
        assert not [p for p in points if legend.contains(p)]  # it hides no curve
    assert w.legend_action.isChecked()
    w.legend_action.setChecked(False)
    assert not w.canvas.legend.item.isVisible()


def test_reliability_legends_fit_their_panels_and_the_note_keeps_clear_of_the_title(qtbot):
    d, first, later = reliability_data()
    other, _, _ = reliability_data()
    view = {"kind": "reliability", "title": "Reliability diagram", "series": ["calibration/reliability"]}
    w = widget(qtbot, view, d)
    w.resize(420, 320)
    w.set_traces([Trace(d, "#4c8fe0", "digits-mlp"), Trace(other, "#f28e2b", "digits-adam")])
    QtWidgets.QApplication.processEvents()
    w.redraw(force=True)
    for legend in (w.canvas.legend, w.canvas.share_legend):
        assert legend.item.isVisible() and scene_rect(legend.plot.vb).contains(scene_rect(legend.item))
    assert w.canvas.legend.labels == ["digits-mlp", "digits-adam", "gap"]
    assert w.values.text() == "latest, step 200"
    assert w.title.geometry().right() < w.values.geometry().left()
