"""GUI responsiveness: event-loop latency while a run trains, frame time for long curves, and the
time to open a finished million-step run.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benches/gui_latency.py [--seconds 15]

Targets (issue 5): p99 latency ≤ 50 ms while training at full speed; frame ≤ 25 ms at 1e6 points;
a finished 1e6-step run on screen in ≤ 2 s.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402


def percentile(xs, q):
    return float(np.percentile(np.asarray(xs), q))


def wait_until(app, cond, timeout=60.0):
    t0 = time.perf_counter()
    while not cond():
        app.processEvents()
        time.sleep(0.001)
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("condition not met")


def event_loop_latency(app, window, seconds: float) -> dict:
    """A 10 ms timer measures how late the event loop runs it while the engine trains and the plots
    follow the growing run file."""
    from PySide6 import QtCore
    wait_until(app, lambda: getattr(window, "plugins_loaded", False))
    for key, text in {"run.steps": "1000000", "run.eval_every": "50"}.items():
        window.form.all_editors()[key].input.setText(text)
    if not window.start_run():
        raise RuntimeError(f"could not start: {window.form.errors}")
    wait_until(app, lambda: window.state == "running" and window.runs[window.live_run_id].data.length("train/loss") > 0,
               timeout=90)
    live_path = window.runs[window.live_run_id].path
    arrival = []  # seconds from the engine's last write of the file (its mtime) to the rows reaching the GUI

    def on_rows(run_id, chunk):
        if run_id == window.live_run_id:
            arrival.append(time.time() - os.stat(live_path).st_mtime)
    window.poller.rows.connect(on_rows)
    late, last = [], [time.perf_counter()]
    timer = QtCore.QTimer(interval=10)
    timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)

    def tick():
        now = time.perf_counter()
        late.append(max(0.0, (now - last[0]) * 1000 - 10))
        last[0] = now
    timer.timeout.connect(tick)
    timer.start()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.0005)
    timer.stop()
    rows = window.runs[window.live_run_id].data.length("train/loss")
    window.stop_run()
    wait_until(app, lambda: window.engine_run.process is None, timeout=60)
    window.poller.rows.disconnect(on_rows)
    return {"arrival_p50_ms": 1000 * percentile(arrival, 50), "arrival_max_ms": 1000 * max(arrival),
            "p50_ms": percentile(late, 50), "p99_ms": percentile(late, 99), "max_ms": max(late),
            "samples": len(late), "rows_trained": rows, "steps_per_s": rows / seconds}


def frame_times(app, n: int, frames: int = 30) -> dict:
    """Append 1,000 rows to a curve of ``n`` points, smooth, reduce and repaint: one live frame."""
    from gui.rundata import RunData
    from gui.views import Trace, ViewWidget
    view = {"kind": "line", "title": "Loss", "series": ["train/loss", "val/loss"], "options": {}}
    d = RunData("bench")
    rng = np.random.default_rng(0)
    d.extend("train/loss", np.arange(1, n + 1), rng.random(n))
    d.extend("val/loss", np.arange(100, n + 1, 100), rng.random(n // 100))
    w = ViewWidget(view)
    w.resize(700, 350)
    w.show()
    w.set_global_smoothing(0.6)
    w.set_traces([Trace(d, "#4c8fe0", "bench")])
    app.processEvents()
    times = []
    step = n
    for _ in range(frames):
        new = np.arange(step + 1, step + 1001)
        step += 1000
        t0 = time.perf_counter()
        d.extend("train/loss", new, rng.random(1000))
        w.redraw()
        w.canvas.viewport().repaint()
        times.append((time.perf_counter() - t0) * 1000)
    w.close()
    w.deleteLater()
    return {"points": n, "median_ms": statistics.median(times), "p95_ms": percentile(times, 95)}


def open_million(app, window, tmp: Path) -> dict:
    from gui.synthetic import write_synthetic_run
    t0 = time.perf_counter()
    path = write_synthetic_run(tmp / "million.h5", steps=1_000_000, eval_every=1000, demo=False)
    written = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_id = window.open_run(path)
    data = window.runs[run_id].data
    wait_until(app, lambda: data.length("train/loss") == 1_000_000 and
               ("core", "Loss") in window.plots.widgets and window.plots.widgets[("core", "Loss")]._drawn_key
               is not None and window.plots.widgets[("core", "Loss")]._drawn_key[0][0][1] == data.version)
    app.processEvents()
    window.repaint()
    return {"open_s": time.perf_counter() - t0, "write_s": written}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15.0, help="how long to measure latency while training")
    args = parser.parse_args()
    from PySide6 import QtCore
    from gui.cli import make_app
    app = make_app()
    from gui.window import MainWindow
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        settings = QtCore.QSettings(str(tmp / "s.ini"), QtCore.QSettings.Format.IniFormat)
        window = MainWindow(settings=settings, runs_dir=tmp / "runs")
        window.confirm_close = False
        window.resize(1500, 950)
        window.show()
        print(f"machine: {os.cpu_count()} CPU cores, Qt platform {app.platformName()}")
        lat = event_loop_latency(app, window, args.seconds)
        print(f"event-loop latency while training ({args.seconds:.0f} s, {lat['steps_per_s']:.0f} steps/s, "
              f"{lat['samples']} samples): p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, "
              f"max {lat['max_ms']:.1f} ms  (target p99 ≤ 50 ms)")
        print(f"file write → rows in the GUI thread: p50 {lat['arrival_p50_ms']:.0f} ms, "
              f"max {lat['arrival_max_ms']:.0f} ms  (target ≤ 500 ms; poll period 200 ms)")
        for entry in list(window.runs):
            window._remove_run(entry)
        for n in (10_000, 100_000, 1_000_000):
            f = frame_times(app, n)
            print(f"frame time, {n:>9,} points (append 1,000 rows, smooth, reduce, repaint): "
                  f"median {f['median_ms']:.1f} ms, p95 {f['p95_ms']:.1f} ms  (target ≤ 25 ms at 1e6)")
        o = open_million(app, window, tmp)
        print(f"open a finished 1,000,000-step run: {o['open_s']:.2f} s to plotted  (target ≤ 2 s; "
              f"writing the synthetic file took {o['write_s']:.1f} s)")
        window.shutdown()
        window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
