"""The report's Spikes section: one entry per loss spike (the largest MAX_SPIKES, in step order) with
exactly the summary and evidence ``engine.explain.explain`` gives at its step, the same in the HTML,
the PDF and the JSON; a run without spikes says so by the detector's rule; evidence is escaped."""
import json
import shutil
import subprocess

import numpy as np
import pytest
from test_report import HOSTILE, Page, assert_self_contained, export, page_of

from engine import open_run
from engine.explain import explain, run_spikes, spike_findings
from engine.plugin import Evidence, load_plugin_class
from engine.store import RunWriter

PLANTED = {200 + 150 * k: ratio for k, ratio in enumerate([2.0, 5.5, 3.0, 1.6, 4.5, 2.5, 6.0, 1.8, 3.5, 5.0, 1.7,
                                                             4.0, 3.2])}  # step: loss / running median
STEPS = 2200
ECE_EVERY = 100


def spiky_run_file(path):
    """A finished run written by hand: a slowly decaying, slightly noisy training loss with the
    PLANTED spikes (one step each; no train/loss_spike series, so the report finds them again by
    the default rule), a constant learning rate, a gradient norm, and calibration's ECE every
    ECE_EVERY steps, so an installed plugin adds its evidence."""
    rng = np.random.default_rng(0)
    steps = np.arange(1, STEPS + 1)
    loss = (0.2 + np.exp(-steps / 800)) * rng.lognormal(0, 0.01, STEPS)
    for step, ratio in PLANTED.items():
        loss[step - 1] = ratio * np.median(loss[step - 51:step - 1])
    w = RunWriter(path, json.dumps({"config": {"run": {"name": "spiky", "steps": STEPS}}}))
    for name in ("train/loss", "lr", "grad_norm", "calibration/ece"):
        w.declare_series(name)
    w.write_plugin_info("core", "Training", "", (), [{"kind": "line", "title": "Loss", "series": ["train/loss"],
                                                       "help": "", "options": {}}])
    w.write_plugin_info("calibration", "Calibration", "", (), [])
    w.start_swmr()
    w.append_many("train/loss", steps, loss)
    w.append_many("lr", steps, np.full(STEPS, 0.1))
    w.append_many("grad_norm", steps, 3 * loss)
    evals = steps[steps % ECE_EVERY == 0]
    w.append_many("calibration/ece", evals, 0.05 + 0.02 * np.sin(evals / 300))
    w.close("finished")
    return path


@pytest.fixture(scope="module")
def spiky(tmp_path_factory):
    return spiky_run_file(tmp_path_factory.mktemp("spiky") / "spiky.h5")


@pytest.fixture(scope="module")
def spiky_html(spiky, tmp_path_factory):
    return export(spiky, tmp_path_factory.mktemp("spiky-html") / "report.html")


def expected_rows(run, step: int) -> list[list[str]]:
    """The evidence table of a spike as ``explain`` says it: the analysis by its section's title
    (the engine's own curves: "Training curves"), text, value, step."""
    from gui.report_model import fmt_number
    titles = {**run.plugin_titles(), "core": "Training curves"}
    return [[titles[e.plugin], e.text, fmt_number(e.value, e.unit), f"{e.step:,}"] for e in explain(run, step).evidence]


def spike_section(page: Page) -> tuple[list[str], list[list[str]]]:
    """The heading ids of the Spikes section, and the rows of its evidence tables (headers dropped)."""
    ids = page.ids[page.ids.index("spikes"):]
    ids = ids[:next(i for i, name in enumerate(ids) if name.startswith("plugin-") or name == "events")]
    rows = [[c.strip() for c in r] for r in page.tables.get("evidence", []) if r[0] != "analysis"]
    return ids, rows


def test_the_largest_spikes_are_explained_in_step_order_and_the_rest_named(spiky, spiky_html):
    from gui.report_model import MAX_SPIKES
    with open_run(spiky) as run:
        spikes = run_spikes(run)
        assert [s["step"] for s in spikes] == sorted(PLANTED)  # every planted spike, and nothing else
        largest = sorted(sorted(spikes, key=lambda s: -s["ratio"])[:MAX_SPIKES], key=lambda s: s["step"])
        left_out = sorted(set(PLANTED) - {s["step"] for s in largest})
        expected = [row for s in largest for row in expected_rows(run, s["step"])]
    assert len(left_out) == len(PLANTED) - MAX_SPIKES == 3
    page = page_of(spiky_html)
    ids, rows = spike_section(page)
    assert ids == ["spikes"] + [f"spike-{s['step']}" for s in largest]
    assert rows == expected  # each spike's evidence, in explain's order, nothing more
    assert {r[0] for r in rows} == {"Training curves", "Calibration"}  # titles, not plugin ids
    text = page.all_text
    for s in largest:
        assert f"Step {s['step']:,} (×{s['ratio']:.1f})" in text
    assert f"The training loss had {len(PLANTED)} spikes." in text
    assert f"{len(left_out)} smaller ones are left out here (steps {', '.join(f'{s:,}' for s in left_out)})" in text


