"""Background work for the GUI: one small protocol (Orange's) and the run-file poller thread.

A task is a function ``fn(state, *args)`` run on a thread pool; it reports through ``TaskState``
(``set_progress_value``, ``set_status``, ``set_partial_result``, ``is_interruption_requested``) and
its result or exception reaches the GUI thread as a queued signal. The poller is one thread that
reads the rows each open run file gained since the last look and hands them over the same way.
"""
from __future__ import annotations

import threading
import time
import traceback
from pathlib import Path

from PySide6 import QtCore

STALE_REOPEN_SECONDS = 3.0
POLL_SECONDS = 0.2  # the engine flushes every 1 s; data must be on screen within 0.5 s of a flush
MAX_READ_ERRORS = 3  # reads of one file failing in a row (each after the reader's own retries): damage
FINAL_STATUSES = ("finished", "stopped", "failed", "diverged", "crashed")


class TaskState(QtCore.QObject):
    """What a running task may tell the GUI; every signal is delivered in the GUI thread."""

    progress = QtCore.Signal(float)
    status = QtCore.Signal(str)
    partial = QtCore.Signal(object)
    done = QtCore.Signal(object)
    failed = QtCore.Signal(object)  # the exception, with ``__traceback_text__`` attached

    def __init__(self, parent=None):
        super().__init__(parent)
        self._interrupt = threading.Event()
        self.finished = False

    def set_progress_value(self, percent: float) -> None:
        self.progress.emit(float(percent))

    def set_status(self, text: str) -> None:
        self.status.emit(text)

    def set_partial_result(self, value) -> None:
        self.partial.emit(value)

    def is_interruption_requested(self) -> bool:
        return self._interrupt.is_set()

    def request_interruption(self) -> None:
        self._interrupt.set()


class _Runnable(QtCore.QRunnable):
    def __init__(self, state: TaskState, fn, args):
        super().__init__()
        self.state, self.fn, self.args = state, fn, args

    def run(self) -> None:
        try:
            result = self.fn(self.state, *self.args)
        except Exception as exc:  # handed to the GUI, which shows it
            exc.__traceback_text__ = traceback.format_exc()
            self.state.finished = True
            self.state.failed.emit(exc)
            return
        self.state.finished = True
        self.state.done.emit(result)


class TaskRunner(QtCore.QObject):
    """Starts tasks on a private thread pool and can interrupt and wait for all of them."""

    def __init__(self, parent=None, threads: int = 2):
        super().__init__(parent)
        self.pool = QtCore.QThreadPool(self)
        self.pool.setMaxThreadCount(threads)
        self._states: list[TaskState] = []

    def start(self, fn, *args, on_done=None, on_exception=None, on_partial=None, on_progress=None) -> TaskState:
        state = TaskState(self)
        for signal, slot in ((state.done, on_done), (state.failed, on_exception), (state.partial, on_partial),
                             (state.progress, on_progress)):
            if slot is not None:
                signal.connect(slot)
        state.done.connect(lambda _: self._forget(state))
        state.failed.connect(lambda _: self._forget(state))
        self._states.append(state)
        self.pool.start(_Runnable(state, fn, args))
        return state

    def _forget(self, state: TaskState) -> None:
        if state in self._states:
            self._states.remove(state)
        state.setParent(None)  # freed once nothing (a caller, a signal spy) holds it any more

    def shutdown(self, timeout_ms: int = 10000) -> None:
        for s in self._states:
            s.request_interruption()
        self.pool.waitForDone(timeout_ms)


