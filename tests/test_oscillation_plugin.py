"""The oscillation plugin inside real training runs, read back from the run file."""
import re

import numpy as np
import pytest
import torch

from conftest import assert_reads_as_stated, stop_after, tiny_config
from engine import open_run, run_training
from engine.config import RunConfig
from engine.errors import ConfigError
from engine.models import build_model
from engine.quantize import quantized_layers
from engine.store import checkpoint_dir
from engine.trainer import Trainer
from plugins.oscillation.plugin import (UNIT_INTEGER, UNIT_UPDATE, OscillationPlugin, cosine_findings,
                                        jump_findings, oscillating_findings)

QAT_MLP = {"name": "mlp", "hidden": [32, 32], "quantize": {"bits": 4, "skip": []}}


def train(path, cfg, **kw):
    assert run_training(cfg, path, **kw) == "finished"
    run = open_run(path)
    errors = [e["message"] for e in run.events() if e["kind"] == "plugin_error"]
    assert not errors, errors
    return run


def check_sentences(findings):
    """Each finding: a capitalised sentence whose percentage is the number beside it, with a unit."""
    assert findings
    for f in findings:
        assert f.message.endswith("."), f
        if f.value is not None:
            assert_reads_as_stated(f)


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory):
    """4-bit MLP under Adam with freezing after 25 % of training, checkpoints every 20 steps."""
    path = tmp_path_factory.mktemp("qat") / "run.h5"
    cfg = tiny_config(run={"steps": 120, "eval_every": 60, "checkpoint_every": 20, "keep_checkpoints": 0},
                      model=QAT_MLP, optimizer={"name": "adam", "lr": 0.01},
                      plugins={"oscillation": {"every": 10, "window": 32, "freeze": True, "threshold": 0.02,
                                               "freeze_threshold": 0.03, "freeze_threshold_final": 0.02}})
    return train(path, cfg), path, RunConfig.from_dict(cfg)


def test_series_columns_and_views_of_a_quantised_run(qat_run):
    run, _, _ = qat_run
    layers = ["features.1", "features.3", "head"]
    for name in ("frac_oscillating", "flip_rate", "grad_cosine", "frozen_frac"):
        steps, values = run.series(f"oscillation/{name}")
        assert list(steps) == list(range(10, 121, 10)) and values.shape == (12, 3), name
        assert list(run.data(f"columns/oscillation/{name}")) == layers
    assert run.series_info("oscillation/flip_rate")["unit"] == UNIT_INTEGER
    steps, hist = run.series("oscillation/freq_hist")
    assert list(steps) == [32, 64, 96] and hist.shape == (3, 20) and np.all(hist.sum(1) <= 1)
    flips = run.series("oscillation/flip_rate")[1]
    assert flips.max() > 0 and np.all(flips <= 1)
    views = {v["title"]: v for v in run.views()["oscillation"]}
    assert views["Oscillating weights by layer"]["kind"] == "heatmap"
    assert views["Oscillating weights by layer"]["options"]["y_labels"] == layers
    assert views["Oscillation frequency, last window"]["kind"] == "histogram"


def test_frozen_weights_hold_their_integer_value_under_adam(qat_run):
    run, path, cfg = qat_run
    steps, frozen = run.series("oscillation/frozen_frac")
    assert np.all(frozen[steps <= 30] == 0) and frozen[-1].max() > 0  # only after 25 % of training
    assert np.all(np.diff(frozen, axis=0) >= 0)

    def at(step):
        state = torch.load(checkpoint_dir(path) / f"step_{step:08d}.pt", weights_only=True)
        model = build_model(cfg.sections["model"], (1, 8, 8), 10, cfg.base_dir)
        model.load_state_dict(state["model"])
        ints = torch.cat([q.integers().reshape(-1) for q in quantized_layers(model)])
        return ints, state["plugins"]["oscillation"]["freezer"]
    ints_80, freezer_80 = at(80)
    held = freezer_80["frozen"]
    assert held.sum() > 0
    for step in (100, 120):
        ints, _ = at(step)
        assert torch.equal(ints[held], freezer_80["ema"].round().to(torch.int8)[held])  # never moved