def test_each_spike_says_exactly_what_explain_says(spiky, spiky_html):
    page = page_of(spiky_html)
    doc = json.loads(spiky_html.with_suffix(".json").read_text())
    with open_run(spiky) as run:
        for entry in doc["spikes"]["explained"]:
            got = explain(run, entry["step"])
            assert entry["summary"] == got.summary and got.summary in page.all_text
            assert entry["evidence"] == json.loads(json.dumps(got.to_dict()["evidence"]))
            assert entry["ratio"] == got.spike["ratio"]
    assert doc["spikes"]["total"] == len(PLANTED) and len(doc["spikes"]["explained"]) == 10
    assert doc["spikes"]["left_out_steps"] == sorted(set(PLANTED) - {e["step"] for e in doc["spikes"]["explained"]})


def test_the_spike_findings_stay_as_they_are(spiky, spiky_html):
    rows = [r[2].strip() for r in page_of(spiky_html).tables["findings"][1:]]
    with open_run(spiky) as run:
        assert all(f.message in rows for f in spike_findings(run))


def test_a_run_without_spikes_says_so_by_the_detectors_rule(tmp_path):
    steps = np.arange(1, 301)
    flat = tmp_path / "smooth.h5"
    w = RunWriter(flat, json.dumps({"config": {"run": {"name": "smooth", "steps": len(steps)}}}))
    w.declare_series("train/loss")
    w.write_plugin_info("core", "Training", "", (), [])
    w.start_swmr()
    w.append_many("train/loss", steps, np.exp(-steps / 100.0))  # a smooth decay: no spike
    w.close("finished")
    out = export(flat, tmp_path / "smooth.html")
    page = page_of(out)
    with open_run(flat) as run:
        assert run_spikes(run) == []
        (none,) = spike_findings(run)
    ids, rows = spike_section(page)
    assert ids == ["spikes"] and rows == []
    assert none.message in page.all_text and none.message.startswith("The training loss had 0 spikes")
    doc = json.loads(out.with_suffix(".json").read_text())["spikes"]
    assert doc == {"total": 0, "none": none.message, "left_out_steps": [], "explained": []}


def test_evidence_and_summary_are_escaped(spiky, tmp_path, monkeypatch):
    calibration = load_plugin_class("calibration")
    hostile = [Evidence("calibration", f"planted {HOSTILE}", 300, 1.5, "<u>units</u>", 0.9, f"a phrase {HOSTILE}",
                        "calibration/ece")]
    monkeypatch.setattr(calibration, "explain", classmethod(lambda cls, run, step: hostile))
    out = export(spiky, tmp_path / "h.html")
    raw = out.read_text(encoding="utf-8")
    page = Page(raw)
    assert_self_contained(page)
    _, rows = spike_section(page)
    assert ["Calibration", f"planted {HOSTILE}", "1.5 <u>units</u>", "300"] in rows
    assert f"a phrase {HOSTILE}" in page.all_text  # the summary, which joins the phrases
    assert HOSTILE not in raw and "&lt;script&gt;" in raw


def test_the_pdf_has_the_same_spikes(spiky, tmp_path):
    if not shutil.which("pdftotext"):
        pytest.skip("poppler-utils missing (./dev installs it; apt-get install -y poppler-utils)")
    out = export(spiky, tmp_path / "s.pdf")
    text = subprocess.run(["pdftotext", str(out), "-"], capture_output=True, text=True, check=True).stdout
    lines = [line.strip() for line in text.splitlines()]
    doc = json.loads(out.with_suffix(".json").read_text())["spikes"]
    heads = ["Spikes"] + [f"Step {e['step']:,} (×{e['ratio']:.1f})" for e in doc["explained"]]
    at = [lines.index(h) for h in heads]  # each heading on its own line, in order
    assert at == sorted(at)


def test_the_reports_loss_plot_marks_the_spikes_the_engine_found(tmp_path):
    """The Loss view marks spikes from ``train/loss_spike`` (an option, not one of its series): the
    report must read that series too."""
    from engine.session import CORE_VIEWS
    from gui.report import plot_drawer
    from gui.report_html import Figure
    from gui.report_model import gather
    path = tmp_path / "marked.h5"
    steps = np.arange(1, 401)
    w = RunWriter(path, json.dumps({"config": {"run": {"name": "marked", "steps": 400}}}))
    for name in ("train/loss", "train/loss_spike"):
        w.declare_series(name)
    w.write_plugin_info("core", "Training", "", (), [v.to_dict() for v in CORE_VIEWS[:1]])
    w.start_swmr()
    w.append_many("train/loss", steps, np.where(np.isin(steps, [150, 300]), 3.0, 1.0))
    w.append_many("train/loss_spike", np.array([150, 300]), np.array([3.0, 3.0]))
    w.close("finished")
    with open_run(path) as run:
        report = gather(run)
        plot = next(p for s in report.sections for p in s.plots if p.view["title"] == "Loss")
        draw = plot_drawer(run, report, lambda *_: None)
        marks = draw(Figure(plot, ""), 600, 300, lambda frame, canvas: canvas.drawn("0|spikes"))
    assert marks is not None and [int(p.data()) for p in marks.points()] == [150, 300]
