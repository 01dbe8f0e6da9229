"""Damaged run files fail fast: open_run, `traindx info`, `traindx report` and the GUI's poller each
say in one line which file is wrong and how, within 5 s, on a corpus made from a real run file,
and on hypothesis' flips and cuts of one."""
import json
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, tiny_config
from engine import open_run, run_training
from engine.errors import RunFileError
from runfile_corpus import DAMAGE, build_corpus

SECONDS = 5.0


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "good.h5"
    run_training(tiny_config(run={"steps": 60, "eval_every": 20}, plugins={"calibration": {}}), path)
    return path


@pytest.fixture(scope="module")
def corpus(good, tmp_path_factory):
    return build_corpus(good, tmp_path_factory.mktemp("corpus"))


def read_everything(path):
    """What the GUI and the report read from a run file."""
    with open_run(path) as run:
        run.status, run.config, run.meta, run.views(), run.plugin_titles(), run.events()
        for name in run.names():
            run.series(name)
            run.row_at(name)
        for name in ("class_names", "train/labels", "val/ids", "val/x_preview"):
            if run.has_data(name):
                run.data(name)


@pytest.mark.parametrize("name", DAMAGE)
def test_open_run_refuses_each_damaged_file_at_once_saying_what_is_wrong(corpus, name):
    path, words = corpus[name]
    t0 = time.monotonic()
    with pytest.raises(RunFileError) as err:
        read_everything(path)
    assert time.monotonic() - t0 < SECONDS
    message = str(err.value)
    assert message.startswith(f"{path}: ") and words in message and "\n" not in message


def test_the_good_file_reads_whole(good):
    read_everything(good)  # the corpus's damage is the only reason its files fail


def test_a_writer_killed_mid_flush_leaves_a_readable_run(good, tmp_path):
    """A SIGKILLed writer may leave a series with more steps than values (HDF5 wrote one extent and
    not the other): the file never closed is read with the rows that have both; the same in a
    closed file is damage (the corpus's values_shorter_than_steps)."""
    import h5py
    import shutil
    torn = tmp_path / "torn.h5"
    shutil.copyfile(good, torn)
    with h5py.File(torn, "r+") as f:
        f["live"][0] = (b"running", 0.0)
        f.attrs["writer_pid"] = -1  # no such process: the run reads as crashed
        value = f["series/train/loss/value"]
        value.resize(value.shape[0] - 2, axis=0)
    with open_run(good) as run:
        steps, losses = run.series("train/loss")
    with open_run(torn) as run:
        assert run.status == "crashed" and run.length("train/loss") == len(steps) - 2
        got_steps, got_losses = run.series("train/loss")
        assert list(got_steps) == list(steps[:-2]) and list(got_losses) == list(losses[:-2])
        assert run.row_at("train/loss") == (int(steps[-3]), losses[-3])
    read_everything(torn)


COMMANDS = """
import contextlib, io, json, sys, time
from engine.cli import main
out = {}
for path in sys.argv[1:]:
    for command in (["info", path], ["report", path, "--out", path + ".html"]):
        err = io.StringIO()
        t0 = time.monotonic()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(command)
        out[f"{command[0]} {path}"] = (rc, err.getvalue(), time.monotonic() - t0)
print(json.dumps(out))
"""


def test_info_and_report_commands_say_what_is_wrong_in_one_line(corpus):
    paths = [str(p) for p, _ in corpus.values()]
    done = subprocess.run([sys.executable, "-c", COMMANDS, *paths], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for path, words in corpus.values():
        for command in ("info", "report"):
            rc, err, seconds = results[f"{command} {path}"]
            line = err.strip()
            assert rc == 2 and seconds < SECONDS, (command, path, err)
            assert len(line.splitlines()) == 1 and str(path) in line and words in line, (command, line)
            assert "Traceback" not in err


def test_the_two_files_that_hung_for_minutes_fail_at_once_in_real_commands(corpus):
    info_90, report_50 = corpus["truncated_90"][0], corpus["truncated_50"][0]
    for command in (["info", str(info_90)], ["report", str(report_50), "--out", str(report_50) + ".pdf"]):
        t0 = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "engine.cli", *command], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2 and "truncated" in done.stderr and "Traceback" not in done.stderr
        assert time.monotonic() - t0 < 15  # a fresh interpreter with Qt: most of this is imports


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1,
                      max_size=64),
       cut=st.one_of(st.none(), st.floats(0, 1, exclude_max=True)))
def test_fuzzed_run_files_never_hang_or_crash_the_reader(good, tmp_path_factory, flips, cut):
    data = bytearray(good.read_bytes())
    for where, byte in flips:
        data[int(where * len(data))] = byte
    if cut is not None:
        data = data[:int(cut * len(data))]
    path = tmp_path_factory.getbasetemp() / "fuzzed.h5"
    path.write_bytes(bytes(data))
    t0 = time.monotonic()
    try:
        read_everything(path)  # a flip in raw data reads back as another number: not an error
    except RunFileError as exc:
        assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
    assert time.monotonic() - t0 < SECONDS
