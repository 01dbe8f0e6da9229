"""The sharpness plugin inside real (short) training runs, read back from the run file: what it
measures, at which steps (a plan fixed from the config), and whether its findings state what its
series show."""
import re
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import ROOT, assert_reads_as_stated, stop_after

from engine import open_run, run_training
from engine.config import RunConfig
from engine.data import BatchOrder, load_data
from engine.errors import ConfigError
from engine.models import build_model
from engine.plugin import Probe, instantiate, validate_plugin_table
from engine.store import checkpoint_dir
from engine.trainer import Control, Trainer
from plugins.sharpness import plan as P
from plugins.sharpness.plugin import (SharpnessPlugin, batch_findings, convergence_findings, edge_findings,
                                      stated, trend_findings)


def config(optimizer, plugin, steps=40, **sections):
    cfg = {"run": {"seed": 0, "steps": steps, "eval_every": steps, "threads": 1},
           "data": {"source": "digits", "batch_size": 64},
           "model": {"name": "mlp", "hidden": [16], "activation": "tanh"},
           "optimizer": optimizer, "loss": {"name": "cross_entropy"},
           "plugins": {"sharpness": {"budget": 0.0, **plugin}}}  # no budget: every cadence step
    cfg.update(sections)
    return cfg


def train(path, cfg, trainer=Trainer):
    assert trainer(RunConfig.from_dict(cfg), path).run() == "finished"
    run = open_run(path)
    errors = [e["message"] for e in run.events() if e["kind"] == "plugin_error"]
    assert not errors, errors
    return run


@pytest.fixture(scope="module")
def full_batch_run(tmp_path_factory):
    """Full-batch GD with MSE at η = 0.2: the probe set and every batch are the whole training
    split, so the batch Hessian is the probe Hessian and the slice centre is the step's loss."""
    cfg = config({"name": "sgd", "lr": 0.2},
                 {"every": 10, "k": 2, "smallest": True, "max_iter": 40, "batch_every": 5, "slices": "both",
                  "probe_size": 2000,
                  "slice_steps": 5, "density": True, "snapshot_every": 50, "probe_batch": 400},
                 steps=100, data={"source": "digits", "batch_size": 100000}, loss={"name": "mse"})
    return train(tmp_path_factory.mktemp("full") / "run.h5", cfg)


@pytest.fixture(scope="module")
def cosine_run(tmp_path_factory):
    cfg = config({"name": "sgd", "lr": 0.05, "momentum": 0.9, "schedule": "cosine"},
                 {"every": 10, "batch_every": 10, "slices": "off", "probe_size": 128}, steps=30)
    return train(tmp_path_factory.mktemp("cosine") / "run.h5", cfg)


@pytest.fixture(scope="module")
def adam_run(tmp_path_factory):
    cfg = config({"name": "adam", "lr": 0.01, "betas": [0.8, 0.99]},
                 {"every": 5, "batch_every": 5, "slices": "off", "probe_size": 128}, steps=15)
    return train(tmp_path_factory.mktemp("adam") / "run.h5", cfg)


# ---------------------------------------------------------------------------------------------
# What it measures
# ---------------------------------------------------------------------------------------------
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
    assert np.all(n_hvp > 0) and np.all(n_hvp[1:] <= 2 * 20 + 2 + 4 * 30)


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


def test_views_declared_with_help_and_log_axes_for_the_threshold(full_batch_run):
    views = {v["title"]: v for v in full_batch_run.views()["sharpness"]}
    assert {"line", "curve", "image_grid"} <= {v["kind"] for v in views.values()}
    assert all(v["help"] for v in views.values())
    main, batch = views["Sharpness vs edge of stability"], views["Batch sharpness"]
    assert main["series"] == ["sharpness/lambda_max", "sharpness/threshold"]
    for v in (main, batch):  # a decaying learning rate sends the threshold up by orders of magnitude
        assert v["options"]["log_y"] and v["options"]["inf_text"] == {"sharpness/threshold": "none (lr = 0)"}


def test_threshold_follows_momentum_and_cosine_schedule(cosine_run):
    steps, thr = cosine_run.series("sharpness/threshold")
    lr_steps, lr = cosine_run.series("lr")
    expected = (2 + 2 * 0.9) / lr[np.searchsorted(lr_steps, steps[:-1])]
    np.testing.assert_allclose(thr[:-1], expected, rtol=1e-9)
    assert np.isinf(thr[-1])  # cosine ends at η = 0: no step size is unstable


