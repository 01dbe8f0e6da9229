"""Small points of integrity: default file names stay in runs/, --out is a file, a live file's rare
torn read is retried, `traindx info | head` ends quietly, `traindx plugins` says what each plugin
takes, and a checkpoint folder appears with the first checkpoint."""
import json
import subprocess
import sys
import time

import h5py
import pytest

from conftest import ROOT, tiny_config
from engine import open_run, run_training
from engine.cli import main
from engine.errors import RunFileError
from engine.store import READ_RETRY_SECONDS, RunWriter, checkpoint_dir
from robust_helpers import one_line, run_traindx, write_config


@pytest.mark.parametrize("name, file", [("../../escaped", "escaped.h5"), ("a/b c", "a_b_c.h5"), ("..", "run.h5")])
def test_a_run_name_makes_a_file_name_inside_runs(tmp_path, name, file):
    cwd = tmp_path / "work"
    (cwd / "runs").mkdir(parents=True)
    (cwd / "runs" / file).touch()  # in the way: the refusal names the path the run would have written
    done = run_traindx("run", write_config(tmp_path), "--set", f"run.name={json.dumps(name)}", cwd=cwd)
    assert one_line(done.stderr).startswith(f"traindx: error: runs/{file}: a run file is already there")
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(["work", "runs", file, "robust.toml"])


def test_out_naming_a_folder_is_refused_before_anything_is_written(tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    done = run_traindx("run", write_config(tmp_path), "--out", folder)
    assert done.returncode == 2 and "a folder; give the run file's name" in one_line(done.stderr)
    assert list(folder.iterdir()) == []


def test_a_torn_read_is_tried_again_and_lasting_damage_named(tmp_path, monkeypatch):
    run_training(tiny_config(run={"steps": 20}), tmp_path / "r.h5")
    read, failures = h5py.Dataset.__getitem__, []

    def torn(self, key):
        if self.name == "/series/train/loss/value" and len(failures) < budget[0]:
            failures.append(key)
            raise OSError("Can't synchronously read data (bad heap index)")
        return read(self, key)
    monkeypatch.setattr(h5py.Dataset, "__getitem__", torn)
    budget = [1]
    with open_run(tmp_path / "r.h5") as run:
        assert len(run.series("train/loss")[0]) == 20 and len(failures) == 1
        budget[0], t0 = 100, time.monotonic()
        with pytest.raises(RunFileError, match=r"r.h5: cannot read series train/loss: Can't synchronously read"):
            run.series("train/loss")
        assert time.monotonic() - t0 < sum(READ_RETRY_SECONDS) + 1  # a bounded wait, never a hang


WRITER = """
import json, sys, time
from engine.store import RunWriter
w = RunWriter(sys.argv[1], json.dumps({"config": {}}), flush_seconds=0.02)  # 50 times the engine's pace
w.declare_series("rows", (8,))
w.declare_series("table", (), "json")
w.start_swmr()
for step in range(1, 10 ** 9):
    w.append("rows", step, [step] * 8)
    if step % 20 == 0:  # variable-length strings: the reads that tear
        w.append("table", step, json.dumps({"rows": [[step, "x" * 40]]}))
        w.event(step, "note", "x" * 40)
    w.maybe_flush()
    time.sleep(0.0005)
"""


def test_reading_a_file_that_is_written_fast_never_fails(tmp_path):
    path = tmp_path / "live.h5"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=ROOT)
    try:
        while not path.exists():
            time.sleep(0.05)
        reads, deadline = 0, time.monotonic() + 2
        with open_run(path) as run:
            while time.monotonic() < deadline:
                for name in ("rows", "table"):
                    steps, values = run.series(name, max(0, run.length(name) - 50))
                    assert len(steps) == len(values)
                assert all(e["kind"] == "note" for e in run.events()[1:])
                reads += 1
        assert reads > 100
    finally:
        writer.kill()
        writer.wait()


def test_info_piped_into_head_ends_without_an_error(tmp_path):
    w = RunWriter(tmp_path / "r.h5", json.dumps({"config": {}}))
    for i in range(300):
        w.declare_series(f"s{i}")
    w.start_swmr()
    w.close("finished")
    done = subprocess.run(f"{sys.executable} -m engine.cli info {tmp_path / 'r.h5'} | head -2", shell=True,
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.count("\n") == 2 and done.stderr == ""


def test_plugins_lists_titles_descriptions_and_settings_and_shows_one_in_full(capsys):
    from plugins.calibration.plugin import CalibrationPlugin
    assert main(["plugins"]) == 0
    listing = capsys.readouterr().out
    assert "calibration: Calibration  (traindx: plugins.calibration.plugin:CalibrationPlugin)" in listing
    assert "sharpness: Sharpness and the edge of stability" in listing
    assert "settings: n_bins=15, binning=\"uniform\"" in listing and "Reliability diagrams" in listing
    assert main(["plugins", "calibration"]) == 0
    full = capsys.readouterr().out
    for s in CalibrationPlugin.settings:
        assert f"{s.name} = " in full and s.help.split()[0] in full
    assert "an integer in [2, 1000]" in " ".join(full.split()) and "[plugins.calibration]" in full


def test_the_checkpoint_folder_comes_with_the_first_checkpoint(tmp_path):
    run_training(tiny_config(run={"steps": 200}, optimizer={"lr": 50.0}, loss={"name": "mse"}), tmp_path / "d.h5")
    assert open_run(tmp_path / "d.h5").status == "diverged" and not checkpoint_dir(tmp_path / "d.h5").exists()
    run_training(tiny_config(run={"steps": 5}), tmp_path / "f.h5")
    assert [p.name for p in checkpoint_dir(tmp_path / "f.h5").iterdir()] == ["step_00000005.pt"]
