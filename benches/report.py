"""Report export on a long run: a 10,000-step digits run with every installed plugin at its defaults
must report in under 10 s, and its HTML must stay under 5 MB.

    .venv/bin/python benches/report.py [--steps 10000] [--run runs/bench-report.h5] [--retrain]

The run file is trained once and reused (pass --retrain to make it again).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import open_run, run_training  # noqa: E402
from engine.plugin import discover  # noqa: E402
from gui.report import export_report  # noqa: E402

LIMIT_SECONDS = 10.0
LIMIT_HTML_BYTES = 5 * 2 ** 20


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


def timed_export(run: Path, out: Path, **kw) -> float:
    t0 = time.perf_counter()
    export_report(run, out, **kw)
    return time.perf_counter() - t0


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
            out = Path(tmp) / name
            seconds = timed_export(args.run, out, **kw)
            size = out.stat().st_size
            json_size = out.with_suffix(".json").stat().st_size
            verdict = "ok" if seconds < LIMIT_SECONDS else f"SLOWER than {LIMIT_SECONDS:g} s"
            print(f"{name:12s} {seconds:5.2f} s  {size / 2 ** 20:6.2f} MiB  (json {json_size / 1024:.0f} KiB)  "
                  f"{verdict}")
            ok &= seconds < LIMIT_SECONDS
            if name.endswith(".html"):
                fits = size < LIMIT_HTML_BYTES
                print(f"{'':12s} HTML size {'within' if fits else 'OVER'} the {LIMIT_HTML_BYTES / 2 ** 20:g} MiB limit")
                ok &= fits
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
