"""traindx.watch: the analyses in a user's own loop write the run file the engine writes."""
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

import traindx
from conftest import ROOT, tiny_config
from engine import open_run, run_training
from engine.config import RunConfig
from engine.data import BatchOrder, load_data
from engine.models import build_model
from engine.trainer import configure_threads, lr_at, make_optimizer

# sharpness at every cadence step (budget 0: no cap), so both runs measure the same, many steps
PLUGINS = {"sharpness": {"every": 10, "batch_every": 0, "probe_size": 256, "budget": 0.0}, "calibration": {}}


def hand_loop(cfg: RunConfig, out, *, plugins=PLUGINS, with_outputs=True, **watch_options):
    """The engine's run, written as a user would write it: same seed, model, batches and schedule."""
    run, opt = cfg.sections["run"], cfg.sections["optimizer"]
    configure_threads(run["threads"])
    torch.manual_seed(run["seed"])
    data = load_data("digits", cfg.sections["data"]["val_fraction"], run["seed"], ROOT)
    model = build_model(cfg.sections["model"], data.input_shape, data.n_classes, ROOT)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], opt)
    order = BatchOrder(len(data.train), cfg.sections["data"]["batch_size"], run["seed"])
    model.train()
    with traindx.watch(model, optimizer, out, train_data=TensorDataset(data.train.x, data.train.y),
                       val_data=TensorDataset(data.val.x, data.val.y), plugins=plugins, steps=run["steps"],
                       eval_every=run["eval_every"], seed=run["seed"], **watch_options) as dx:
        for step in range(1, run["steps"] + 1):
            idx = order.indices(step)
            x, y = data.train.x[idx], data.train.y[idx]
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, opt, run["steps"])
            out_ = model(x)
            loss = F.cross_entropy(out_, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if with_outputs:
                dx.step(loss, outputs=out_, targets=y, inputs=x, ids=data.train.ids[idx.numpy()])
            else:
                dx.step(loss)
            optimizer.step()
    return data


def test_own_loop_gives_the_engines_run(tmp_path):
    raw = tiny_config(plugins=PLUGINS, optimizer={"momentum": 0.9, "schedule": "cosine", "warmup_steps": 5})
    cfg = RunConfig.from_dict(raw)
    run_training(cfg, tmp_path / "engine.h5")
    hand_loop(cfg, tmp_path / "mine.h5")
    engine, mine = open_run(tmp_path / "engine.h5"), open_run(tmp_path / "mine.h5")
    assert mine.status == "finished"
    e_steps, e_loss = engine.series("train/loss")
    m_steps, m_loss = mine.series("train/loss")
    assert np.array_equal(e_steps, m_steps) and np.array_equal(e_loss, m_loss)  # bitwise
    for name in ("lr", "grad_norm", "train/accuracy", "val/loss", "val/accuracy"):
        assert np.array_equal(engine.series(name)[0], mine.series(name)[0]), name
        assert np.allclose(engine.series(name)[1], mine.series(name)[1], rtol=1e-6, atol=0), name
    plugin_series = [n for n in engine.names() if n.startswith(("sharpness/", "calibration/"))]
    assert "sharpness/lambda_max" in plugin_series and "calibration/ece" in plugin_series
    for name in plugin_series:
        (es, ev), (ms, mv) = engine.series(name), mine.series(name)
        assert np.array_equal(es, ms), name
        assert np.allclose(np.asarray(ev, float), np.asarray(mv, float), rtol=1e-4, atol=1e-7, equal_nan=True), name
    assert set(mine.views()) == set(engine.views())
    assert mine.config["plugins"] == engine.config["plugins"]
    assert mine.config["optimizer"]["momentum"] == 0.9 and mine.config["data"]["source"] == "own loop"


def test_only_the_loss_is_enough_and_what_is_missing_is_said_once(tmp_path, example_plugin):
    """The example plugin reads per-sample losses: without them it skips its step hook, with one
    event, and stays on (its end hook runs)."""
    cfg = RunConfig.from_dict(tiny_config(run={"steps": 30, "eval_every": 10}))
    hand_loop(cfg, tmp_path / "m.h5", plugins={"example": {"every": 5}}, with_outputs=False)
    run = open_run(tmp_path / "m.h5")
    skipped = [e for e in run.events() if e["kind"] == "plugin_skipped"]
    assert len(skipped) == 1 and "example" in skipped[0]["message"] and "dx.step(loss, " in skipped[0]["message"]
    assert not [e for e in run.events() if e["kind"] == "plugin_error"]
    assert len(run.series("example/batch_max_loss")[0]) == 0 and list(run.series("example/ended")[1]) == [30]
    assert list(run.series("train/loss")[0]) == list(range(1, 31))
    assert "train/accuracy" not in [n for n in run.names() if len(run.series(n)[0])]  # needs outputs


def test_a_wrong_plugin_setting_is_named(tmp_path):
    model = torch.nn.Linear(4, 2)
    with pytest.raises(Exception) as err:
        traindx.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), tmp_path / "x.h5",
                      plugins={"sharpness": {"probe_sise": 3}})
    assert "plugins.sharpness.probe_sise" in str(err.value) and "probe_size" in str(err.value)
    assert not (tmp_path / "x.h5").exists()