def test_findings_of_a_quantised_run_agree_with_their_numbers(qat_run):
    run, _, _ = qat_run
    findings = OscillationPlugin.findings(run)
    check_sentences(findings)
    text = " ".join(f.message for f in findings)
    assert "integer weights" in text and "Freezing holds" in text
    steps, hist = run.series("oscillation/freq_hist")
    assert f"{round(100 * hist[-1].sum(), 1):g}% of the tracked integer weights oscillated at least once" in text


def test_resume_continues_to_the_same_result_with_the_quantiser_and_the_tracker(tmp_path):
    cfg = RunConfig.from_dict(tiny_config(
        run={"steps": 50}, model=QAT_MLP, optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9},
        plugins={"oscillation": {"every": 5, "window": 16, "freeze": True, "freeze_threshold": 0.03,
                                 "freeze_threshold_final": 0.02, "dampen": 0.5}}))
    Trainer(cfg, tmp_path / "full.h5").run()
    assert stop_after(Trainer(cfg, tmp_path / "part.h5"), 27).run() == "stopped"
    assert Trainer(cfg, tmp_path / "part.h5", resume=True).run() == "finished"
    full, resumed = open_run(tmp_path / "full.h5"), open_run(tmp_path / "part.h5")
    for name in ("train/loss", "oscillation/frac_oscillating", "oscillation/flip_rate",
                 "oscillation/grad_cosine", "oscillation/freq_hist", "oscillation/frozen_frac"):
        s1, v1 = full.series(name)
        s2, v2 = resumed.series(name)
        assert np.array_equal(s1, s2) and np.array_equal(v1, v2, equal_nan=True), name


def test_a_row_of_many_steps_averages_each_steps_gradient_cosine(tmp_path):
    """Rows of 150 steps hold more steps' Gram matrices than wait at once (PENDING_GRAMS): their
    mean cosine is the mean of the per-step cosines that rows of one step give."""
    def cosines(every):
        cfg = tiny_config(run={"steps": 300, "eval_every": 300}, model=QAT_MLP,
                          plugins={"oscillation": {"every": every}})
        return train(tmp_path / f"every{every}.h5", cfg).series("oscillation/grad_cosine")
    steps, per_step = cosines(1)
    rows_at, rows = cosines(150)
    assert list(rows_at) == [150, 300] and np.isnan(per_step[0]).all() and np.isfinite(per_step[1:]).all()
    np.testing.assert_allclose(rows, [per_step[1:150].mean(axis=0), per_step[150:].mean(axis=0)], rtol=1e-5)


def write_planted_quadratic(tmp_path):
    """Every input is the same x0, so the MSE loss of a bias-free linear model is a quadratic with
    Hessian I ⊗ x0x0ᵀ: λ_max = ‖x0‖², and full-batch gradient descent multiplies the residual by
    c_t = 1 − η_t·λ at each step."""
    x0 = np.linspace(0.5, 1.0, 8, dtype=np.float32)
    y = np.arange(200) % 2
    np.savez(tmp_path / "same.npz", x=np.tile(x0, (200, 1)), y=y)
    (tmp_path / "net.py").write_text(
        "import torch.nn as nn\n"
        "def make(input_shape, n_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], n_classes, bias=False))\n")
    return float(x0 @ x0)


def planted_config(tmp_path, lam, eta_lambda, warmup, every=1, window=256, steps=30):
    return {"run": {"seed": 0, "steps": steps, "eval_every": steps, "threads": 1},
            "data": {"source": f"npz:{tmp_path / 'same.npz'}", "batch_size": 1000},
            "model": {"name": f"python:{tmp_path / 'net.py'}:make"}, "loss": {"name": "mse"},
            "optimizer": {"name": "sgd", "lr": eta_lambda / lam, "warmup_steps": warmup},
            "plugins": {"oscillation": {"every": every, "window": window},
                        "sharpness": {"every": 1, "budget": 0.0, "slices": "off", "trace": False, "batch_every": 0}}}


def expected_signs(eta_lambda, warmup, steps):
    """The residual's sign before each step, from c_t = 1 − η_t·λ."""
    c = [1 - eta_lambda * min(1.0, t / warmup) if warmup else 1 - eta_lambda for t in range(1, steps + 1)]
    return np.sign(np.cumprod([1.0] + c[:-1]))


