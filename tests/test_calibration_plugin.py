"""The calibration plugin: what it logs at an evaluation, its findings on planted series, and a
short real training on digits read back from the run file."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import assert_reads_as_stated

from engine.plugin import Finding, View
from plugins.calibration import analysis
from plugins.calibration.plugin import SCALARS, CalibrationPlugin

N_BINS = 10


def make_plugin(n_bins: int = N_BINS, binning: str = "uniform") -> CalibrationPlugin:
    return CalibrationPlugin({"n_bins": n_bins, "binning": binning}, every=None, on="eval")


def eval_context(logits: torch.Tensor, labels: torch.Tensor, logged: dict, events: list, step: int = 40):
    return SimpleNamespace(step=step, logits=logits, labels=labels,
                           log=lambda name, value: logged.__setitem__(name, value),
                           event=lambda kind, message: events.append((kind, message)))


class FakeRun:
    """The slice of engine.open_run's reader that findings use."""

    def __init__(self, steps, **series):
        self._steps = np.asarray(steps, dtype=np.int64)
        self._series = {f"calibration/{k}": np.asarray(v, dtype=np.float64) for k, v in series.items()}

    def names(self):
        return list(self._series)

    def series(self, name):
        return self._steps, self._series[name]


# ---------------------------------------------------------------------------------------------
# Declarations
# ---------------------------------------------------------------------------------------------
def test_declares_every_series_it_logs_and_views_over_declared_series():
    plugin = make_plugin()
    declared = {s.name: s for s in plugin.series(run=None)}
    assert set(SCALARS) | {"reliability"} == set(declared)
    assert {"ece", "mce", "ace", "classwise_ece", "brier", "nll", "temperature",
            "ece_after_temperature"} <= set(declared)
    assert declared["reliability"].shape == (N_BINS, 7)
    views = plugin.views()
    assert all(isinstance(v, View) and v.help for v in views)
    assert {v.kind for v in views} == {"reliability", "line"}
    for v in views:
        assert all(name.startswith("calibration/") and name[len("calibration/"):] in declared for name in v.series)
    assert CalibrationPlugin.default_on == "eval"


# ---------------------------------------------------------------------------------------------
# on_eval
# ---------------------------------------------------------------------------------------------
def test_on_eval_logs_metrics_of_the_validation_logits():
    rng = np.random.default_rng(0)
    z = rng.normal(scale=3.0, size=(4_000, 5))
    y = np.argmax(z + rng.gumbel(size=z.shape), axis=1)  # calibrated at T = 1
    logged, events = {}, []
    make_plugin().on_eval(eval_context(torch.from_numpy(z * 2.0).float(), torch.from_numpy(y), logged, events))
    assert set(logged) == set(SCALARS) | {"reliability"} and not events
    assert logged["temperature"] == pytest.approx(2.0, rel=0.05)  # planted overconfidence
    assert logged["ece_after_temperature"] < logged["ece"]
    assert logged["mean_confidence"] > logged["accuracy"]
    expected = analysis.expected_calibration_error(z * 2.0, y, N_BINS, from_logits=True)
    assert logged["ece"] == pytest.approx(expected, abs=1e-5)  # float32 logits vs float64
    rows = logged["reliability"]
    assert rows.shape == (N_BINS, 7) and rows[:, 4].sum() == 4_000


def test_on_eval_skips_non_finite_logits_with_an_event():
    logged, events = {}, []
    logits = torch.tensor([[0.0, float("nan")], [1.0, 0.0]])
    make_plugin().on_eval(eval_context(logits, torch.tensor([0, 1]), logged, events))
    assert not logged and events[0][0] == "calibration_skipped"


# ---------------------------------------------------------------------------------------------
# Findings on planted series
# ---------------------------------------------------------------------------------------------
def test_findings_name_overconfidence_best_step_and_fixing_temperature():
    run = FakeRun([100, 200, 300, 400],
                  ece=[0.08, 0.015, 0.05, 0.09], mean_confidence=[0.6, 0.8, 0.9, 0.97],
                  accuracy=[0.7, 0.8, 0.85, 0.88], temperature=[0.7, 1.02, 1.5, 2.1],
                  ece_after_temperature=[0.02, 0.014, 0.02, 0.012])
    confidence, best, temperature = CalibrationPlugin.findings(run)
    assert all(isinstance(f, Finding) for f in (confidence, best, temperature))
    assert "overconfident" in confidence.message and confidence.severity == "warning"
    assert (confidence.value, confidence.unit, confidence.step) == (9, "%", 400)
    assert "mean confidence 97.0% against accuracy 88.0%" in confidence.message
    assert best.step == 200 and (best.value, best.unit) == (1.5, "%") and best.severity == "warning"
    assert "step 200" in best.message and "rose to 9%" in best.message
    assert (temperature.value, temperature.unit) == (1.2, "%") and "from 9% to 1.2%" in temperature.message
    for f in (confidence, best, temperature):
        assert_reads_as_stated(f)