class RunPoller(QtCore.QThread):
    """Follows run files: every POLL_SECONDS it reads each file's new rows in this worker thread and
    emits them; the GUI thread only appends arrays. Files not yet there (the engine is still
    creating them) are retried; a damaged file is reported and dropped at once, and whatever goes
    wrong with one file never stops the others from being followed."""

    rows = QtCore.Signal(str, object)  # run id, {series name: (steps, values)} of new rows
    meta = QtCore.Signal(str, object)  # run id, {status, views, titles, events, config, meta}
    failed = QtCore.Signal(str, str)  # run id, one line naming the file and what is wrong

    def __init__(self, parent=None, period: float = POLL_SECONDS):
        super().__init__(parent)
        self.period = period
        self._lock = threading.Lock()
        self._wanted: dict[str, Path] = {}
        self._fresh: set[str] = set()
        self._open: dict[str, object] = {}
        self._lengths: dict[str, dict[str, int]] = {}
        self._seen: dict[str, tuple] = {}
        self._first_try: dict[str, float] = {}
        self._quiet: dict[str, tuple[str, float]] = {}  # status, when rows last arrived
        self._closed: set[str] = set()
        self._read_errors: dict[str, int] = {}  # failed reads in a row, per run
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.ticks = 0

    # -- GUI thread -------------------------------------------------------------------------------
    def add(self, run_id: str, path: str | Path, fresh: bool = True) -> None:
        """Follow a run file; ``fresh`` reads it again from its first row (a reopened run)."""
        with self._lock:
            self._wanted[run_id] = Path(path)
            if fresh:
                self._fresh.add(run_id)
        self._wake.set()

    def remove(self, run_id: str) -> None:
        with self._lock:
            self._wanted.pop(run_id, None)
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.wait()

    # -- worker thread ----------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.wait(self.period)
                self._wake.clear()
                if self._stop.is_set():
                    break
                self.tick()
        finally:
            for reader in self._open.values():
                reader.close()
            self._open.clear()

    def tick(self) -> None:
        with self._lock:
            wanted = dict(self._wanted)
            fresh, self._fresh = self._fresh, set()
        for run_id in fresh:
            self._forget(run_id)
        for run_id in [r for r in self._open if r not in wanted]:
            self._forget(run_id)
        for run_id, path in wanted.items():
            if self._stop.is_set():
                return
            try:
                self._follow(run_id, path)
            except Exception as exc:  # one bad file never stops the others
                self._give_up(run_id, str(exc) if str(path) in str(exc) else f"{path}: {exc}")
        self.ticks += 1

    def _follow(self, run_id: str, path: Path) -> None:
        from engine.store import open_run
        reader = self._open.get(run_id)
        if reader is None:
            try:
                reader = open_run(path)
            except OSError as exc:  # RunFileError names the file and what is wrong
                waited = time.monotonic() - self._first_try.setdefault(run_id, time.monotonic())
                if path.exists() and not getattr(exc, "transient", False) or \
                        waited > (20 if path.exists() else 60):  # a new run's engine may be starting
                    self._give_up(run_id, str(exc))
                return
            self._open[run_id] = reader
            self._lengths.setdefault(run_id, {})
        try:
            grew = self._read_new(run_id, reader)
            self._read_errors.pop(run_id, None)
        except (OSError, KeyError, ValueError) as exc:
            grew = None  # a read that raced the writer: reopen and go on from the same rows
            self._read_errors[run_id] = self._read_errors.get(run_id, 0) + 1
            if self._read_errors[run_id] >= MAX_READ_ERRORS:
                raise
        if grew is None or (not grew and self._stale(run_id)):
            self._open.pop(run_id).close()
            self._seen.pop(run_id, None)
            if not path.exists():
                self._give_up(run_id, f"{path}: the run file disappeared")

    def _give_up(self, run_id: str, message: str) -> None:
        self._forget(run_id)
        self.failed.emit(run_id, message)
        self.remove(run_id)

    def _forget(self, run_id: str) -> None:
        reader = self._open.pop(run_id, None)
        if reader is not None:
            try:
                reader.close()
            except (OSError, RuntimeError):  # a damaged file may not even close cleanly
                pass
        for table in (self._lengths, self._seen, self._quiet, self._first_try, self._read_errors):
            table.pop(run_id, None)
        self._closed.discard(run_id)

    def _stale(self, run_id: str) -> bool:
        """A running file that has not grown for a while may have been opened before the writer
        switched to SWMR (such a reader never sees new rows): worth reopening."""
        status, since = self._quiet.get(run_id, (None, time.monotonic()))
        return status == "running" and time.monotonic() - since > STALE_REOPEN_SECONDS

    def _read_new(self, run_id: str, reader) -> bool:
        """Emit the rows added since the last look (and the metadata when it changed); True if any."""
        status = reader.status
        if status in FINAL_STATUSES and run_id not in self._closed:
            self._closed.add(run_id)  # the writer's last flush: read it through a fresh handle
            raise OSError("run file closed by its writer")
        lengths = dict(self._lengths[run_id])  # committed only if every series reads cleanly
        chunk = {}
        for name in reader.names():
            start = lengths.get(name, 0)
            if reader.length(name) > start:
                steps, values = reader.series(name, start)
                if len(steps):
                    chunk[name] = (steps, values)
                    lengths[name] = start + len(steps)
        events = reader.events()
        key = (status, len(events), tuple(sorted(reader.views())))
        if key != self._seen.get(run_id):
            self._seen[run_id] = key
            self.meta.emit(run_id, {"status": status, "views": reader.views(), "titles": reader.plugin_titles(),
                                    "events": events, "config": reader.config, "meta": reader.meta})
        if chunk or run_id not in self._quiet:
            self._quiet[run_id] = (status, time.monotonic())
        else:
            self._quiet[run_id] = (status, self._quiet[run_id][1])
        self._lengths[run_id] = lengths
        if chunk:
            self.rows.emit(run_id, chunk)
        return bool(chunk)
