import math

import numpy as np
import pytest
import torch

from conftest import stop_after, tiny_config
from engine import open_run, run_training
from engine.config import RunConfig
from engine.store import checkpoint_dir
from engine.trainer import Trainer, lr_at, per_sample_loss_fn


def _losses(path):
    return open_run(path).series("train/loss")


def test_core_series_and_events_are_written(tmp_path):
    out = tmp_path / "r.h5"
    assert run_training(tiny_config(), out) == "finished"
    run = open_run(out)
    assert run.status == "finished" and run.finished
    for name in ("train/loss", "lr", "wall_time"):
        steps, values = run.series(name)
        assert list(steps) == list(range(1, 41)) and np.all(np.isfinite(values))
    for name in ("train/accuracy", "grad_norm"):  # every log_every (default 10) steps
        steps, values = run.series(name)
        assert list(steps) == [10, 20, 30, 40] and np.all(np.isfinite(values))
    steps, acc = run.series("val/accuracy")
    assert list(steps) == [20, 40] and 0 <= acc.min() <= acc.max() <= 1
    kinds = [e["kind"] for e in run.events()]
    assert kinds[0] == "started" and kinds[-1] == "finished"
    assert run.config["optimizer"]["lr"] == 0.1
    assert run.meta["torch"] == torch.__version__ and run.meta["train_size"] + run.meta["val_size"] == 1797
    assert "core" in run.views()


def test_log_every_sets_the_cadence_of_accuracy_and_gradient_norm(tmp_path):
    run_training(tiny_config(run={"log_every": 1, "steps": 5}), tmp_path / "l.h5")
    run = open_run(tmp_path / "l.h5")
    steps, acc = run.series("train/accuracy")
    assert list(steps) == [1, 2, 3, 4, 5] and np.all((0 <= acc) & (acc <= 1))
    assert list(run.series("grad_norm")[0]) == [1, 2, 3, 4, 5]


def test_same_seed_gives_bit_identical_losses_and_other_seed_differs(tmp_path):
    cfg = tiny_config(model={"name": "mlp", "hidden": [16], "dropout": 0.2})
    run_training(cfg, tmp_path / "a.h5")
    run_training(cfg, tmp_path / "b.h5")
    run_training(tiny_config(run={"seed": 1}), tmp_path / "c.h5")
    a, b, c = (_losses(tmp_path / f"{n}.h5")[1] for n in "abc")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_epochs_count_optimizer_steps(tmp_path):
    run_training(tiny_config(run={"steps": None, "epochs": 2}, data={"batch_size": 500}), tmp_path / "e.h5")
    assert len(_losses(tmp_path / "e.h5")[0]) == 2 * math.ceil(1438 / 500)


def test_divergence_stops_with_an_event_and_keeps_what_came_before(tmp_path):
    out = tmp_path / "d.h5"
    status = run_training(tiny_config(run={"steps": 200}, optimizer={"lr": 50.0}, loss={"name": "mse"}), out)
    run = open_run(out)
    assert status == "diverged" and run.status == "diverged"
    event = [e for e in run.events() if e["kind"] == "diverged"][0]
    steps, losses = run.series("train/loss")
    assert len(steps) >= 1 and np.all(np.isfinite(losses))
    assert event["step"] == steps[-1] + 1 and f"at step {event['step']}" in event["message"]


def test_mse_loss_on_one_hot_targets(tmp_path):
    run_training(tiny_config(loss={"name": "mse"}, run={"steps": 60}), tmp_path / "m.h5")
    _, losses = _losses(tmp_path / "m.h5")
    assert losses[-10:].mean() < losses[:10].mean()
    out = torch.tensor([[0.5, 2.0, -1.0]])
    expected = 0.5 * ((0.5 - 0) ** 2 + (2.0 - 1) ** 2 + (-1.0 - 0) ** 2)  # ½‖f − onehot(1)‖²
    assert per_sample_loss_fn("mse", 3)(out, torch.tensor([1])).item() == pytest.approx(expected)