def test_adam_uses_the_preconditioned_threshold(adam_run):
    steps, lam = adam_run.series("sharpness/lambda_max")
    np.testing.assert_array_equal(steps, [5, 10, 15])  # Adam's preconditioner needs a few steps of moments
    np.testing.assert_allclose(adam_run.series("sharpness/threshold")[1], (2 + 1.6) / (0.2 * 0.01))
    assert np.all(np.isfinite(lam)) and np.all(lam > 0)
    assert any("P⁻¹H" in f.message for f in SharpnessPlugin.findings(adam_run))


def test_at_lr_zero_adam_is_still_measured_preconditioned(tmp_path):
    """The last step of a cosine schedule (η = 0) against an independent computation: the dense
    Hessian of the probe loss at the final weights (η = 0 leaves them unmoved) with Adam's
    preconditioner as it stood before that step, whose eigenvalues are exactly what was measured."""
    seed, steps, b1, b2, eps = 0, 20, 0.9, 0.999, 1e-8
    cfg = config({"name": "adam", "lr": 0.01, "betas": [b1, b2], "eps": eps, "schedule": "cosine"},
                 {"every": 10, "batch_every": 0, "slices": "off", "probe_size": 100000,
                  "tol": 1e-6, "max_iter": 200}, steps=steps, model={"name": "mlp", "hidden": [8]})
    run = train(tmp_path / "run.h5", cfg)
    m_steps, lam = run.series("sharpness/lambda_max")
    assert m_steps[-1] == steps and np.isinf(run.series("sharpness/threshold")[1][-1])
    state = torch.load(checkpoint_dir(tmp_path / "run.h5") / f"step_{steps:08d}.pt", weights_only=True)
    data = load_data("digits", 0.2, seed, ROOT)
    model = build_model(RunConfig.from_dict(cfg).sections["model"], data.input_shape, 10, ROOT)
    model.load_state_dict(state["model"])
    names, w = zip(*[(n, p.detach().double()) for n, p in model.double().named_parameters()])
    x, y = data.train.x.double(), data.train.y

    def loss(flat, xs, ys):
        parts = dict(zip(names, [c.view_as(p) for c, p in zip(flat.split([p.numel() for p in w]), w)]))
        return torch.nn.functional.cross_entropy(torch.func.functional_call(model, parts, (xs,)), ys)
    flat = torch.cat([p.reshape(-1) for p in w])
    hessian = torch.func.jacrev(torch.func.jacrev(loss))(flat, x, y)  # reverse over reverse: no forward AD
    # Adam's second moment before the last step: undo that step's update of it
    batch = BatchOrder(len(y), 64, seed).indices(steps)
    g = torch.func.grad(loss)(flat, x[batch], y[batch])
    v_after = torch.cat([state["optimizer"]["state"][i]["exp_avg_sq"].double().reshape(-1) for i in range(4)])
    v_before = (v_after - (1 - b2) * g ** 2) / b2 / (1 - b2 ** (steps - 1))
    d = (v_before.sqrt() + eps).rsqrt()
    expected = torch.linalg.eigvalsh(d[:, None] * hessian * d[None, :])[-1].item()
    raw = torch.linalg.eigvalsh(hessian)[-1].item()
    assert lam[-1, 0] == pytest.approx(expected, rel=1e-3)
    assert expected > 5 * raw  # the raw Hessian (what η = 0 used to measure) is far from it


def test_bad_setting_is_named():
    with pytest.raises(ConfigError, match="plugins.sharpness.slices"):
        validate_plugin_table("sharpness", {"slices": "3d"})


# ---------------------------------------------------------------------------------------------
# Which steps: a plan fixed from the config
# ---------------------------------------------------------------------------------------------
def plan_of(total, every=50, budget=0.2, floor=20, forced=(), first=1, batch=64, cost=10_000.0, fixed=0.0):
    return P.make_plan(total, every, first, batch, budget, floor, cost, fixed, set(forced))


def test_plan_without_a_budget_measures_every_cadence_step():
    plan = plan_of(1000, every=100, budget=0.0, forced={350})
    assert plan.steps == (1, 100, 200, 300, 350, 400, 500, 600, 700, 800, 900, 1000)
    assert "Every step of the cadence is measured" in plan.describe()


