"""Resuming goes on to the run's own length, or changes it only on purpose; a finished run is not
'resumed' into 'step 3500/1500 ... loss nan'; the wall-time clock goes on across the resume."""
import numpy as np
import pytest

from conftest import stop_after
from engine import open_run
from engine.cli import _check_resume_length
from engine.config import RunConfig
from engine.errors import ConfigError
from engine.trainer import Trainer
from robust_helpers import one_line, run_traindx, write_config


@pytest.fixture
def stopped(tmp_path):
    """A run of 60 steps from a TOML file, stopped after step 25 (checkpoints every 10 and at 25)."""
    config = write_config(tmp_path, steps=60, checkpoint_every=10)
    out = tmp_path / "r.h5"
    assert stop_after(Trainer(RunConfig.from_toml(config), out), 25).run() == "stopped"
    return config, out


def test_resuming_with_a_config_of_another_length_is_refused_saying_how_to_change_it(stopped):
    config, out = stopped
    config.write_text(config.read_text().replace("steps = 60", "steps = 20"))
    done = run_traindx("run", config, "--out", out, "--resume", "--quiet")
    assert done.returncode == 2
    assert one_line(done.stderr) == (f"traindx: error: run.steps: got 20, expected 60, as {out} was started with, "
                                     "to resume it (to change its length on purpose, add --set run.steps=N)")
    assert open_run(out).status == "stopped"


def test_a_length_changed_on_purpose_trains_on_and_the_wall_clock_goes_on(stopped):
    config, out = stopped
    _check_resume_length(out, RunConfig.from_toml(config, ["run.steps=40"]), ["run.steps=40"])  # not refused
    before = open_run(out).series("wall_time")[1]
    assert Trainer(RunConfig.from_toml(config, ["run.steps=40"]), out, resume=True).run() == "finished"
    with open_run(out) as run:
        steps, wall = run.series("wall_time")
        assert run.status == "finished" and np.array_equal(steps, np.arange(1, 41))
        assert [e["step"] for e in run.events() if e["kind"] == "resumed"] == [25]
    np.testing.assert_array_equal(wall[:25], before[:25])
    assert np.all(np.diff(wall) > 0) and wall[25] > before[24]  # on from where it stopped, not from 0


@pytest.mark.parametrize("steps", [60, 20])
def test_a_run_with_no_steps_left_is_refused_not_finished_again(stopped, steps):
    config, out = stopped
    cfg = RunConfig.from_toml(config)
    Trainer(cfg, out, resume=True).run()  # to its end: 60 steps
    events = open_run(out).events()
    cfg.sections["run"]["steps"] = steps
    with pytest.raises(ConfigError, match=f"run.steps: got {steps}, expected more than the 60 steps .* has trained "
                                          "already .*resume with --set run.steps=N"):
        Trainer(cfg, out, resume=True).run()
    with open_run(out) as run:
        assert run.status == "finished" and run.events() == events
