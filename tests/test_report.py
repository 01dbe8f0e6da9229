"""The analysis report: real small runs (finished, diverged, killed), a planted hostile run file,
HTML parsed with html.parser, PDF rasterised with poppler's pdftoppm and read back with pdftotext."""
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import unicodedata
from html.parser import HTMLParser

import numpy as np
import pytest
from conftest import ROOT, assert_reads_as_stated, tiny_config

from engine import open_run, run_training
from engine.plugin import Finding
from engine.store import RunWriter

HOSTILE = "<script>alert(1)</script>"
SECTION_ORDER = ["title", "findings", "configuration", "environment", "config", "curves", "curves-numbers",
                 "curves-plots", "spikes"]


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
class Page(HTMLParser):
    """Everything the tests look at in a page: tags with attributes, heading ids, tables, text."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.ids: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.text: list[str] = []
        self._table = self._row = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag in ("h1", "h2", "h3") and "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("class", ""), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._row.append("")

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._row:
            self._row[-1] += data

    @property
    def all_text(self) -> str:
        return "".join(self.text)


def plugin_run(path, **sections):
    cfg = tiny_config(run={"name": HOSTILE, "steps": 40, "eval_every": 20},
                      plugins={"calibration": {"on": "eval"},
                               "sharpness": {"every": 20, "probe_size": 128, "slices": "2d", "slice_steps": 7,
                                             "batch_every": 10}}, **sections)
    status = run_training(cfg, path)
    return status


def hostile_run_file(path):
    """A run file written by hand: a plugin that is not installed, a table view with hostile class
    names, hostile config strings and event messages, and series with known extremes."""
    config = {"run": {"name": HOSTILE, "steps": 4}, "data": {"source": "npz:<img src=x onerror=alert(2)>.npz"}}
    w = RunWriter(path, json.dumps({"config": config}))
    w.set_attr("environment", json.dumps({"device": "<b>cpu</b>", "torch": "2.x", "total_steps": 4}))
    w.declare_series("train/loss", (), "float64", "", "loss <i>per batch</i>")
    w.declare_series("fake/value", (), "float64", "nats", "planted values")
    w.declare_series("fake/pair", (2,), "float64", "", "two columns")
    w.declare_series("fake/classes", (), "json", "", "a table")
    views = [{"kind": "line", "title": "Value <u>plot</u>", "series": ["fake/value"], "help": "<em>help</em>",
              "options": {}},
             {"kind": "table", "title": "Classes", "series": ["fake/classes"], "help": "", "options": {}}]
    w.write_plugin_info("core", "Training", "", (), [{"kind": "line", "title": "Loss", "series": ["train/loss"],
                                                       "help": "", "options": {}}])
    w.write_plugin_info("fake", "Fake <plugin>", "", (), views)
    w.start_swmr()
    for step, (loss, value, pair) in enumerate(zip([2.0, 1.0, 1.5, 0.5], [3.0, -1.0, 7.0, 2.0],
                                                   [[1, 9], [4, 0], [2, 2], [3, 5]]), start=1):
        w.append("train/loss", step, loss)
        w.append("fake/value", step, value)
        w.append("fake/pair", step, pair)
    w.append("fake/classes", 4, json.dumps({"columns": ["class", "<th>"],
                                            "rows": [[HOSTILE, 0.5], ["<img src=y onerror=alert(3)>", 1]]}))
    w.event(0, "started", "begin <iframe src=evil>")
    w.event(4, "<kind>", HOSTILE)
    w.close("finished")


def export(run, out, **kw):
    from gui.report import export_report
    return export_report(run, out, **kw)


def page_of(path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


def assert_self_contained(page: Page):
    """No script, no event handler, nothing fetched from outside the file."""
    assert not [t for t, _ in page.tags if t in ("script", "iframe", "object", "embed", "link")]
    for tag, attrs in page.tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        for key in ("src", "href"):
            if key in attrs:
                assert attrs[key].startswith(("data:image/png;base64,", "#")), (tag, attrs)


# ---------------------------------------------------------------------------------------------
# Fixtures: real runs, made once per module
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    path = tmp_path_factory.mktemp("finished") / "run.h5"
    assert plugin_run(path) == "finished"
    return path


@pytest.fixture(scope="module")
def finished_html(finished, tmp_path_factory):
    out = tmp_path_factory.mktemp("html") / "report.html"
    export(finished, out, smoothing=0.8)
    return out


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "hostile.h5"
    hostile_run_file(path)
    return path


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------
def test_html_has_every_section_in_order(finished, finished_html):
    page = page_of(finished_html)
    plugin_ids = [i for i in page.ids if i.startswith("plugin-") and i.count("-") == 1]
    assert page.ids[:len(SECTION_ORDER)] == SECTION_ORDER
    assert plugin_ids == ["plugin-calibration", "plugin-sharpness"]
    assert page.ids[-1] == "events"
    assert page.ids.index("plugin-sharpness") < page.ids.index("events")
    assert "weight 0.8" in page.all_text  # the smoothing is stated
    assert_self_contained(page)


def test_findings_table_holds_every_plugins_findings_most_severe_first(finished, finished_html):
    from engine.plugin import load_plugin_class
    page = page_of(finished_html)
    rows = page.tables["findings"][1:]
    with open_run(finished) as run:
        expected = [f.message for name in ("calibration", "sharpness")
                    for f in load_plugin_class(name).findings(run)]
    assert expected and set(expected) <= {r[2] for r in rows}
    assert rows[-1][0].strip() in ("ok", "info") and any("finished all 40 steps" in r[2] for r in rows)
    rank = {"ok": 0, "info": 1, "warning": 2, "problem": 3}
    severities = [rank[r[0].strip()] for r in rows]
    assert severities == sorted(severities, reverse=True)


def test_plots_are_embedded_pngs_drawn_by_the_gui_renderer(finished, tmp_path, monkeypatch):
    import gui.views.export
    calls = []
    real = gui.views.export.rendered_view

    def recording(view, run, step=None, width=720, height=360, smoothing=0.0, theme="light"):
        calls.append((view["title"], smoothing))
        return real(view, run, step, width, height, smoothing, theme)

    monkeypatch.setattr(gui.views.export, "rendered_view", recording)
    out = export(finished, tmp_path / "r.html", smoothing=0.6)
    page = page_of(out)
    images = [a["src"] for t, a in page.tags if t == "img"]
    with open_run(finished) as run:
        declared = [v["title"] for views in run.views().values() for v in views if v["kind"] != "table"]
    assert sorted(t for t, _ in calls) == sorted(declared) and len(images) == len(declared)
    assert all(base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n" for src in images)
    smoothing = dict(calls)
    assert smoothing["Loss"] == 0.6 and smoothing["Calibration error"] == 0.0


def test_every_user_string_is_escaped(hostile, tmp_path):
    out = export(hostile, tmp_path / "h.html")
    raw = out.read_text(encoding="utf-8")
    page = Page(raw)
    assert_self_contained(page)
    text = page.all_text
    for s in (HOSTILE, "npz:<img src=x onerror=alert(2)>.npz", "<b>cpu</b>", "begin <iframe src=evil>", "<kind>",
              "<img src=y onerror=alert(3)>", "Fake <plugin>", "<th>", "loss <i>per batch</i>", "<em>help</em>"):
        assert s in text, s  # shown as text, literally
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw and HOSTILE not in raw
    assert page.tables["view-table"][1][0] == HOSTILE


def test_report_text_is_included_escaped(hostile, tmp_path, monkeypatch):
    import gui.report_model

    class Planted:
        description = "planted <desc>"

        @classmethod
        def findings(cls, run):
            return [Finding("fake", "warning", "planted <finding>", 3, 7.0, "nats")]

        @classmethod
        def report_text(cls, run):
            return f"first paragraph {HOSTILE}\n\nsecond paragraph"

    monkeypatch.setattr(gui.report_model, "load_plugin_class", lambda name: Planted)
    page = page_of(export(hostile, tmp_path / "t.html"))
    assert_self_contained(page)
    assert f"first paragraph {HOSTILE}" in page.all_text and "second paragraph" in page.all_text
    assert ["warning", "Fake <plugin>", "planted <finding>", "3", "7 nats"] in \
        [[c.strip() for c in r] for r in page.tables["findings"]]


def test_key_numbers_and_json_match_the_planted_series(hostile, tmp_path):
    out = export(hostile, tmp_path / "k.html", json_path=tmp_path / "numbers.json")
    doc = json.loads((tmp_path / "numbers.json").read_text())
    fake = next(s for s in doc["sections"] if s["plugin"] == "fake")
    numbers = {n["series"]: n for n in fake["numbers"]}
    v = numbers["fake/value"]
    assert (v["last"], v["last_step"], v["min"], v["min_step"], v["max"], v["max_step"]) == (2, 4, -1, 2, 7, 3)
    p1 = numbers["fake/pair[1]"]
    assert (p1["min"], p1["min_step"], p1["max"], p1["max_step"]) == (0, 2, 9, 1)
    assert "fake/classes" not in numbers  # JSON rows are a table, not a number
    assert fake["findings"][0]["severity"] == "info" and "not installed" in fake["findings"][0]["message"]
    rows = page_of(out).tables["numbers"]
    assert ["fake/valueplanted values", "2 nats (4)", "-1 nats (2)", "7 nats (3)"] in \
        [[c.strip() for c in r] for r in rows]
    assert doc["run"]["status"] == "finished" and doc["smoothing"]["weight"] == 0.6
    assert [e["message"] for e in doc["events"]] == ["begin <iframe src=evil>", HOSTILE]


def test_diverged_run_says_so(tmp_path):
    path = tmp_path / "div.h5"
    cfg = tiny_config(optimizer={"lr": 50.0}, loss={"name": "mse"}, plugins={"calibration": {"on": "eval"}})
    assert run_training(cfg, path) == "diverged"
    with open_run(path) as run:
        diverged_at = next(e["step"] for e in run.events() if e["kind"] == "diverged")
    page = page_of(export(path, tmp_path / "div.html"))
    first = page.tables["findings"][1]
    assert first[0].strip() == "problem" and f"diverged at step {diverged_at}" in first[2]
    assert "diverged" in [r[2] for r in page.tables["events"][1:]]
    assert page.ids[-1] == "events"


def test_stopped_run_says_so(tmp_path):
    from engine.trainer import Control
    control = Control()
    control.stop()
    path = tmp_path / "stopped.h5"
    assert run_training(tiny_config(), path, control=control) == "stopped"
    doc = json.loads(export(path, tmp_path / "stopped.html").with_suffix(".json").read_text())
    assert doc["run"]["status"] == "stopped" and "stopped by request" in doc["findings"][0]["message"]


def test_killed_run_is_reported_as_crashed(tmp_path):
    out = tmp_path / "killed.h5"
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", str(ROOT / "assets/examples/digits-mlp.toml"),
                             "--out", str(out), "--set", "run.steps=1000000", "--set", "run.threads=1", "--quiet"],
                            cwd=ROOT)
    try:
        n, deadline = 0, time.time() + 60
        while time.time() < deadline and n < 20:
            time.sleep(0.3)
            try:
                with open_run(out) as run:
                    n = run.length("train/loss")
            except (OSError, KeyError):
                pass
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert n >= 20
    report = export(out, tmp_path / "killed.html")
    page = page_of(report)
    assert "crashed" in page.tables["findings"][1][2] and page.tables["findings"][1][0].strip() == "problem"
    doc = json.loads(report.with_suffix(".json").read_text())
    assert doc["run"]["status"] == "crashed" and doc["run"]["last_step"] >= n


def test_long_event_logs_are_trimmed_in_the_middle():
    from gui.report_model import MAX_EVENTS, trim_events
    events = [{"step": i} for i in range(MAX_EVENTS + 7)]
    shown, omitted = trim_events(events)
    assert len(shown) == MAX_EVENTS and omitted == 7
    assert shown[0]["step"] == 0 and shown[-1]["step"] == MAX_EVENTS + 6


@pytest.mark.parametrize("status,expected", [
    ("finished", ("ok", "finished all 10 steps")), ("stopped", ("info", "stopped by request after 10 of 50 steps")),
    ("diverged", ("problem", "diverged at step 11, after 10 of 50 steps: loss became nan")),
    ("failed", ("problem", "failed at step 11, after 10 of 50 steps: loss became nan")),
    ("crashed", ("problem", "crashed after 10 of 50 steps")), ("running", ("info", "still running"))])
def test_status_sentence(status, expected):
    from gui.report_model import status_finding
    events = [{"step": 11, "kind": "diverged" if status == "diverged" else "failed", "message": "loss became nan"}]
    f = status_finding(status, 10, 50, events)
    assert f.severity == expected[0] and expected[1] in f.message
    assert f.value == 10 and f.unit in ("steps", "of 50 steps")
    assert_reads_as_stated(f)


def test_findings_table_shows_each_findings_number_as_its_sentence_states_it(finished, finished_html):
    rows = [[c.strip() for c in r] for r in page_of(finished_html).tables["findings"][1:]]
    with_numbers = [(sentence, value) for _, _, sentence, _, value in rows if value != "—"]
    assert len(with_numbers) >= 5
    for sentence, value in with_numbers:
        assert sentence[0].isupper() and value in sentence, (value, sentence)


@pytest.mark.parametrize("value,unit,infinite,text", [
    (0.011375920008123042, "", "", "0.01138"), (12345.6, "", "", "12350"), (87.0, "% of the threshold", "",
                                                                            "87% of the threshold"),
    (1.3, "× the threshold", "", "1.3× the threshold"), (3.0, "of 24 measurements", "", "3 of 24 measurements"),
    (1500, "steps", "", "1500 steps"), (float("inf"), "", "none (lr = 0)", "none (lr = 0)"),
    (float("inf"), "", "", "inf"), (None, "%", "", "—")])
def test_numbers_are_printed_as_findings_state_them(value, unit, infinite, text):
    from gui.report_model import fmt_number
    assert fmt_number(value, unit, infinite) == text


# ---------------------------------------------------------------------------------------------
# PDF
# ---------------------------------------------------------------------------------------------
def _needs_poppler():
    if not shutil.which("pdftoppm") or not shutil.which("pdftotext"):
        pytest.skip("poppler-utils missing (./dev installs it; apt-get install -y poppler-utils)")


def _ink_fraction(png_path) -> float:
    from PySide6 import QtGui
    img = QtGui.QImage(str(png_path)).convertToFormat(QtGui.QImage.Format.Format_Grayscale8)
    a = np.frombuffer(img.constBits(), np.uint8, img.sizeInBytes()).reshape(img.height(), img.bytesPerLine())
    return float((a[:, :img.width()] < 200).mean())


@pytest.mark.parametrize("page_size,points", [("a4", "595 x 842"), ("letter", "612 x 792")])
def test_pdf_pages_are_the_right_size_and_none_is_blank(finished, tmp_path, page_size, points):
    _needs_poppler()
    out = export(finished, tmp_path / "r.pdf", page_size=page_size)
    info = subprocess.run(["pdfinfo", str(out)], capture_output=True, text=True, check=True).stdout
    assert points in info
    subprocess.run(["pdftoppm", "-r", "30", "-gray", "-png", str(out), str(tmp_path / "p")], check=True)
    pages = sorted(tmp_path.glob("p-*.png"))
    assert len(pages) >= 4
    assert all(_ink_fraction(p) > 0.01 for p in pages)
    text = subprocess.run(["pdftotext", "-layout", str(out), "-"], capture_output=True, text=True, check=True).stdout
    heads = ["Findings", "Configuration and environment", "Training curves", "Spikes", "Calibration",
             "Sharpness and the edge of stability", "Events"]
    lines = [unicodedata.normalize("NFKC", line).strip() for line in text.splitlines()]  # "ﬁ" ligatures
    at = [lines.index(h) if h in lines else -1 for h in heads]  # headings stand on their own line
    assert all(i >= 0 for i in at) and at == sorted(at), dict(zip(heads, at))
    assert HOSTILE in text and "page 1" in text


def test_pdf_splits_a_long_table_between_rows_with_its_header(tmp_path):
    _needs_poppler()
    from gui.report_html import Html, Table
    from gui.report_pdf import write_pdf
    rows = [f"<tr><td>row {i:03d}</td><td>value</td></tr>" for i in range(150)]
    parts = [Html("<h2>Heading</h2>", keep_with_next=True),
             Table('<tr><th width="50%">NAME</th><th width="50%">VALUE</th></tr>', rows)]
    n = write_pdf(parts, tmp_path / "t.pdf", "a4", "t", picture_for=None)
    text = subprocess.run(["pdftotext", str(tmp_path / "t.pdf"), "-"], capture_output=True, text=True,
                          check=True).stdout
    pages = text.split("\f")[:n]
    assert n >= 3 and all("NAME" in p for p in pages)
    assert [line for p in pages for line in p.split("\n") if line.startswith("row ")] == \
        [f"row {i:03d}" for i in range(150)]  # every row once, in order, none cut between pages


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------
def test_command_runs_headless_and_writes_html_and_json(hostile, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    out, numbers = tmp_path / "c.html", tmp_path / "c-numbers.json"
    proc = subprocess.run([sys.executable, "-m", "gui.report", str(hostile), "--out", str(out), "--json", str(numbers),
                           "--smoothing", "0.9"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "weight 0.9" in page_of(out).all_text and json.loads(numbers.read_text())["smoothing"]["weight"] == 0.9


def test_command_refuses_bad_arguments_naming_them(hostile, tmp_path, capsys):
    from gui.report import main
    assert main([str(hostile), "--out", str(tmp_path / "r.docx")]) == 2
    assert "out_path" in capsys.readouterr().err and not (tmp_path / "r.json").exists()
    assert main([str(tmp_path / "missing.h5"), "--out", str(tmp_path / "r.html")]) == 2
    assert "missing.h5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(hostile), "--out", str(tmp_path / "r.html"), "--smoothing", "1.5"])
    assert "--smoothing" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------
def _pdf_plot_size(page_mm: float) -> tuple[int, int]:
    from gui.report_pdf import DPI, FIGURE_ASPECT, MARGIN_MM
    width = (page_mm - 2 * MARGIN_MM) / 25.4 * DPI
    return round(width), round(round(width) * FIGURE_ASPECT)


@pytest.mark.parametrize("where", ["html", "pdf-a4", "pdf-letter"])
def test_every_report_plot_has_readable_tick_labels_on_both_axes(finished, where):
    """Drawn as the report draws them, at the report's sizes: each axis shows two labels or more,
    each whole inside the picture."""
    from gui.report import HTML_PLOT_SIZE
    from gui.rundata import RunData
    from gui.views.axis import drawn_ticks
    from gui.views.export import rendered_view
    size = {"html": HTML_PLOT_SIZE, "pdf-a4": _pdf_plot_size(210), "pdf-letter": _pdf_plot_size(215.9)}[where]
    with open_run(finished) as run:
        data = RunData.from_reader(run)
        views = [v for vs in run.views().values() for v in vs if v["kind"] not in ("table", "image_grid")]
    assert {"Learning rate", "Temperature", "Batch sharpness", "Loss"} <= {v["title"] for v in views}
    for view in views:
        with rendered_view(view, data, None, *size) as (frame, canvas):
            for plot in canvas.plots:
                for name in ("left", "bottom"):
                    axis = plot.getAxis(name)
                    ticks = drawn_ticks(axis)
                    assert len(ticks) >= 2, (view["title"], name, ticks)
                    for text, rect in ticks:
                        drawn = canvas.mapFromScene(axis.mapRectToScene(rect)).boundingRect()
                        assert canvas.rect().contains(drawn), (view["title"], name, text)


@pytest.fixture(scope="module")
def qat(tmp_path_factory):
    """Quantisation-aware training with the oscillation analysis: its heatmap has a row per layer."""
    path = tmp_path_factory.mktemp("qat") / "qat.h5"
    cfg = tiny_config(run={"steps": 30, "eval_every": 30},
                      model={"name": "cnn", "channels": [4, 8], "hidden": 16, "quantize": {"bits": 4}},
                      plugins={"oscillation": {"every": 5}})
    assert run_training(cfg, path) == "finished"
    return path


def _left_labels(frame, canvas) -> list[str]:
    from gui.views.axis import drawn_ticks
    return [text for text, _ in drawn_ticks(canvas.plotItem.getAxis("left"))]


@pytest.mark.parametrize("where", ["html", "pdf-a4"])
def test_the_oscillation_heatmap_names_its_layers(qat, where):
    """Drawn as the report draws it: one y label per layer, its name; the PDF's vector picture holds
    them as text."""
    import re

    from gui.report import HTML_PLOT_SIZE, plot_drawer, print_picture
    from gui.report_html import Figure
    from gui.report_model import gather
    size = HTML_PLOT_SIZE if where == "html" else _pdf_plot_size(210)
    with open_run(qat) as run:
        report = gather(run)
        draw = plot_drawer(run, report, lambda percent, text: None)
        plot = next(p for s in report.analyses for p in s.plots if p.view["kind"] == "heatmap")
        layers = plot.view["options"]["y_labels"]
        assert len(layers) >= 2 and sorted(draw(Figure(plot, ""), *size, _left_labels)) == sorted(layers)
        if where.startswith("pdf"):
            picture = draw(Figure(plot, ""), *size, print_picture)
            assert picture.fmt == "svg"
            assert set(layers) <= set(re.findall(r">\s*([^<>]*?)\s*</text>", picture.data.decode()))


def _scatter_of(n: int):
    from gui.rundata import RunData
    data = RunData("planted")
    data.extend("p/points", np.array([10]), np.random.default_rng(n).standard_normal((1, n, 3)))
    return data, {"kind": "scatter", "title": "Embedding", "series": ["p/points"], "help": "", "options": {}}


def test_a_dense_scatter_goes_to_the_pdf_as_a_print_resolution_picture():
    from PySide6 import QtGui

    from gui.report import DENSE_MARKS, PRINT_SCALE, print_picture
    from gui.views.export import rendered_view
    size = _pdf_plot_size(210)
    data, view = _scatter_of(3 * DENSE_MARKS)
    with rendered_view(view, data, None, *size) as (frame, canvas):
        picture = print_picture(frame, canvas)
        frame_size = (frame.width(), frame.height())
        assert len(_left_labels(frame, canvas)) >= 2
    image = QtGui.QImage.fromData(picture.data, "PNG")
    assert picture.fmt == "png" and (image.width(), image.height()) == tuple(PRINT_SCALE * s for s in frame_size)


def test_a_light_scatter_stays_vectors_with_each_point_drawn_as_a_shape():
    """Drawn from pyqtgraph's pixmap atlas, an SVG embeds the whole atlas once per point (every
    point showing every colour); in export mode each point is one shape."""
    from gui.report import DENSE_MARKS, print_picture
    from gui.views.export import rendered_view
    n = DENSE_MARKS // 4
    data, view = _scatter_of(n)
    with rendered_view(view, data, None, *_pdf_plot_size(210)) as (frame, canvas):
        picture = print_picture(frame, canvas)
    svg = picture.data.decode()
    assert picture.fmt == "svg"
    assert svg.count("<image") <= 1 and svg.count("<path") >= n  # at most the plot's background is a picture


def test_the_pdf_embeds_dense_plots_as_pictures_and_the_rest_as_vectors(tmp_path, monkeypatch):
    _needs_poppler()
    import gui.report
    from gui.synthetic import write_synthetic_run
    path = write_synthetic_run(tmp_path / "demo.h5", steps=300)  # its scatter view holds 50 points

    def print_ppi(pdf) -> list[str]:
        listing = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True, check=True).stdout
        return [line.split()[12] for line in listing.splitlines()[2:] if line.split()[2] == "image"]

    light = print_ppi(export(path, tmp_path / "light.pdf"))
    monkeypatch.setattr(gui.report, "DENSE_MARKS", 49)
    dense = print_ppi(export(path, tmp_path / "dense.pdf"))
    assert "288" not in light and dense.count("288") == 1  # only the scatter, at 3 × 96 dpi


def test_a_table_view_with_no_rows_says_so_as_the_window_does():
    from gui.report_html import table_view_blocks
    from gui.report_model import Plot
    from gui.rundata import NONE_FOUND
    view = {"kind": "table", "title": "Error slices", "series": ["error_slices/table"], "help": ""}
    empty = Plot(view, 0.0, {"series": "error_slices/table", "step": 1500, "columns": ["#", "slice"], "rows": [],
                             "omitted": 0})
    (block,) = table_view_blocks(empty)
    assert f"Latest row, step 1500: {NONE_FOUND}." in block.html