@pytest.mark.parametrize("total,every,budget,floor,forced", [
    (30_000, 50, 0.2, 20, ()), (30_000, 7, 0.5, 20, (10_000, 20_000, 30_000)), (200_000, 100, 0.05, 5, ()),
    (1500, 50, 0.2, 20, (1000, 1500)), (1500, 50, 0.2, 20, (777,)), (800, 50, 0.2, 20, ()), (40, 5, 0.2, 3, (40,))])
def test_plan_spends_the_budget_evenly_but_never_measures_fewer_than_asked(total, every, budget, floor,
                                                                            forced):
    plan = plan_of(total, every, budget, floor, forced, fixed=1000.0)
    cadence = P.cadence_steps(total, every, 1)
    affordable = int((budget * total * 64 - 1000) // 10_000)
    n = len(plan.steps)
    assert set(forced) <= set(plan.steps) <= set(cadence) | set(forced)
    assert n == max(min(affordable, len(cadence)), min(floor, len(cadence)), len(forced))
    if n <= affordable:
        assert plan.most <= budget * plan.training
    assert np.diff(plan.steps).max() <= 1.5 * total / (n - 1) + 2 * every  # spread evenly over the run
    if not forced:
        assert plan.steps[0] == 1 and plan.steps[-1] == total
    words = plan.describe()
    assert f"{n} measurements planned" in words and ("min_measurements" in words) == (n > affordable)


def test_a_loop_that_gives_no_length_or_batch_size_is_measured_at_every_cadence_step():
    open_ended = plan_of(None, every=50, first=2)  # traindx.watch without steps=
    assert [s for s in range(1, 301) if open_ended.measures(s)] == [2, 50, 100, 150, 200, 250, 300]
    assert "did not say how many steps" in open_ended.describe() and "no budget applies" in open_ended.describe()
    unknown_batch = plan_of(300, every=50, batch=None)
    assert unknown_batch.steps == (1, 50, 100, 150, 200, 250, 300)
    assert "did not give its batch size" in unknown_batch.describe()


def test_plan_starts_where_the_optimizer_can_be_measured():
    assert plan_of(300, budget=0.0, first=2).steps == (2, 50, 100, 150, 200, 250, 300)
    assert plan_of(1, first=2).steps == ()


def test_the_default_example_gets_a_curve_from_its_first_step():
    cfg = RunConfig.from_toml(ROOT / "assets/examples/digits-mlp.toml")
    table = cfg.plugins["sharpness"]
    assert all(table[s.name] == s.default for s in SharpnessPlugin.settings)  # defaults only
    plugin = instantiate("sharpness", table)
    total = cfg.sections["run"]["steps"]
    run = SimpleNamespace(total_steps=total, config=cfg, train_size=1437,
                          optimizer=torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1),
                          probe=lambda n: Probe(torch.zeros(n, 64), torch.zeros(n), np.arange(n)))
    plugin.setup(run)
    steps = plugin.plan.steps
    assert len(steps) >= 20 and steps[0] == 1 and steps[-1] == total
    assert max(np.diff(steps)) <= 2 * total / 20


def slowed(pause):
    """A Trainer on a machine ``pause`` seconds slower per training step."""
    class Slow(Trainer):
        def _train_step(self, step):
            time.sleep(pause)
            return super()._train_step(step)
    return Slow


PLANNED = config({"name": "sgd", "lr": 0.1, "momentum": 0.9, "schedule": "cosine"},
                 {"every": 5, "budget": 0.2, "min_measurements": 6, "trace": True, "trace_samples": 3,
                  "batch_every": 10, "slices": "1d", "slice_steps": 5, "snapshot_every": 40, "probe_size": 128},
                 steps=60)


@pytest.fixture(scope="module")
def planned_run(tmp_path_factory):
    return train(tmp_path_factory.mktemp("planned") / "run.h5", PLANNED)


