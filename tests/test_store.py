import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import ROOT
from engine import open_run
from engine.lock import writer_pid
from engine.store import RunWriter

READER = """
import sys, time
from engine import open_run
run = open_run(sys.argv[1])
seen = []
deadline = time.time() + 20
while time.time() < deadline:
    n = len(run.series("x")[0])
    if not seen or n != seen[-1]:
        seen.append(n)
    if n >= 30:
        break
    time.sleep(0.05)
print(seen, run.status)
"""


def test_another_process_reads_the_file_while_it_grows(tmp_path):
    path = tmp_path / "live.h5"
    w = RunWriter(path, json.dumps({"config": {}}), flush_seconds=0.05)
    w.declare_series("x")
    w.start_swmr()
    reader = subprocess.Popen([sys.executable, "-c", READER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    for step in range(1, 31):
        w.append("x", step, float(step))
        w.maybe_flush()
        time.sleep(0.03)
    w.flush()
    out = reader.communicate(timeout=30)[0]
    w.close("finished")
    seen = eval(out.rsplit("]", 1)[0] + "]")
    assert len(seen) >= 3 and seen[-1] == 30  # it saw the series grow, not just its end
    assert out.strip().endswith("running")


def test_rows_and_events_round_trip_with_plain_h5py(tmp_path):
    path = tmp_path / "r.h5"
    w = RunWriter(path, json.dumps({"config": {"run": {"name": "n"}}}))
    w.declare_series("a/b", (3,), "float32", "s", "a row of three")
    w.declare_series("t", (), "json")
    w.start_swmr()
    w.append("a/b", 5, [1, 2, 3])
    w.append("t", 5, json.dumps({"rows": [["é", 1]]}))
    w.event(5, "note", "héllo <b>")
    w.close("stopped")
    with h5py.File(path, "r") as f:  # the documented format, read without TrainDx
        assert f.attrs["format"] == "traindx.run" and f.attrs["status"] == "stopped"
        assert list(f["series/a/b/step"][:]) == [5]
        assert f["series/a/b/value"].shape == (1, 3) and f["series/a/b/value"].dtype == np.float32
        assert f["events"][0]["kind"] == b"note"
        assert json.loads(f.attrs["config"])["config"]["run"]["name"] == "n"
    run = open_run(path)
    assert run.series("t")[1][0] == {"rows": [["é", 1]]}
    assert run.events()[0]["message"] == "héllo <b>"
    assert run.row_at("a/b", 100)[0] == 5


def test_declaring_after_swmr_is_refused(tmp_path):
    w = RunWriter(tmp_path / "r.h5", "{}")
    w.start_swmr()
    with pytest.raises(RuntimeError, match="after the run file switched to SWMR"):
        w.declare_series("late")
    w.close("finished")


def test_a_killed_run_stays_readable_and_says_it_crashed_then_continues(tmp_path):
    out = tmp_path / "k.h5"
    cli = [sys.executable, "-m", "engine.cli", "run", str(ROOT / "assets/examples/digits-mlp.toml"), "--out", str(out),
           "--set", "run.checkpoint_every=20", "--quiet"]
    proc = subprocess.Popen([*cli, "--set", "run.steps=1000000"], cwd=ROOT)
    deadline = time.time() + 60
    n = 0
    while time.time() < deadline and n < 50:
        time.sleep(0.3)
        if out.exists():
            try:
                with open_run(out) as run:
                    n = run.length("train/loss")
                    assert run.status == "running"
            except (OSError, KeyError):
                pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert n >= 50
    assert writer_pid(out) is None  # the OS let go of the killed writer's lock: the file can be resumed
    run = open_run(out)
    assert run.status == "crashed" and run.raw_status == "running" and not run.finished
    steps, losses = run.series("train/loss")
    assert len(steps) >= n and np.array_equal(steps, np.arange(1, len(steps) + 1))
    assert np.all(np.isfinite(losses))
    run.close()

    # the killed writer left the file marked as open for writing: --resume must still append to it,
    # from the last checkpoint, whose rows were on disk before it was saved
    from engine.store import latest_checkpoint
    ckpt = int(latest_checkpoint(out).stem.split("_")[1])
    assert ckpt <= len(steps)
    end = ckpt + 30
    subprocess.run([*cli, "--resume", "--set", f"run.steps={end}"], cwd=ROOT, check=True, timeout=120)
    with open_run(out) as run:
        assert run.status == "finished"
        np.testing.assert_array_equal(run.series("train/loss")[0], np.arange(1, end + 1))
        assert [e["step"] for e in run.events() if e["kind"] == "resumed"] == [ckpt]


KILLED_WRITER = """
import json, os, sys
from engine.store import RunWriter
w = RunWriter(sys.argv[1], json.dumps({"config": {"run": {"name": "torn"}}}))
w.declare_series("x")
w.declare_series("j", dtype="json")
w.start_swmr()
for step in range(1, 6):
    w.append("x", step, float(step))
    w.append("j", step, json.dumps({"row": f"json-row-{step}"}))
    w.event(step, "note", f"event-message-{step}")
w.flush()
os._exit(0)  # killed: the file stays marked as open for writing
"""


def _lose_string(path, text: str) -> None:
    """Make the heap object holding exactly ``text`` unfindable, as when a writer is killed before the
    string a row points at reaches the disk (HDF5: "bad heap index")."""
    data = bytearray(path.read_bytes())
    at = data.index(text.encode())  # an object's index is 16 bytes before its data
    data[at - 16:at - 14] = (0xFFF0).to_bytes(2, "little")
    path.write_bytes(bytes(data))


def test_rows_whose_strings_a_killed_writer_never_wrote_are_dropped_and_the_run_resumes(tmp_path):
    path = tmp_path / "torn.h5"
    subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)], cwd=ROOT, check=True, timeout=60)
    _lose_string(path, json.dumps({"row": "json-row-5"}))
    _lose_string(path, "event-message-5")
    with open_run(path) as run:  # the reader keeps the whole events
        assert run.status == "crashed"
        assert [e["message"] for e in run.events()] == [f"event-message-{k}" for k in range(1, 5)]
    with h5py.File(path, "r", swmr=True) as f, pytest.raises(RuntimeError, match="heap"):
        h5py.File(tmp_path / "copy.h5", "w").copy(f["series"], "series")  # what HDF5's own copy made of it
    w = RunWriter(path, json.dumps({"config": {"run": {"name": "torn"}}}), resume_step=5)
    w.declare_series("x")
    w.declare_series("j", dtype="json")
    w.start_swmr()
    w.append("j", 6, json.dumps({"row": "json-row-6"}))
    w.close("finished")
    with open_run(path) as run:
        steps, rows = run.series("j")
        assert list(steps) == [1, 2, 3, 4, 6] and rows[-1] == {"row": "json-row-6"}
        assert list(run.series("x")[0]) == [1, 2, 3, 4, 5]  # a series with nothing torn keeps every row
        assert [e["step"] for e in run.events()] == [1, 2, 3, 4]
        assert run.status == "finished"


def test_not_a_run_file_is_a_clear_error(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = 1
    with pytest.raises(OSError, match="not a TrainDx run file"):
        open_run(path)
    (tmp_path / "junk.h5").write_text("hello")
    with pytest.raises(OSError, match="junk.h5: not an HDF5 file"):
        open_run(tmp_path / "junk.h5")


def test_ctrl_c_stops_cleanly_and_leaves_a_finished_file(tmp_path):
    out = tmp_path / "c.h5"
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", str(ROOT / "assets/examples/digits-mlp.toml"),
                             "--out", str(out), "--set", "run.steps=1000000", "--set", "plugins.sharpness.enabled=false"],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not out.exists():
        time.sleep(0.2)
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped:" in err and "Traceback" not in err
    run = open_run(out)
    kinds = [e["kind"] for e in run.events()]
    assert run.status == "stopped" and kinds[-2:] == ["stopped", "checkpoint"]  # resumable from there
    assert run.length("train/loss") > 0
