"""What the reader's safety costs: ``open_run`` (length check, bounded retries, structure check) and
a poll of an open run, against plain h5py doing the same reads, interleaved in one process.

    .venv/bin/python benches/reader.py [--repeats 30]

Target: the GUI's live polling no slower than plain h5py (ratio ≤ 1.1 per poll); opening a run a
few milliseconds at most.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import h5py  # noqa: E402


def bare_open(path: Path):
    return h5py.File(path, "r", libver="latest", swmr=True)


def bare_poll(f) -> None:
    """What the poller reads each tick: every series' new rows, the live row, the events."""
    f["live"].refresh()
    f["live"][0]

    def visit(name, obj):
        if isinstance(obj, h5py.Group) and "step" in obj:
            obj["step"].refresh()
            obj["value"].refresh()
            n = obj["step"].shape[0]
            obj["step"][max(0, n - 10):n], obj["value"][max(0, n - 10):n]
    f["series"].visititems(visit)
    f["events"].refresh()
    f["events"][:]


def reader_poll(run) -> None:
    run.raw_status
    for name in run.names():
        run.series(name, max(0, run.length(name) - 10))
    run.events()


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    from engine.store import open_run
    from gui.synthetic import write_synthetic_run
    with tempfile.TemporaryDirectory() as tmp:
        path = write_synthetic_run(Path(tmp) / "run.h5", steps=20_000, eval_every=200)
        opens = {"h5py": [], "open_run": []}
        polls = {"h5py": [], "open_run": []}
        bare, run = bare_open(path), open_run(path)
        for _ in range(args.repeats):  # interleaved, so load on the machine hits both alike
            opens["h5py"].append(timed(lambda: bare_open(path).close()))
            opens["open_run"].append(timed(lambda: open_run(path).close()))
            polls["h5py"].append(timed(bare_poll, bare))
            polls["open_run"].append(timed(reader_poll, run))
        bare.close()
        run.close()
    for what, table in (("open", opens), ("poll", polls)):
        a, b = (statistics.median(table[k]) * 1e3 for k in ("h5py", "open_run"))
        spread = statistics.quantiles(table["open_run"], n=10)
        print(f"{what}: plain h5py {a:.2f} ms, open_run {b:.2f} ms (ratio {b / a:.2f}; open_run p10–p90 "
              f"{spread[0] * 1e3:.2f}–{spread[-1] * 1e3:.2f} ms), median of {args.repeats}")


if __name__ == "__main__":
    main()