def test_findings_for_an_underconfident_model_that_is_best_at_the_end():
    run = FakeRun([10, 20], ece=[0.2, 0.12], mean_confidence=[0.5, 0.6], accuracy=[0.7, 0.72],
                  temperature=[0.5, 0.6], ece_after_temperature=[0.05, 0.03])
    confidence, best, temperature = CalibrationPlugin.findings(run)
    assert "underconfident" in confidence.message and confidence.severity == "problem"
    assert best.step == 20 and best.severity == "ok"
    assert "sharpen" in temperature.message
    for f in (confidence, best, temperature):
        assert_reads_as_stated(f)


def test_a_temperature_that_would_not_lower_ece_is_not_said_to():
    # the temperature minimises NLL, so ECE after it can come out higher
    run = FakeRun([10], ece=[0.03], mean_confidence=[0.9], accuracy=[0.88], temperature=[1.4],
                  ece_after_temperature=[0.041])
    temperature = CalibrationPlugin.findings(run)[2]
    assert "not lower ECE (3% before, 4.1% after" in temperature.message and temperature.value == 4.1
    assert_reads_as_stated(temperature)


def test_no_findings_without_calibration_series():
    assert CalibrationPlugin.findings(SimpleNamespace(names=lambda: ["train/loss"])) == []


# ---------------------------------------------------------------------------------------------
# A real run on digits
# ---------------------------------------------------------------------------------------------
def test_short_digits_run_writes_series_and_findings(tmp_path):
    pytest.importorskip("engine.trainer")
    from engine import open_run, run_training

    config = {"run": {"seed": 0, "steps": 60, "eval_every": 20},
              "data": {"source": "digits", "batch_size": 64},
              "model": {"name": "mlp", "hidden": [32]},
              "optimizer": {"name": "sgd", "lr": 0.1},
              "loss": {"name": "cross_entropy"},
              "plugins": {"calibration": {"on": "eval", "n_bins": N_BINS}}}
    path = tmp_path / "run.h5"
    status = run_training(config, path)
    run = open_run(path)
    assert status == "finished", run.events()
    assert not [e for e in run.events() if e["kind"] == "plugin_error"]
    steps, ece = run.series("calibration/ece")
    assert list(steps) == [20, 40, 60] and ece.shape == (3,)
    for name in SCALARS:
        s, v = run.series(f"calibration/{name}")
        assert v.shape == (3,) and np.isfinite(v).all(), name
    _, rows = run.series("calibration/reliability")
    assert rows.shape == (3, N_BINS, 7)
    counts = rows[..., 4]
    assert (counts.sum(axis=1) == counts.sum(axis=1)[0]).all() and counts[0].sum() > 100
    for row, e in zip(rows, ece):  # the stored bins reproduce the stored ECE
        full = row[:, 4] > 0
        assert np.isnan(row[~full, 2:4]).all()
        weight = row[full, 4] / row[full, 4].sum()
        assert weight @ np.abs(row[full, 3] - row[full, 2]) == pytest.approx(e, abs=1e-12)
    assert (run.series("calibration/temperature")[1] > 0).all()
    assert {v["kind"] for v in run.views()["calibration"]} == {"reliability", "line"}
    findings = CalibrationPlugin.findings(run)
    assert len(findings) == 3 and findings[1].step in (20, 40, 60)
    # each finding read against the series it came from: the number it shows is the one it states
    percent = lambda fraction: float(f"{100 * fraction:.2g}")  # noqa: E731 - two significant digits
    confidence, best, temperature = findings
    assert (confidence.step, confidence.value) == (60, percent(ece[-1]))
    assert (best.step, best.value) == (steps[np.argmin(ece)], percent(ece.min()))
    assert temperature.value == percent(run.series("calibration/ece_after_temperature")[1][-1])
    assert f"T = {run.series('calibration/temperature')[1][-1]:.2f}" in temperature.message
    for f in findings:
        assert_reads_as_stated(f)
