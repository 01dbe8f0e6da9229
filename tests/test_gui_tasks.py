"""Background work: the task protocol and the run-file poller (no rows lost, none repeated)."""
import numpy as np
import pytest

pytest.importorskip("pytestqt")

import engine.store  # noqa: E402
from gui.synthetic import write_synthetic_run  # noqa: E402
from gui.tasks import RunPoller, TaskRunner  # noqa: E402


def test_task_reports_progress_partial_results_and_its_result(qtbot):
    runner = TaskRunner()
    progress, partial = [], []

    def task(state, n):
        for i in range(n):
            state.set_progress_value(100 * (i + 1) / n)
            state.set_partial_result(i)
        return n * 10

    done = []
    runner.start(task, 3, on_progress=progress.append, on_partial=partial.append, on_done=done.append)
    qtbot.waitUntil(lambda: done == [30])
    assert partial == [0, 1, 2] and progress[-1] == 100.0
    runner.shutdown()


def test_task_exception_reaches_the_gui_with_its_traceback(qtbot):
    runner = TaskRunner()

    def task(state):
        raise ValueError("bad input: x=3")

    failed = []
    runner.start(task, on_exception=failed.append)
    qtbot.waitUntil(lambda: len(failed) == 1)
    exc = failed[0]
    assert isinstance(exc, ValueError) and "bad input" in exc.__traceback_text__
    runner.shutdown()


def test_task_can_be_interrupted(qtbot):
    runner = TaskRunner()

    def task(state):
        while not state.is_interruption_requested():
            pass
        return "interrupted"

    done = []
    state = runner.start(task, on_done=done.append)
    state.request_interruption()
    qtbot.waitUntil(lambda: done == ["interrupted"])
    runner.shutdown()


class FlakyReader:
    """A run reader whose series 'b' fails once mid-way, like a read racing the writer's flush."""

    def __init__(self, real, fail_on):
        self.real, self.fail_on, self.calls, self.failed = real, fail_on, 0, False
        self.f = real.f

    def __getattr__(self, name):
        return getattr(self.real, name)

    def series(self, name, start=0):
        self.calls += 1
        if name == "lr" and self.calls >= self.fail_on and not self.failed:
            self.failed = True
            raise OSError("Can't synchronously read data")
        return self.real.series(name, start)


def test_poller_loses_no_rows_when_a_read_fails_half_way(qtbot, tmp_path, monkeypatch):
    path = write_synthetic_run(tmp_path / "r.h5", steps=500, demo=False)
    real_open = engine.store.open_run
    readers = []

    def flaky_open(p):
        # the first handle is dropped at once (a closed run is re-read through a fresh one)
        r = FlakyReader(real_open(p), fail_on=2 if len(readers) == 1 else 10 ** 9)
        readers.append(r)
        return r
    monkeypatch.setattr(engine.store, "open_run", flaky_open)
    poller = RunPoller(period=0.01)
    got: dict[str, list] = {}
    poller.rows.connect(lambda rid, chunk: [got.setdefault(n, []).append(s) for n, (s, _) in chunk.items()])
    poller.start()
    poller.add("r", path)
    try:
        qtbot.waitUntil(lambda: sum(map(len, got.get("train/loss", []))) >= 500 and
                        sum(map(len, got.get("lr", []))) >= 500, timeout=5000)
    finally:
        poller.stop()
    assert readers[1].failed and len(readers) >= 3
    for name in ("train/loss", "lr", "grad_norm"):
        steps = np.concatenate(got[name])
        np.testing.assert_array_equal(steps, np.arange(1, 501))  # each row exactly once


def test_poller_reports_a_missing_file_and_stops_following_it(qtbot, tmp_path):
    poller = RunPoller(period=0.01)
    poller._first_try["gone"] = -1e9  # pretend it has been retried for long enough
    poller.start()
    try:
        with qtbot.waitSignal(poller.failed, timeout=5000) as failed:
            poller.add("gone", tmp_path / "nothing.h5", fresh=False)
    finally:
        poller.stop()
    assert failed.args[0] == "gone" and "nothing.h5" in failed.args[1]


def test_an_unexpected_error_reading_one_run_marks_it_and_the_others_keep_coming(qtbot, tmp_path, monkeypatch):
    good = write_synthetic_run(tmp_path / "good.h5", steps=300, demo=False)
    bad = write_synthetic_run(tmp_path / "bad.h5", steps=300, demo=False)
    real_open = engine.store.open_run

    def open_run(path):
        reader = real_open(path)
        if path == bad:  # whatever goes wrong, even what no one foresaw, stays with its file
            reader.events = lambda: (_ for _ in ()).throw(TypeError("no events today"))
        return reader
    monkeypatch.setattr(engine.store, "open_run", open_run)
    poller = RunPoller(period=0.01)
    got, failed = [], []
    poller.rows.connect(lambda rid, chunk: got.append(rid))
    poller.failed.connect(lambda rid, message: failed.append((rid, message)))
    poller.start()
    poller.add("bad", bad)
    try:
        qtbot.waitUntil(lambda: bool(failed), timeout=5000)
        poller.add("good", good)
        qtbot.waitUntil(lambda: "good" in got, timeout=5000)
        assert poller.isRunning()
    finally:
        poller.stop()
    assert failed == [("bad", f"{bad}: no events today")]