def test_measured_steps_are_the_planned_ones_at_any_machine_speed(planned_run, tmp_path):
    slow = train(tmp_path / "slow.h5", PLANNED, slowed(0.004))
    plan = next(e for e in planned_run.events() if e["kind"] == "sharpness_plan")
    count, listed = re.search(r"(\d+) measurements planned, at steps ([\d, ]+)\.", plan["message"]).groups()
    listed = [int(s) for s in listed.split(", ")]
    # the plan, worked out here from the costs it is made of: a probe of 128, 20 Lanczos steps
    # and 3 trace samples per measurement; batch sharpness at 6 steps; slices at steps 40 and 60
    cost = 128 * (1 + 2 * (20 + 3))
    fixed = 6 * 2 * 64 + 2 * 128 * 5 / 3
    expected = P.make_plan(60, 5, 1, 64, 0.2, 6, cost, fixed, {40, 60}).steps
    assert len(expected) == 6 and expected[0] == 1 and {40, 60} <= set(expected)
    for run in (planned_run, slow):
        steps, lam = run.series("sharpness/lambda_max")
        assert tuple(steps) == expected == tuple(listed) and int(count) == len(steps)
        np.testing.assert_array_equal(run.series("sharpness/slice_1d")[0], [40, 60])
        cost_event = next(e["message"] for e in run.events() if e["kind"] == "sharpness_cost")
        assert "6 of the 6 planned measurements made" in cost_event
    np.testing.assert_array_equal(planned_run.series("sharpness/lambda_max")[1],
                                  slow.series("sharpness/lambda_max")[1])


def test_a_resumed_run_measures_the_planned_steps_and_values(planned_run, tmp_path):
    part = tmp_path / "part.h5"
    assert stop_after(Trainer(RunConfig.from_dict(PLANNED), part, Control()), 27).run() == "stopped"
    assert Trainer(RunConfig.from_dict(PLANNED), part, resume=True).run() == "finished"
    resumed = open_run(part)
    for name in ("sharpness/lambda_max", "sharpness/n_hvp", "sharpness/trace", "sharpness/batch_sharpness",
                 "sharpness/slice_1d"):
        s1, v1 = planned_run.series(name)
        s2, v2 = resumed.series(name)
        assert np.array_equal(s1, s2) and np.array_equal(v1, v2), name
    kinds = [e["kind"] for e in resumed.events()]
    assert kinds.count("sharpness_plan") == 1 and kinds.count("sharpness_cost") == 2  # at the stop and the end
    last = [e["message"] for e in resumed.events() if e["kind"] == "sharpness_cost"][-1]
    assert "6 of the 6 planned measurements made" in last


# ---------------------------------------------------------------------------------------------
# Findings: each read against the series it came from
# ---------------------------------------------------------------------------------------------
def series_numbers(run):
    """Ratios to the threshold where it is finite (with their steps), as the findings should see them."""
    steps, lam = run.series("sharpness/lambda_max")
    threshold = dict(zip(*run.series("sharpness/threshold")))
    known = np.array([np.isfinite(threshold[s]) for s in steps])
    return steps[known], np.array([lam[i, 0] / threshold[s] for i, s in enumerate(steps)])[known]


def ratio_as_stated(r):
    return (stated(r), "× the threshold") if r >= 1 else (stated(100 * r), "% of the threshold")


