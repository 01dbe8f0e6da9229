"""Synthetic run files with every view kind, written with the engine's own RunWriter.

For the GUI's tests and benchmarks: a million-step run in a second, and a made-up plugin ("demo",
not installed) that declares one view of each kind, so every painter is exercised without training.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.store import RunWriter

CORE_VIEWS = [
    {"kind": "line", "title": "Loss", "series": ["train/loss", "val/loss"], "help": "Training and validation loss.",
     "options": {}},
    {"kind": "line", "title": "Learning rate", "series": ["lr"], "help": "The learning rate.", "options": {}},
    {"kind": "line", "title": "Gradient norm", "series": ["grad_norm"], "help": "Size of the gradient.",
     "options": {"log_y": True}},
]
BINS = 8
DEMO_VIEWS = [
    {"kind": "band", "title": "Band", "series": ["demo/band"], "help": "A band.", "options": {}},
    {"kind": "heatmap", "title": "Heatmap", "series": ["demo/heat"], "help": "A heatmap.",
     "options": {"y_labels": [f"k{i}" for i in range(BINS)]}},
    {"kind": "histogram", "title": "Histogram", "series": ["demo/heat"], "help": "A histogram.",
     "options": {"edges": list(np.linspace(0, 1, BINS + 1))}},
    {"kind": "curve", "title": "Curve", "series": ["demo/heat"], "help": "A curve.",
     "options": {"x": list(range(BINS)), "x_label": "bin"}},
    {"kind": "reliability", "title": "Reliability", "series": ["demo/reliability"], "help": "Reliability.",
     "options": {}},
    {"kind": "scatter", "title": "Scatter", "series": ["demo/points"], "help": "Points.", "options": {}},
    {"kind": "table", "title": "Table", "series": ["demo/table"], "help": "A table.", "options": {}},
    {"kind": "image_grid", "title": "Images", "series": ["demo/images"], "help": "Images.",
     "options": {"captions": ["a", "b", "c", "d"]}},
]


def reliability_row(step: int) -> np.ndarray:
    lo = np.linspace(0, 1, BINS + 1)[:-1]
    hi = lo + 1.0 / BINS
    conf = (lo + hi) / 2
    acc = np.clip(conf - 0.1 * np.exp(-step / 500), 0, 1)
    count = np.full(BINS, 20.0)
    return np.stack([lo, hi, conf, acc, count, acc - 0.05, np.minimum(acc + 0.05, 1)], axis=1)


def write_synthetic_run(path: str | Path, steps: int = 1000, eval_every: int = 100, demo: bool = True,
                        name: str = "synthetic", seed: int = 0, status: str = "finished") -> Path:
    """A closed run of ``steps`` steps: core curves (exponential decay plus noise and one spike at
    step ``steps // 2``) and, with ``demo``, one series per demo view at each evaluation."""
    rng = np.random.default_rng(seed)
    config = {"config": {"run": {"name": name, "steps": steps, "eval_every": eval_every}}, "base_dir": "."}
    w = RunWriter(path, json.dumps(config), flush_seconds=1e9)
    core = ("train/loss", "train/accuracy", "lr", "grad_norm", "wall_time", "val/loss", "val/accuracy")
    for s in core:
        w.declare_series(s)
    w.write_plugin_info("core", "Training", "", (), CORE_VIEWS)
    if demo:
        w.declare_series("demo/band", (3,))
        w.declare_series("demo/heat", (BINS,))
        w.declare_series("demo/reliability", (BINS, 7))
        w.declare_series("demo/points", (50, 3))
        w.declare_series("demo/table", (), "json")
        w.declare_series("demo/images", (4, 6, 6))
        w.write_plugin_info("demo", "Demo", "", (), DEMO_VIEWS)
    w.start_swmr()
    t = np.arange(1, steps + 1)
    loss = 2.0 * np.exp(-t / max(1, steps / 5)) + 0.05 * rng.standard_normal(steps) ** 2
    loss[steps // 2] = 10.0  # a spike: the envelope must keep it
    w.append_many("train/loss", t, loss)
    w.append_many("train/accuracy", t, 1 - loss / 2.5)
    w.append_many("lr", t, np.full(steps, 0.1))
    w.append_many("grad_norm", t, np.abs(loss) + 0.01)
    w.append_many("wall_time", t, t * 0.01)
    ev = t[t % eval_every == 0]
    w.append_many("val/loss", ev, loss[ev - 1] + 0.1)
    w.append_many("val/accuracy", ev, 1 - loss[ev - 1] / 2.5)
    if demo:
        for s in ev:
            mid = float(loss[s - 1])
            w.append("demo/band", int(s), [mid * 0.8, mid, mid * 1.2])
            w.append("demo/heat", int(s), np.sin(np.arange(BINS) + s / 100) + 1)
            w.append("demo/reliability", int(s), reliability_row(int(s)))
            w.append("demo/points", int(s), rng.standard_normal((50, 3)))
            w.append("demo/table", int(s), json.dumps({"columns": ["slice", "error"],
                                                       "rows": [["a", 0.5], [f"step {s}", mid]]}))
            w.append("demo/images", int(s), rng.random((4, 6, 6)))
    w.event(0, "started", f"training for {steps} steps")
    w.event(steps, status, f"{status} {steps} steps")
    w.close(status)
    return Path(path)
