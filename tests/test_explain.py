"""Explain a step: what a run file knows about one step, ranked, from the engine and every plugin.
(The planted known answer — the first spike of the opposing-signals example names the planted pair —
is in test_opposing_signals_plugin.py, beside the run it needs.)"""
import json

import numpy as np

import pytest

from conftest import tiny_config
from engine import open_run, run_training
from engine.cli import main
from engine.explain import explain, run_spikes, spike_findings
from engine.plugin import Finding
from gui.synthetic import write_synthetic_run

ALL = {"sharpness": {"every": 25}, "calibration": {}, "oscillation": {}, "error_slices": {}}


@pytest.fixture(scope="module")
def smooth_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("explain") / "smooth.h5"
    run_training(tiny_config(run={"steps": 150, "eval_every": 50}, plugins=ALL), path)
    return path


def test_a_run_without_spikes_says_there_were_none(smooth_run, capsys):
    with open_run(smooth_run) as run:
        assert run_spikes(run) == [] and list(run.series("train/loss_spike")[0]) == []
        result = explain(run)
        assert result.step == 150 and result.spike is None
        assert result.summary.startswith("Step 150 (the run has no loss spikes): ")
        (finding,) = spike_findings(run)
    assert finding.severity == "ok" and finding.value == 0 and finding.message.startswith("The training loss had 0 spikes")
    assert main(["explain", str(smooth_run), "--step", "100"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Step 100 (the run has no loss spikes): ")


def test_each_item_carries_its_number_and_the_step_it_was_measured_at(smooth_run):
    with open_run(smooth_run) as run:
        result = explain(run, 110)
        by_plugin = {}
        for e in result.evidence:
            by_plugin.setdefault(e.plugin, []).append(e)
            assert e.text[0].isupper() and f"{e.step:,}" in e.text and e.series in run.names(), e
            assert 0 <= e.weight <= 1
        assert {"core", "sharpness", "calibration"} <= set(by_plugin)
        loss = next(e for e in by_plugin["core"] if e.series == "train/loss")
        assert loss.step == 110 and loss.value == pytest.approx(float(run.series("train/loss")[1][109]))
        lam = by_plugin["sharpness"][0]
        assert lam.step == 100  # the measurement at or before the step (every 25, and the first step)
        ece = by_plugin["calibration"][0]
        assert ece.step == 100 and ece.value == pytest.approx(100 * float(run.row_at("calibration/ece", 100)[1]))
    weights = [e.weight for e in result.evidence]
    assert weights == sorted(weights, reverse=True)  # ranked


def test_the_nearest_spike_and_files_written_before_spike_events(tmp_path, capsys):
    """A file without train/loss_spike (older, or written by hand): spikes are found again from the
    training loss; --nearest-spike snaps to the one closest to --step."""
    path = write_synthetic_run(tmp_path / "s.h5", steps=400, demo=False)
    with open_run(path) as run:
        spikes = run_spikes(run)
        assert spikes[0]["step"] == 201 and spikes[0]["ratio"] > 10  # the planted one (and noise spikes later)
        assert explain(run, 150, nearest_spike=True).step == 201
        assert explain(run, 150).step == 150
        result = explain(run)
        assert result.summary.startswith(f"Loss spike at step 201 ({spikes[0]['ratio']:.3g}× the running median)")
    assert main(["explain", str(path), "--step", "190", "--nearest-spike", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["step"] == 201 and printed["spikes"][0]["step"] == 201
    assert {e["plugin"] for e in printed["evidence"]} == {"core"}


class BetweenFlushes:
    """A live run file read between two series' flushes: the spike's row is there, the last rows of
    the loss (its own among them) not yet."""

    config: dict = {}

    def names(self):
        return ["train/loss", "train/loss_spike"]

    def series(self, name):
        if name == "train/loss":
            return np.arange(1, 101), np.full(100, 0.5)
        return np.array([60, 103]), np.array([3.0, 2.5])

    def views(self):
        return {"core": []}


def test_a_spike_whose_loss_row_is_not_read_yet_waits_for_the_next_read():
    assert [s["step"] for s in run_spikes(BetweenFlushes())] == [60]
    assert explain(BetweenFlushes(), nearest_spike=True, step=99).step == 60


def test_an_analysis_that_fails_to_explain_hides_nothing_else(smooth_run, monkeypatch):
    from plugins.calibration.plugin import CalibrationPlugin

    def broken(cls, run, step):
        raise RuntimeError("no reliability rows")
    with open_run(smooth_run) as run:
        whole = explain(run, 100)
        monkeypatch.setattr(CalibrationPlugin, "explain", classmethod(broken))
        result = explain(run, 100)
    said = [e for e in result.evidence if e.plugin == "calibration"]
    assert [e.text for e in said] == ["The analysis could not explain this step: no reliability rows"]
    assert [e for e in result.evidence if e.plugin != "calibration"] == \
        [e for e in whole.evidence if e.plugin != "calibration"]


def test_the_last_step_of_a_cosine_schedule_reads_as_its_numbers(tmp_path):
    """At lr = 0 there is no edge-of-stability threshold; an unchanged value is not said to fall."""
    path = tmp_path / "cosine.h5"
    run_training(tiny_config(run={"steps": 150, "eval_every": 50}, optimizer={"schedule": "cosine"},
                             plugins=ALL), path)
    with open_run(path) as run:
        result = explain(run, 150)
    texts = {e.plugin + ":" + e.series: e.text for e in result.evidence}
    assert texts["core:lr"].startswith("Learning rate 0 at step 150, down from ")
    assert "no threshold: the learning rate was 0" in texts["sharpness:sharpness/lambda_max"]
    for e in result.evidence:
        assert "inf" not in e.text and "0.00×" not in e.text, e.text
        for went, sign in (("rose", 1), ("fell", -1)):
            if f" {went} " in e.text and "points" in e.text:
                change = float(e.text.split("(")[-1].split(" points")[0]) if "(" in e.text else None
                assert change is None or change * sign > 0, e.text


def test_every_analysis_states_its_findings_number_as_the_value_column_shows_it(tmp_path):
    """The default config's five analyses (shortened): each finding's sentence holds its number
    exactly as the report's value column and the findings panel print it, unit included."""
    import tomllib
    from conftest import ROOT, assert_reads_as_stated
    from gui.window.findings import compute_findings
    cfg = tomllib.loads((ROOT / "assets/examples/digits-mlp.toml").read_text())
    cfg["run"].update(steps=400, threads=1)
    path = tmp_path / "five.h5"
    assert run_training(cfg, path) == "finished"
    found = compute_findings(type("State", (), {"is_interruption_requested": lambda self: False})(), str(path))
    assert {f["plugin"] for f in found} >= {"core", "sharpness", "calibration", "oscillation", "opposing_signals",
                                            "error_slices"}
    for f in found:
        assert_reads_as_stated(Finding(f["plugin"], f["severity"], f["message"], f["step"], f["value"], f["unit"]))
