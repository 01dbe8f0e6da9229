"""The sharpness plugin inside real (short) training runs, read back from the run file."""
import numpy as np
import pytest

from engine import open_run, run_training
from engine.errors import ConfigError
from engine.plugin import validate_plugin_table
from plugins.sharpness.budget import TimeBudget
from plugins.sharpness.plugin import SharpnessPlugin, batch_findings, edge_findings, trend_findings


def config(optimizer, plugin, steps=40, **sections):
    cfg = {"run": {"seed": 0, "steps": steps, "eval_every": steps, "threads": 1},
           "data": {"source": "digits", "batch_size": 64},
           "model": {"name": "mlp", "hidden": [16], "activation": "tanh"},
           "optimizer": optimizer, "loss": {"name": "cross_entropy"},
           "plugins": {"sharpness": {"budget": 0.0, **plugin}}}  # no time cap: steps are exact
    cfg.update(sections)
    return cfg


def train(tmp_path, cfg):
    path = tmp_path / "run.h5"
    assert run_training(cfg, path) == "finished"
    run = open_run(path)
    errors = [e["message"] for e in run.events() if e["kind"] == "plugin_error"]
    assert not errors, errors
    return run


@pytest.fixture(scope="module")
def full_batch_run(tmp_path_factory):
    """Full-batch GD with MSE at η = 0.2: the probe set and every batch are the whole training
    split, so the batch Hessian is the probe Hessian and the slice centre is the step's loss."""
    cfg = config({"name": "sgd", "lr": 0.2},
                 {"every": 10, "k": 2, "smallest": True, "batch_every": 5, "slices": "both",
                  "slice_steps": 5, "density": True, "snapshot_every": 50, "probe_batch": 400},
                 steps=100, data={"source": "digits", "batch_size": 100000}, loss={"name": "mse"})
    return train(tmp_path_factory.mktemp("full"), cfg)


def test_series_shapes_cadence_and_threshold(full_batch_run):
    run = full_batch_run
    steps, lam = run.series("sharpness/lambda_max")
    np.testing.assert_array_equal(steps, [1, *range(10, 101, 10)])
    assert lam.shape == (11, 2) and np.all(lam[:, 0] >= lam[:, 1])
    t_steps, thr = run.series("sharpness/threshold")
    np.testing.assert_allclose(thr, 2 / 0.2)
    b_steps, _ = run.series("sharpness/batch_sharpness")
    np.testing.assert_array_equal(b_steps, range(5, 101, 5))
    assert np.all(run.series("sharpness/converged")[1] == 1)
    n_hvp = run.series("sharpness/n_hvp")[1]
    assert np.all(n_hvp > 0) and np.all(n_hvp[1:] <= 2 * 40 + 4 + 4 * 30)


def test_batch_sharpness_lies_within_the_spectrum(full_batch_run):
    # Same data in batch and probe: gᵀHg/‖g‖² is a Rayleigh quotient of the measured Hessian.
    run = full_batch_run
    steps, lam = run.series("sharpness/lambda_max")
    _, lam_min = run.series("sharpness/lambda_min")
    b_steps, batch = run.series("sharpness/batch_sharpness")
    for s, bs in zip(b_steps, batch):
        if s in steps:
            i = list(steps).index(s)
            assert lam_min[i] - 1e-3 <= bs <= lam[i, 0] * (1 + 1e-3)


def test_slices_pass_through_the_training_loss(full_batch_run):
    run = full_batch_run
    loss_steps, loss = run.series("train/loss")
    s1, one = run.series("sharpness/slice_1d")
    s2, two = run.series("sharpness/slice_2d")
    np.testing.assert_array_equal(s1, [50, 100])
    assert one.shape == (2, 5) and two.shape == (2, 5, 5)
    at = np.searchsorted(loss_steps, s1)
    np.testing.assert_allclose(one[:, 2], loss[at], rtol=1e-4)
    np.testing.assert_allclose(two[:, 2, 2], loss[at], rtol=1e-4)
    assert np.all(one[:, [0, 4]].min(axis=1) > one[:, 2])  # a minimum-like valley along the line
    grid = np.array(next(v for v in run.views()["sharpness"] if v["title"].endswith("density"))
                    ["options"]["x"])
    _, density = run.series("sharpness/density")
    assert np.trapezoid(density[-1], grid) == pytest.approx(1.0, abs=0.05)


def test_views_declared_with_help(full_batch_run):
    views = full_batch_run.views()["sharpness"]
    kinds = {v["kind"] for v in views}
    assert {"line", "curve", "image_grid"} <= kinds
    assert all(v["help"] for v in views)
    main = views[0]
    assert main["series"] == ["sharpness/lambda_max", "sharpness/threshold"]


def test_findings_report_the_edge(full_batch_run):
    found = SharpnessPlugin.findings(full_batch_run)
    steps, lam = full_batch_run.series("sharpness/lambda_max")
    ratio = lam[:, 0] / 10.0
    first = steps[np.argmax(ratio >= 0.9)]
    edge = [f for f in found if "reached the edge" in f.message]
    assert len(edge) == 1 and edge[0].step == first
    assert edge[0].value == pytest.approx(np.mean(np.abs(ratio[np.argmax(ratio >= 0.9):] - 1) <= 0.1))
    assert any("Batch sharpness" in f.message for f in found)