@pytest.mark.parametrize("fixture", ["full_batch_run", "cosine_run", "adam_run", "planned_run"])
def test_every_finding_states_the_number_its_series_give(fixture, request):
    run = request.getfixturevalue(fixture)
    found = SharpnessPlugin.findings(run)
    steps, ratio = series_numbers(run)
    assert found
    for f in found:
        assert_reads_as_stated(f)
        if "stayed below the edge" in f.message or "beyond the edge" in f.message:
            assert (f.value, f.unit) == ratio_as_stated(ratio.max()) and f.step == steps[np.argmax(ratio)]
        elif "reached the edge" in f.message:
            since = ratio[np.flatnonzero(ratio >= 0.9)[0]:]
            assert f.value == sum(abs(r - 1) <= 0.1 for r in since) and f.unit == f"of {len(since)} measurements"
        elif "Lanczos" in f.message:
            assert f.value == (run.series("sharpness/converged")[1] < 0.5).sum()
        elif "Batch sharpness" in f.message:
            b_steps, b = run.series("sharpness/batch_sharpness")
            thr = dict(zip(*run.series("sharpness/threshold")))
            r = [v / thr[s] for s, v in zip(b_steps, b) if np.isfinite(thr[s])]
            assert (f.value, f.unit) == ratio_as_stated(np.median(r[-max(1, len(r) // 3):]))
        else:  # the trend: a line through the last third of the measurements
            all_steps, lam = run.series("sharpness/lambda_max")
            n = max(3, len(lam) // 3)
            line = np.polynomial.Polynomial.fit(all_steps[-n:], lam[-n:, 0], 1)
            start, end = line(all_steps[-n]), line(all_steps[-1])
            assert f.value == stated(100 * abs(end - start) / start) and f.unit == "%"


def test_edge_findings_on_planted_series():
    steps = np.arange(0, 200, 10)
    lam = np.concatenate([np.linspace(2, 9.5, 8), 10 + 0.5 * np.sin(np.arange(12))])
    threshold = np.full(20, 10.0)
    found = edge_findings(steps, lam, threshold, "λ₁")
    inside = int(np.sum(np.abs(lam[7:] / 10 - 1) <= 0.1))  # 9.5 at step 70 is the first within 10%
    assert len(found) == 1 and found[0].step == 70 and found[0].value == inside == 13
    assert found[0].unit == "of 13 measurements" and found[0].severity == "info"
    above = edge_findings(steps, lam * 13, threshold, "λ₁")
    assert above[0].value == 0 and above[1].severity == "warning"  # 13× the threshold is not "at the edge"
    assert (above[1].value, above[1].unit) == (stated(13 * lam.max() / 10), "× the threshold")
    below = edge_findings(steps, lam / 2, threshold, "λ₁")
    assert below[0].severity == "ok" and below[0].value == stated(100 * lam.max() / 20)
    # a last step at η = 0 (infinite threshold) is no measurement near the edge, nor below it
    at_end = edge_findings(steps, np.r_[lam[:-1], 0.01], np.r_[threshold[:-1], np.inf], "λ₁")
    assert at_end[0].unit == "of 12 measurements"
    none = edge_findings(steps[:2], lam[:2], np.full(2, np.inf), "λ₁")
    assert none[0].value is None and "learning rate was 0" in none[0].message
    for f in found + above + below + at_end + none:
        assert_reads_as_stated(f)


def test_trend_findings_on_planted_lines():
    steps = np.arange(0, 300, 10)
    rising = trend_findings(steps, np.r_[np.ones(20), np.linspace(10, 20, 10)], "λ₁")[0]
    assert "still sharpening" in rising.message and rising.value == 100 and rising.unit == "%"
    falling = trend_findings(steps, np.r_[np.ones(20), np.linspace(20, 10, 10)], "λ₁")[0]
    assert "flattening" in falling.message and falling.value == 50  # not "levelled off"
    flat = trend_findings(steps, np.full(30, 3.0) + 0.01 * np.sin(steps), "λ₁")[0]
    assert flat.severity == "ok" and "levelled off" in flat.message and flat.value < 1
    for f in (rising, falling, flat):
        assert_reads_as_stated(f)


def test_batch_and_convergence_findings_put_numbers_in_readable_words():
    steps = np.arange(1, 31)

    def said(batch):
        return batch_findings(steps, np.full(30, batch), np.r_[np.full(29, 10.0), np.inf])[0]
    assert "a median 0.05% of the threshold" in said(0.005).message
    assert "a median 87% of the threshold" in said(8.7).message
    assert "a median 1.3× the threshold" in said(13.0).message
    missed = convergence_findings(steps[:4], np.array([1.0, 0.0, 1.0, 0.0]))[0]
    assert (missed.value, missed.unit) == (2, "of 4 measurements")
    for f in (said(0.005), said(8.7), said(13.0), missed):
        assert_reads_as_stated(f)


# ---------------------------------------------------------------------------------------------
# An infinite threshold, wherever it is shown
# ---------------------------------------------------------------------------------------------
def test_an_infinite_threshold_reads_none_in_the_report_numbers(cosine_run):
    from gui.report_html import numbers_table
    from gui.report_model import gather
    section = next(s for s in gather(cosine_run).sections if s.plugin == "sharpness")
    number = next(n for n in section.numbers if n.series == "sharpness/threshold")
    assert np.isinf(number.last) and np.isfinite(number.max)  # the extremes are over finite values
    row = next(r for r in numbers_table(section.numbers).rows if "sharpness/threshold" in r)
    assert '<td class="num">none (lr = 0) (30)</td>' in row and ">inf" not in row


def test_an_infinite_threshold_reads_none_at_the_gui_cursor(cosine_run):
    pytest.importorskip("pytestqt")
    from gui.rundata import RunData
    from gui.views import PlotOptions, Trace
    from gui.views.steps import cursor_values
    data = RunData.from_reader(cosine_run)
    batch = next(v for v in cosine_run.views()["sharpness"] if v["title"] == "Batch sharpness")
    text = cursor_values(batch, [Trace(data, "#000", "run")], PlotOptions(smoothing=0.6), 30)
    assert "threshold none (lr = 0)" in text and "inf" not in text