@pytest.mark.parametrize("eta_lambda, warmup", [(1.9, 6), (0.1, 0)], ids=["crosses_1", "stays_below_1"])
def test_full_precision_flip_rate_and_gradient_cosine_on_a_planted_quadratic(tmp_path, eta_lambda, warmup):
    lam = write_planted_quadratic(tmp_path)
    run = train(tmp_path / "fp.h5", planted_config(tmp_path, lam, eta_lambda, warmup))
    sign = expected_signs(eta_lambda, warmup, 30)
    # row t: the update made at step t − 1 against the one at t − 2 (∝ −sign of the residual)
    flips = np.r_[0.0, 0.0, (sign[1:-1] != sign[:-2]).astype(float)]
    cosine = np.r_[np.nan, sign[1:] * sign[:-1]]
    steps, flip_rate = run.series("oscillation/flip_rate")
    assert run.series_info("oscillation/flip_rate")["unit"] == UNIT_UPDATE
    assert np.array_equal(flip_rate[:, 0], flips)
    if warmup:  # rows of 3 steps and windows of 4: the per-row counts still add up exactly
        coarse = train(tmp_path / "coarse.h5", planted_config(tmp_path, lam, eta_lambda, warmup, every=3, window=4))
        steps, rate = coarse.series("oscillation/flip_rate")
        assert list(steps) == list(range(3, 31, 3))
        np.testing.assert_allclose(rate[:, 0], flips.reshape(10, 3).mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(run.series("oscillation/grad_cosine")[1][:, 0], cosine, atol=1e-5)
    np.testing.assert_allclose(run.series("sharpness/lambda_max")[1][:, 0], lam, rtol=1e-4)
    (finding,) = [f for f in OscillationPlugin.findings(run) if "update-reversal rate" in f.message]
    if warmup:
        first = int(np.argmax(flips)) + 1
        assert first == 6 and finding.step == first and finding.severity == "warning"
        assert finding.message == ("The update-reversal rate of layer 1 jumped from 0 to 1 per weight per "
                                   "step at step 6; λ_max was at the edge of stability then, 0.95× the "
                                   "threshold (step 6).")
    else:
        assert flip_rate.max() == 0 and finding.severity == "ok" and finding.message.startswith("No layer's")


def test_a_torch_ao_qat_model_is_tracked_without_the_table(tmp_path):
    (tmp_path / "aonet.py").write_text(
        "import warnings, math, torch.nn as nn\n"
        "def make(input_shape, n_classes):\n"
        "    with warnings.catch_warnings():\n"
        "        warnings.simplefilter('ignore')\n"
        "        import torch.ao.quantization as tq\n"
        "        m = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 16), nn.ReLU(),\n"
        "                          nn.Linear(16, n_classes))\n"
        "        m.qconfig = tq.get_default_qat_qconfig('fbgemm')\n"
        "        return tq.prepare_qat(m.train())\n")
    cfg = {**tiny_config(plugins={"oscillation": {}}), "model": {"name": f"python:{tmp_path / 'aonet.py'}:make"}}
    run = train(tmp_path / "ao.h5", cfg)
    assert run.series_info("oscillation/flip_rate")["unit"] == UNIT_INTEGER
    assert list(run.data("columns/oscillation/frac_oscillating")) == ["1", "3"]
    check_sentences(OscillationPlugin.findings(run))


def test_remedies_asked_of_a_full_precision_model_are_refused_with_an_event(tmp_path):
    run = train(tmp_path / "r.h5", tiny_config(plugins={"oscillation": {"freeze": True, "dampen": 0.1}}))
    (event,) = [e for e in run.events() if e["kind"] == "oscillation_remedies_off"]
    assert "has none, so they are off" in event["message"]
    assert "oscillation/frozen_frac" not in run.names()


def test_dampening_pulls_latent_weights_towards_their_grid_points(tmp_path):
    def distance(dampen):
        cfg = RunConfig.from_dict(tiny_config(run={"steps": 60}, model=QAT_MLP,
                                              plugins={"oscillation": {"dampen": dampen, "anneal_start": 0.0}}))
        trainer = Trainer(cfg, tmp_path / f"d{dampen}.h5", overwrite=True)  # distance(0.0) runs twice
        trainer.run()
        out = []
        for q in quantized_layers(trainer.model):
            step = q.quantizer.step(q.latent)
            step = step.view(-1, *([1] * (q.latent.dim() - 1)))
            out.append(((q.latent - q.grid(q.integers())).abs() / step).flatten())
        return torch.cat(out).mean().item()  # in grid steps: ¼ for weights spread evenly
    assert distance(0.0) == pytest.approx(0.25, abs=0.03)
    assert distance(2.0) < 0.6 * distance(0.0)


def test_plugin_settings_are_validated_like_the_rest_of_the_config():
    expected = "plugins.oscillation.window: got 600, expected an integer in [1, 511]"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        RunConfig.from_dict(tiny_config(plugins={"oscillation": {"window": 600}}))
    with pytest.raises(ConfigError, match="plugins.oscillation.treshold: unknown key.*did you mean 'threshold'"):
        RunConfig.from_dict(tiny_config(plugins={"oscillation": {"treshold": 0.1}}))


def test_findings_from_planted_series():
    steps = np.arange(10, 310, 10)
    frac = np.zeros((30, 3))
    frac[5:, 0] = 0.08  # oscillating from step 60 to the end
    frac[3:12, 1] = 0.2  # an episode that settled
    found = oscillating_findings(steps, frac, ["a", "b", "c"], 0.02)
    assert [f.message.split(":")[0] for f in found] == ["Layer b oscillated most", "Layer a oscillates too"]
    assert found[1].severity == "warning" and found[1].step == 60 and found[1].value == pytest.approx(8.0)
    assert "from step 40 to step 120" in found[0].message
    check_sentences(found)

    flips = np.full((30, 1), 0.05)
    flips[15:] = 0.5
    ratio = (steps, np.where(steps < 150, 0.5, 0.98))
    (jump,) = jump_findings(steps, flips, ["a"], ratio)
    assert jump.step == 160 and jump.severity == "warning" and "at the edge of stability then, 0.98×" in jump.message
    (quiet,) = jump_findings(steps, flips, ["a"], (steps, np.full(30, 0.3)))
    assert "below the edge of stability then, 0.30×" in quiet.message and quiet.severity == "info"

    cos = np.full((30, 2), 0.6)
    cos[20:, 1] = -0.5
    (c,) = cosine_findings(steps, cos, ["a", "b"])
    assert c.severity == "warning" and "layer b point against each other" in c.message and c.value == -0.5


def test_tracking_never_changes_the_trajectory(tmp_path):
    bare = tiny_config(model=QAT_MLP)
    watched = tiny_config(model=QAT_MLP, plugins={"oscillation": {"every": 5}})
    run_training(bare, tmp_path / "bare.h5")
    run = train(tmp_path / "watched.h5", watched)
    assert np.array_equal(open_run(tmp_path / "bare.h5").series("train/loss")[1], run.series("train/loss")[1])


def test_a_users_own_loop_tracks_and_freezes_as_the_engine_does(tmp_path):
    from test_watch import hand_loop
    plugins = {"oscillation": {"every": 5, "window": 16}}
    cfg = RunConfig.from_dict(tiny_config(model=QAT_MLP, plugins=plugins))
    engine = train(tmp_path / "engine.h5", cfg)
    hand_loop(cfg, tmp_path / "mine.h5", plugins=plugins)
    mine = open_run(tmp_path / "mine.h5")
    for name in ("frac_oscillating", "flip_rate", "grad_cosine", "freq_hist"):
        (es, ev), (ms, mv) = engine.series(f"oscillation/{name}"), mine.series(f"oscillation/{name}")
        assert np.array_equal(es, ms) and np.allclose(ev, mv, rtol=1e-5, atol=1e-7, equal_nan=True), name
    # freezing holds weights right after the optimizer step: watch does it in the optimizer's post-step hook
    freeze = {"oscillation": {"every": 5, "window": 16, "freeze": True, "freeze_threshold": 0.03,
                              "freeze_threshold_final": 0.02}}
    cfg = RunConfig.from_dict(tiny_config(run={"steps": 50}, model=QAT_MLP,
                                          optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9}, plugins=freeze))
    engine = train(tmp_path / "engine_frozen.h5", cfg)
    hand_loop(cfg, tmp_path / "frozen.h5", plugins=freeze)
    mine = open_run(tmp_path / "frozen.h5")
    assert not [e for e in mine.events() if e["kind"] == "oscillation_remedies_off"]
    assert engine.series("oscillation/frozen_frac")[1][-1].max() > 0
    for name in ("train/loss", "oscillation/frozen_frac", "oscillation/frac_oscillating"):
        assert np.array_equal(engine.series(name)[1], mine.series(name)[1]), name