def test_threshold_follows_momentum_and_cosine_schedule(tmp_path):
    cfg = config({"name": "sgd", "lr": 0.05, "momentum": 0.9, "schedule": "cosine"},
                 {"every": 10, "trace": False, "batch_every": 0, "slices": "off", "probe_size": 128},
                 steps=30)
    run = train(tmp_path, cfg)
    steps, thr = run.series("sharpness/threshold")
    lr_steps, lr = run.series("lr")
    expected = (2 + 2 * 0.9) / lr[np.searchsorted(lr_steps, steps[:-1])]
    np.testing.assert_allclose(thr[:-1], expected, rtol=1e-9)
    assert np.isinf(thr[-1])  # cosine ends at η = 0: no step size is unstable


def test_adam_uses_the_preconditioned_threshold(tmp_path):
    cfg = config({"name": "adam", "lr": 0.01, "betas": [0.8, 0.99]},
                 {"every": 5, "trace": False, "batch_every": 5, "slices": "off", "probe_size": 128},
                 steps=15)
    run = train(tmp_path, cfg)
    steps, lam = run.series("sharpness/lambda_max")
    np.testing.assert_array_equal(steps, [5, 10, 15])  # none at step 1: Adam has no moments yet
    np.testing.assert_allclose(run.series("sharpness/threshold")[1], (2 + 1.6) / (0.2 * 0.01))
    assert np.all(np.isfinite(lam)) and np.all(lam > 0)
    assert any("P⁻¹H" in f.message for f in SharpnessPlugin.findings(run))


def test_time_budget_skips_scheduled_measurements_but_measures_the_last_step(tmp_path):
    cfg = config({"name": "sgd", "lr": 0.1},
                 {"every": 5, "budget": 1e-9, "trace": False, "batch_every": 0, "slices": "1d",
                  "probe_size": 128}, steps=20)
    run = train(tmp_path, cfg)
    np.testing.assert_array_equal(run.series("sharpness/lambda_max")[0], [20])
    assert len(run.series("sharpness/slice_1d")[0]) == 0  # the snapshot is not guaranteed
    events = [e for e in run.events() if e["kind"] == "sharpness_budget"]
    assert [e["step"] for e in events] == [5] and "a measurement takes about" in events[0]["message"]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def run_budget(share, total, step_time, cost, every, routine=0.0):
    """Drive a TimeBudget through a run with measurements of ``cost`` seconds every ``every`` steps
    and ``routine`` seconds of other plugin work each step; returns the steps measured and the
    plugin's share of the training time."""
    clock = FakeClock()
    budget = TimeBudget(share, total, clock)
    measured = []
    for step in range(1, total + 1):
        clock.now += step_time
        with budget.spending():
            clock.now += routine
            last = step == total
            due = step == 1 or step % every == 0 or last
            if due and (budget.affords(step, cost, cost, last) or (last and not budget.measured)):
                clock.now += cost
                budget.record(cost)
                measured.append(step)
    return measured, budget.spent / budget.training_time()


@pytest.mark.parametrize("routine", [0.0, 1e-4])
@pytest.mark.parametrize("total", [30, 200, 2000, 5000, 50000])
def test_time_budget_holds_for_the_whole_run(total, routine):
    measured, share = run_budget(0.25, total, 1.6e-3, 0.9, 50, routine)
    assert measured, "a run always gets a measurement"
    if 2 * 0.9 + routine * total <= 0.25 * total * 1.6e-3:  # room for two: the cap holds, last included
        assert share <= 0.25 and measured[-1] == total
    else:  # only the one a run always gets: at its last step
        assert measured == [total]
    if total == 50000:  # spread over the run, not bunched at its start
        assert len(measured) >= 10 and measured[0] == 50 and max(np.diff(measured)) < 5000
    unlimited = run_budget(0.0, total, 1.6e-3, 0.9, 50, routine)[0]
    assert unlimited == sorted({1, *range(50, total + 1, 50), total})


def test_bad_setting_is_named():
    with pytest.raises(ConfigError, match="plugins.sharpness.slices"):
        validate_plugin_table("sharpness", {"slices": "3d"})


def test_edge_findings_on_planted_series():
    steps = np.arange(0, 200, 10)
    lam = np.concatenate([np.linspace(2, 9.5, 8), 10 + 0.5 * np.sin(np.arange(12))])
    found = edge_findings(steps, lam, np.full(20, 10.0), "λ_max")
    assert found[0].step == 70 and found[0].value == 1.0 and found[0].severity == "info"
    above = edge_findings(steps, lam * 1.5, np.full(20, 10.0), "λ_max")
    assert above[-1].severity == "warning"
    below = edge_findings(steps, lam / 2, np.full(20, 10.0), "λ_max")
    assert below[0].severity == "ok" and below[0].value == pytest.approx(lam.max() / 20)


def test_batch_findings_put_the_ratio_in_readable_words():
    steps = np.arange(1, 31)
    message = lambda batch: batch_findings(steps, np.full(30, batch), np.full(30, 10.0))[0].message
    assert "a median 0.05% of the threshold" in message(0.005)
    assert "a median 87% of the threshold" in message(8.7)
    assert "a median 1.30× the threshold" in message(13.0)


def test_trend_findings_tell_rising_from_flat():
    steps = np.arange(0, 300, 10)
    rising = trend_findings(steps, 1 + steps / 100.0, "λ_max")
    assert "still sharpening" in rising[0].message
    flat = trend_findings(steps, np.full(30, 3.0) + 0.01 * np.sin(steps), "λ_max")
    assert flat[0].severity == "ok"
