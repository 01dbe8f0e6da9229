"""One writer per run file, overwriting only on purpose, and resumes that load only their own run's
checkpoints: real `traindx run` processes, real signals."""
import signal
import time

import h5py
import pytest
import torch

from conftest import stop_after, tiny_config
from engine import open_run, run_training
from engine.config import RunConfig
from engine.errors import RunFileError
from engine.lock import writer_pid
from engine.store import checkpoint_dir, latest_checkpoint
from engine.trainer import Trainer
from engine.worker import EngineProcess
from robust_helpers import one_line, run_traindx, traindx, wait_for_rows, write_config
from runfile_corpus import DAMAGE


@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    """A `traindx run` writing live.h5 for this module's tests; the last one stops it by SIGTERM."""
    folder = tmp_path_factory.mktemp("live")
    config = write_config(folder, steps=10 ** 6, checkpoint_every=100)
    out = folder / "live.h5"
    proc = traindx("run", config, "--out", out, "--quiet")
    wait_for_rows(out)
    yield config, out, proc
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=60)


def test_a_second_writer_is_refused_at_once_naming_the_file_and_the_writers_pid(live_run):
    config, out, proc = live_run
    for extra in ([], ["--overwrite"], ["--resume"]):
        t0 = time.monotonic()
        done = run_traindx("run", config, "--out", out, "--quiet", *extra)
        line = one_line(done.stderr)
        assert done.returncode == 2 and time.monotonic() - t0 < 10, (extra, line)
        assert str(out) in line and f"process {proc.pid} is writing" in line, line
    assert writer_pid(out) == proc.pid


def test_the_gui_engine_cannot_continue_a_run_another_process_writes(live_run):
    config, out, proc = live_run
    engine = EngineProcess(RunConfig.from_toml(config), out, resume=True)
    engine.start()
    engine.join(60)
    errors = [m for m in engine.poll() if m["kind"] == "error"]
    assert engine.exitcode == 1 and errors
    assert errors[0]["message"] == f"{out}: process {proc.pid} is writing this run file; wait for it to end, " \
                                   "stop it, or write to another file"


def test_the_window_marks_a_damaged_run_and_the_live_run_beside_it_keeps_updating(live_run, window, qtbot, tmp_path):
    _, out, _ = live_run
    good, bad = tmp_path / "good.h5", tmp_path / "bad.h5"
    run_training(tiny_config(run={"steps": 5}), good)
    DAMAGE["live_wrong_type"][0](good, bad)  # the /live that killed the poller thread
    live_id, bad_id = window.open_run(out), window.open_run(bad)
    bad_item = window.runs[bad_id].item
    qtbot.waitUntil(lambda: "unreadable" in bad_item.text(), timeout=5000)
    assert bad_item.toolTip() == f"{bad}: /live is not one (status, heartbeat) row: float64, shape (2,)"
    seen = window.runs[live_id].data.length("train/loss")
    qtbot.waitUntil(lambda: window.runs[live_id].data.length("train/loss") > seen + 100, timeout=10_000)
    assert window.poller.isRunning()


def test_sigterm_stops_a_run_like_ctrl_c_with_a_checkpoint_and_frees_the_file(live_run):
    _, out, proc = live_run
    with open_run(out) as run:
        run_id = run.run_id
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err and f"stopped: {out}" in err
    with open_run(out) as run:  # the refused writers never touched it
        kinds = [e["kind"] for e in run.events()]
        assert run.status == "stopped" and run.run_id == run_id and kinds[-2:] == ["stopped", "checkpoint"]
        assert kinds.count("started") == 1 and "resumed" not in kinds
    assert writer_pid(out) is None and not (out.parent / "live.h5.lock").exists()


def test_overwriting_is_explicit_and_the_old_runs_checkpoints_go_with_it(tmp_path):
    out = tmp_path / "r.h5"
    old = RunConfig.from_dict(tiny_config(run={"steps": 200, "checkpoint_every": 50}))
    assert run_training(old, out) == "finished"
    assert [p.name for p in checkpoint_dir(out).iterdir()] != []
    with pytest.raises(RunFileError, match="already there; pass --overwrite .* or write to .*r-2.h5"):
        run_training(old, out)
    assert open_run(out).length("train/loss") == 200  # untouched

    new = RunConfig.from_dict(tiny_config(run={"steps": 60, "checkpoint_every": 10}))
    assert stop_after(Trainer(new, out, overwrite=True), 25).run() == "stopped"
    assert sorted(p.name for p in checkpoint_dir(out).iterdir()) == \
        ["step_00000010.pt", "step_00000020.pt", "step_00000025.pt"]  # none of the old run's
    assert Trainer(new, out, resume=True).run() == "finished"
    with open_run(out) as run:
        assert run.length("train/loss") == 60
        assert [e["step"] for e in run.events() if e["kind"] == "resumed"] == [25]


def test_a_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    cfg = RunConfig.from_dict(tiny_config(run={"steps": 60, "checkpoint_every": 10}))
    run_training(cfg, tmp_path / "other.h5")
    assert stop_after(Trainer(cfg, tmp_path / "r.h5"), 15).run() == "stopped"
    stray = checkpoint_dir(tmp_path / "r.h5") / "step_00000060.pt"  # e.g. left by an older TrainDx
    stray.write_bytes(latest_checkpoint(tmp_path / "other.h5").read_bytes())
    with pytest.raises(RunFileError, match="step_00000060.pt: a checkpoint of another run"):
        Trainer(cfg, tmp_path / "r.h5", resume=True).run()
    assert open_run(tmp_path / "r.h5").status == "stopped"


def test_files_and_checkpoints_from_before_run_ids_still_resume(tmp_path):
    cfg = RunConfig.from_dict(tiny_config(run={"steps": 40, "checkpoint_every": 10}))
    out = tmp_path / "old.h5"
    assert stop_after(Trainer(cfg, out), 15).run() == "stopped"
    with h5py.File(out, "r+") as f:
        del f.attrs["run_id"]
    for path in checkpoint_dir(out).iterdir():
        state = torch.load(path, weights_only=True)
        del state["run_id"]
        torch.save(state, path)
    assert Trainer(cfg, out, resume=True).run() == "finished"
    assert open_run(out).run_id  # it has one now, and so will its checkpoints


def test_the_command_refuses_an_existing_file_and_replaces_it_only_with_overwrite(tmp_path):
    config = write_config(tmp_path, steps=5)
    out = tmp_path / "r.h5"
    run_training(RunConfig.from_toml(config), out)
    before = out.stat().st_mtime_ns, open_run(out).run_id
    done = run_traindx("run", config, "--out", out, "--quiet")
    line = one_line(done.stderr)
    assert done.returncode == 2 and "--overwrite" in line and str(tmp_path / "r-2.h5") in line
    assert (out.stat().st_mtime_ns, open_run(out).run_id) == before
    done = run_traindx("run", config, "--out", out, "--quiet", "--overwrite")
    assert done.returncode == 0 and open_run(out).run_id != before[1]
    assert torch.load(latest_checkpoint(out), weights_only=True)["run_id"] == open_run(out).run_id