def test_schedule_warmup_cosine_and_step():
    opt = {"lr": 1.0, "warmup_steps": 10, "schedule": "cosine", "step_size": 5, "gamma": 0.5}
    assert lr_at(5, opt, 110) == pytest.approx(0.5)
    assert lr_at(60, opt, 110) == pytest.approx(0.5)
    assert lr_at(110, opt, 110) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(21, {**opt, "schedule": "step"}, 110) == pytest.approx(0.25)


def test_lr_series_follows_schedule(tmp_path):
    run_training(tiny_config(optimizer={"schedule": "cosine", "warmup_steps": 4}), tmp_path / "s.h5")
    _, lr = open_run(tmp_path / "s.h5").series("lr")
    assert lr[0] == pytest.approx(0.025) and lr[3] == pytest.approx(0.1) and lr[-1] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("optimizer", [{"name": "sgd", "momentum": 0.9},
                                       {"name": "adamw", "lr": 0.01, "weight_decay": 0.01}])
def test_resume_continues_to_the_same_result(tmp_path, optimizer):
    sharpness = {"every": 10, "batch_every": 5, "budget": 0.0, "probe_size": 128, "slices": "off", "trace": True}
    cfg = RunConfig.from_dict(tiny_config(optimizer=optimizer, run={"steps": 50},
                                          model={"name": "mlp", "hidden": [16], "dropout": 0.1},
                                          plugins={"sharpness": sharpness}))
    Trainer(cfg, tmp_path / "full.h5").run()

    part = tmp_path / "part.h5"
    assert stop_after(Trainer(cfg, part), 27).run() == "stopped"
    assert open_run(part).series("train/loss")[0][-1] == 27
    assert Trainer(cfg, part, resume=True).run() == "finished"
    full, resumed = open_run(tmp_path / "full.h5"), open_run(part)
    # the plugin's warm start travels in the checkpoint: its measurements match too
    for name in ("train/loss", "grad_norm", "sharpness/lambda_max", "sharpness/n_hvp", "sharpness/trace",
                 "sharpness/batch_sharpness"):
        s1, v1 = full.series(name)
        s2, v2 = resumed.series(name)
        assert np.array_equal(s1, s2) and np.array_equal(v1, v2), name
    assert [e["kind"] for e in resumed.events()].count("resumed") == 1


def test_checkpoints_load_with_weights_only_and_the_latest_are_kept(tmp_path):
    run_training(tiny_config(run={"checkpoint_every": 5}), tmp_path / "c.h5")
    files = sorted(checkpoint_dir(tmp_path / "c.h5").glob("*.pt"))
    assert [f.name for f in files] == ["step_00000030.pt", "step_00000035.pt", "step_00000040.pt"]
    state = torch.load(files[0], weights_only=True)
    assert state["step"] == 30 and "model" in state and "optimizer" in state
    run_training(tiny_config(run={"checkpoint_every": 5, "keep_checkpoints": 0}), tmp_path / "all.h5")
    assert len(list(checkpoint_dir(tmp_path / "all.h5").glob("*.pt"))) == 8


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    from engine.errors import ConfigError
    with pytest.raises(ConfigError, match="--resume"):
        run_training(tiny_config(), tmp_path / "none.h5", resume=True)


def test_analyses_never_change_the_trajectory(tmp_path):
    """Plugins run forward passes (dropout draws random numbers in training mode) and read per-sample
    losses; neither may move the run they watch: the loss series is the same bit for bit."""
    base = tiny_config(model={"name": "mlp", "hidden": [16], "dropout": 0.3})
    watched = tiny_config(model={"name": "mlp", "hidden": [16], "dropout": 0.3},
                          plugins={"sharpness": {"every": 7, "batch_every": 0, "probe_size": 64, "budget": 0.0},
                                   "calibration": {}})
    run_training(base, tmp_path / "bare.h5")
    run_training(watched, tmp_path / "watched.h5")
    assert len(open_run(tmp_path / "watched.h5").series("sharpness/lambda_max")[0]) >= 5
    assert np.array_equal(_losses(tmp_path / "bare.h5")[1], _losses(tmp_path / "watched.h5")[1])
