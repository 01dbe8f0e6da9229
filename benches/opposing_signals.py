"""Opposing-signals benchmarks: what the plugin costs a training run, and what one analysis costs.

    .venv/bin/python benches/opposing_signals.py [--steps 3000] [--repeats 5] [--skip-training]

1. Training time and peak memory with the plugin against the same run without it, each run in a
   fresh process, the variants interleaved so drifts in machine load hit them alike (medians, and
   every run's time so the noise shows):
   - the small CNN on digits, batch 64 (the batch does not hold the probe set: recording bursts,
     one forward pass over the probe per recorded step), default settings and every 100;
   - the planted example (assets/examples/opposing-signals.toml, full batch: recording is free).
   Target: default settings ≤ 1.10× on the CNN.
2. One analysis (``find_opposing_groups``) at its largest default size: 2048 probe samples, 500
   recorded steps, 512 unstable candidates, 10 classes, 64-wide embeddings.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benches")]


def cnn(steps: int, plugin: dict | None) -> dict:
    """The small CNN of benches/sharpness.py, with this plugin instead."""
    from sharpness import run_config
    cfg = run_config("cnn", steps, None)
    if plugin is not None:
        cfg["plugins"] = {"opposing_signals": plugin}
    return cfg


def planted(steps: int, plugin: dict | None) -> dict:
    cfg = tomllib.loads((ROOT / "assets" / "examples" / "opposing-signals.toml").read_text())
    cfg["run"].update(steps=steps, threads=1)
    cfg["plugins"] = {} if plugin is None else {"opposing_signals": plugin}
    return cfg


SUITES = {
    "small CNN on digits, batch 64": (cnn, {"no plugin": None, "default (every 500, burst 5)": {},
                                             "every 100, burst 5": {"every": 100}}),
    "planted example, full batch (MLP 64-64)": (planted, {"no plugin": None, "default (every 500)": {},
                                                          "every 100": {"every": 100}}),
}


def child(suite: str, variant: str, steps: int) -> None:
    make, variants = SUITES[suite]
    from engine import run_training
    with tempfile.TemporaryDirectory() as d:
        t, cpu = time.perf_counter(), time.process_time()
        run_training(make(steps, variants[variant]), Path(d) / "run.h5")
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def bench_training(steps: int, repeats: int) -> None:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}
    for suite, (_, variants) in SUITES.items():
        results = {v: [] for v in variants}
        for _ in range(repeats):
            for variant in variants:
                out = subprocess.run([sys.executable, __file__, "--child", suite, variant, "--steps", str(steps)],
                                     capture_output=True, text=True, env=env, check=True)
                results[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
        base = results["no plugin"]
        wall0 = statistics.median(r["seconds"] for r in base)
        cpu0 = statistics.median(r["cpu_seconds"] for r in base)
        mem0 = max(r["peak_rss_mb"] for r in base)
        print(f"\n1. {suite}: {steps} steps, 1 thread, {repeats} interleaved repeats in fresh processes")
        for variant, runs in results.items():
            wall = statistics.median(r["seconds"] for r in runs)
            cpu = statistics.median(r["cpu_seconds"] for r in runs)
            mem = max(r["peak_rss_mb"] for r in runs)
            every = ", ".join(f"{r['seconds']:.2f}" for r in runs)
            print(f"  {variant:30s} wall {wall:6.2f} s {wall / wall0:5.2f}×  "
                  f"cpu {cpu:6.2f} s {cpu / cpu0:5.2f}×  peak RSS {mem:5.0f} MB {mem / mem0:5.2f}×   [{every}]")


def bench_analysis(repeats: int) -> None:
    import torch
    from plugins.opposing_signals import analysis as A
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n, t, c, d = 2048, 500, 10, 64
    losses = 0.3 + 0.05 * rng.normal(size=(t, n))
    losses[:, :512] += 0.2 * (-1.0) ** np.arange(t)[:, None] * rng.uniform(0.5, 1.5, 512)  # 512 unstable
    signals = A.GradientSignals(rng.normal(size=(2, n, c)), rng.uniform(size=(2, n, d)))
    features = {"input": rng.normal(size=(n, 64)), "embedding": rng.uniform(size=(n, d))}
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = A.find_opposing_groups(np.arange(1, t + 1), losses, signals, features)
        times.append(time.perf_counter() - t0)
    print(f"\n2. One analysis: {n} probe samples × {t} recorded steps, {len(result.candidates)} candidates, "
          f"{c} classes, {d}-wide embeddings: median {statistics.median(times) * 1e3:.0f} ms "
          f"[{', '.join(f'{x * 1e3:.0f}' for x in times)}]; ring buffer {t * n * 4 / 2 ** 20:.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("SUITE", "VARIANT"))
    args = parser.parse_args()
    if args.child:
        return child(*args.child, args.steps)
    if not args.skip_training:
        bench_training(args.steps, args.repeats)
    bench_analysis(args.repeats)


if __name__ == "__main__":
    main()