def test_an_exception_in_the_loop_marks_the_run_failed_and_keeps_its_rows(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    with pytest.raises(ZeroDivisionError):
        with traindx.watch(model, optimizer, tmp_path / "f.h5", val_data=(x, y)) as dx:
            for step in range(1, 100):
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                dx.step(loss)
                optimizer.step()
                if step == 25:
                    1 / 0
    run = open_run(tmp_path / "f.h5")
    assert run.status == "failed" and len(run.series("train/loss")[0]) == 25
    assert run.events()[-1]["kind"] == "failed" and "ZeroDivisionError" in run.events()[-1]["message"]
    assert run.config["optimizer"]["name"] == "adam" and run.config["model"]["name"] == "Sequential"


def test_divergence_closes_the_run_and_stops_the_loop(tmp_path):
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    with pytest.raises(traindx.Diverged):
        with traindx.watch(model, optimizer, tmp_path / "d.h5") as dx:
            for step in range(1, 20):
                loss = F.cross_entropy(model(x), y) * (float("nan") if step == 7 else 1.0)
                optimizer.zero_grad()
                loss.backward()
                dx.step(loss)
                optimizer.step()
    run = open_run(tmp_path / "d.h5")
    assert run.status == "diverged" and list(run.series("train/loss")[0]) == list(range(1, 7))
    assert any(e["kind"] == "diverged" and e["step"] == 7 for e in run.events())


SCRIPT = """
import os, sys, torch, torch.nn.functional as F
import traindx
model = torch.nn.Linear(4, 3)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
dx = traindx.watch(model, opt, sys.argv[1], val_data=(x, y), eval_every=5)
for step in range(1, 1000):
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(); loss.backward(); dx.step(loss); opt.step()
    if step == 40:
        raise SystemExit(sys.argv[2])
"""


def test_a_script_that_dies_leaves_a_readable_file_marked_crashed(tmp_path):
    """No close(): the rows logged are flushed on the way out and the dead writer reads as crashed."""
    script = tmp_path / "loop.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "c.h5"), "boom"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "boom" in proc.stderr
    run = open_run(tmp_path / "c.h5")
    assert run.status == "crashed"
    assert list(run.series("train/loss")[0]) == list(range(1, 41))
    assert list(run.series("val/loss")[0]) == [5, 10, 15, 20, 25, 30, 35]


def test_every_installed_plugin_works_in_a_loop_that_gives_only_the_loss(tmp_path):
    """No planned length, no batch size, no ids: every installed analysis still runs (or says once
    what it lacks), none is disabled by an error."""
    from engine.plugin import discover
    cadence = {"sharpness": {"every": 20}, "opposing_signals": {"every": 30, "window": 30},
               "oscillation": {"every": 10}}
    plugins = {name: cadence.get(name, {}) for name in discover() if name != "example"}
    assert {"sharpness", "calibration", "oscillation", "opposing_signals", "error_slices"} <= set(plugins)
    cfg = RunConfig.from_dict(tiny_config(run={"steps": 60, "eval_every": 20}))
    torch.manual_seed(0)
    data = load_data("digits", 0.2, 0, ROOT)
    model = build_model({"name": "mlp", "hidden": [16]}, data.input_shape, data.n_classes, ROOT)
    optimizer = make_optimizer(list(model.parameters()), cfg.sections["optimizer"])
    order = BatchOrder(len(data.train), 32, 0)
    with traindx.watch(model, optimizer, tmp_path / "all.h5", train_data=(data.train.x, data.train.y),
                       val_data=(data.val.x, data.val.y), plugins=plugins, eval_every=20) as dx:
        for step in range(1, 61):
            idx = order.indices(step)
            loss = F.cross_entropy(model(data.train.x[idx]), data.train.y[idx])
            optimizer.zero_grad()
            loss.backward()
            dx.step(loss)
            optimizer.step()
    run = open_run(tmp_path / "all.h5")
    assert not [e["message"] for e in run.events() if e["kind"] == "plugin_error"]
    for name in plugins:
        assert any(run.length(n) for n in run.names() if n.startswith(name + "/")), name
