"""Report export on a long run: a 10,000-step digits run with every installed plugin at its defaults
must report in under 10 s, its HTML must stay under 5 MB and its PDF under 2 MB. A run file with one
scatter of 20,000 points (denser than any plugin draws today) must make a PDF in under 10 s and
under 2 MB too: dense plots go into the PDF as pictures, not as a shape per point.

    .venv/bin/python benches/report.py [--steps 10000] [--run runs/bench-report.h5] [--retrain]

The run file is trained once and reused (pass --retrain to make it again).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from engine import open_run, run_training  # noqa: E402
from engine.plugin import discover  # noqa: E402
from engine.store import RunWriter  # noqa: E402
from gui.report import export_report  # noqa: E402

LIMIT_SECONDS = 10.0
LIMIT_BYTES = {".html": 5 * 2 ** 20, ".pdf": 2 * 2 ** 20}
DENSE_POINTS = 20_000


def train(path: Path, steps: int) -> float:
    config = {"run": {"name": "bench-report", "seed": 0, "steps": steps, "eval_every": 50,
                      "checkpoint_every": 0, "threads": 1},
              "data": {"source": "digits", "batch_size": 64},
              "model": {"name": "mlp", "hidden": [64, 64]},
              "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
              "loss": {"name": "cross_entropy"},
              "plugins": {name: {} for name in sorted(discover())}}
    t0 = time.perf_counter()
    status = run_training(config, path)
    print(f"trained {steps} steps with plugins {', '.join(config['plugins'])}: {status} "
          f"in {time.perf_counter() - t0:.1f} s")
    return time.perf_counter() - t0


def dense_run(path: Path, points: int) -> Path:
    """A run file with a short loss curve and one scatter view of ``points`` points coloured by a
    third column, as error_slices draws its embedding."""
    rng = np.random.default_rng(0)
    w = RunWriter(path, json.dumps({"config": {"run": {"name": "bench-dense", "steps": 100}}}))
    w.declare_series("train/loss")
    w.declare_series("dense/points", (points, 3), "float32")
    w.write_plugin_info("core", "Training", "", (), [{"kind": "line", "title": "Loss", "series": ["train/loss"],
                                                       "help": "", "options": {}}])
    w.write_plugin_info("dense", "Dense", "", (), [{"kind": "scatter", "title": f"{points:,} points",
                                                     "series": ["dense/points"], "help": "", "options": {}}])
    w.start_swmr()
    w.append_many("train/loss", np.arange(1, 101), np.exp(-np.arange(100) / 30))
    xy = rng.standard_normal((points, 2))
    w.append("dense/points", 100, np.column_stack([xy, rng.integers(0, 5, points)]).astype(np.float32))
    w.close("finished")
    return path


def timed_export(run: Path, out: Path, **kw) -> bool:
    """Export, print the time and size, and say whether both are within their limits."""
    t0 = time.perf_counter()
    export_report(run, out, **kw)
    seconds = time.perf_counter() - t0
    size, limit = out.stat().st_size, LIMIT_BYTES[out.suffix]
    json_size = out.with_suffix(".json").stat().st_size
    fast, small = seconds < LIMIT_SECONDS, size < limit
    print(f"{out.name:12s} {seconds:5.2f} s  {size / 2 ** 20:6.2f} MiB  (json {json_size / 1024:.0f} KiB)  "
          f"{'ok' if fast else f'SLOWER than {LIMIT_SECONDS:g} s'}, "
          f"{'within' if small else 'OVER'} the {limit / 2 ** 20:g} MiB limit")
    return fast and small


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--run", type=Path, default=Path("runs/bench-report.h5"))
    parser.add_argument("--retrain", action="store_true")
    args = parser.parse_args()
    if args.retrain or not args.run.exists():
        train(args.run, args.steps)
    with open_run(args.run) as run:
        rows = {name: run.length(name) for name in run.names()}
        views = sum(len(v) for v in run.views().values())
    print(f"run file {args.run}: {args.run.stat().st_size / 2 ** 20:.1f} MiB, {len(rows)} series, "
          f"{max(rows.values())} rows in the longest, {views} views")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in (("report.html", {}), ("report.pdf", {"page_size": "a4"}),
                         ("letter.pdf", {"page_size": "letter"})):
            ok &= timed_export(args.run, Path(tmp) / name, **kw)
        dense = dense_run(Path(tmp) / "dense.h5", DENSE_POINTS)
        print(f"run file with one scatter of {DENSE_POINTS:,} points")
        ok &= timed_export(dense, Path(tmp) / "dense.pdf")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
