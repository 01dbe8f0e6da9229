import time

import pytest

from conftest import tiny_config
from engine import open_run
from engine.config import RunConfig
from engine.worker import EngineProcess


def _wait_for(engine, predicate, seconds=60):
    """Collect status messages until one satisfies ``predicate``; return all seen."""
    seen, deadline = [], time.time() + seconds
    while time.time() < deadline:
        for msg in engine.poll():
            seen.append(msg)
            if predicate(msg):
                return seen
        time.sleep(0.02)
    raise AssertionError(f"no matching status message in {seconds}s; saw {seen[-5:]}")


def _state(name):
    return lambda m: m["kind"] == "state" and m.get("state") == name


@pytest.fixture
def engine(tmp_path):
    cfg = RunConfig.from_dict(tiny_config(run={"steps": 1_000_000, "eval_every": 500}))
    e = EngineProcess(cfg, tmp_path / "w.h5")
    e.start()
    yield e
    e.kill()
    e.join(10)


def test_pause_resume_checkpoint_stop_through_the_control_channel(engine, tmp_path):
    _wait_for(engine, lambda m: m["kind"] == "progress" and m["step"] > 100)
    engine.pause()
    _wait_for(engine, _state("paused"))
    run = open_run(tmp_path / "w.h5")
    n = run.length("train/loss")
    time.sleep(0.5)
    assert run.length("train/loss") == n  # nothing trains while paused
    engine.checkpoint()
    engine.resume_training()
    _wait_for(engine, _state("running"))
    engine.stop()
    seen = _wait_for(engine, _state("stopped"))
    _wait_for(engine, lambda m: m["kind"] == "exit")
    assert engine.exitcode == 0
    progress = [m for m in seen if m["kind"] == "progress"]
    assert all({"step", "total", "steps_per_s", "eta_s", "loss"} <= set(m) for m in progress)
    run = open_run(tmp_path / "w.h5")
    kinds = [e["kind"] for e in run.events()]
    assert run.status == "stopped"
    assert kinds.index("paused") < kinds.index("checkpoint") < kinds.index("resumed") < kinds.index("stopped")
    assert run.length("train/loss") > n


def test_a_dead_engine_is_reported_and_its_file_says_crashed(engine, tmp_path):
    _wait_for(engine, lambda m: m["kind"] == "progress" and m["step"] > 50)
    time.sleep(1.2)  # at least one flush
    engine.kill()
    seen = _wait_for(engine, lambda m: m["kind"] == "exit")
    assert seen[-1]["exitcode"] != 0
    run = open_run(tmp_path / "w.h5")
    assert run.status == "crashed" and run.length("train/loss") > 0


def test_an_error_in_the_child_comes_back_as_a_message(tmp_path):
    cfg = RunConfig.from_dict(tiny_config())
    (tmp_path / "bad.h5").mkdir()  # the run file cannot be created: a directory is in the way
    e = EngineProcess(cfg, tmp_path / "bad.h5")
    e.start()
    seen = _wait_for(e, lambda m: m["kind"] == "exit")
    errors = [m for m in seen if m["kind"] == "error"]
    assert errors and "bad.h5" in errors[0]["message"]
    assert seen[-1]["exitcode"] == 1
