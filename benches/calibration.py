"""Time every calibration metric plus the temperature fit on 1e6 samples x 10 classes (CPU).

Target (issue 4): under 2 s for metrics + fit. Run: ``.venv/bin/python benches/calibration.py``.
The logits are float32, as a model hands them over, and miscalibrated by T = 2.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from plugins.calibration.analysis import calibration_metrics, fit_temperature


def make_logits(n: int, n_classes: int, temperature: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated logits scaled by ``temperature``, labels drawn from the calibrated softmax."""
    rng = np.random.default_rng(seed)
    calibrated = rng.normal(scale=3.0, size=(n, n_classes))
    labels = np.argmax(calibrated + rng.gumbel(size=(n, n_classes)), axis=1)  # Gumbel-max sampling
    return (calibrated * temperature).astype(np.float32), labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    logits, labels = make_logits(args.n, args.classes, temperature=2.0)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        before = calibration_metrics(logits, labels, from_logits=True)
        t1 = time.perf_counter()
        fit = fit_temperature(logits, labels)
        t2 = time.perf_counter()
        times.append((t1 - t0, t2 - t1, t2 - t0))
    metrics_s, fit_s, total_s = np.array(times).T
    print(f"calibration bench: {args.n:,} samples x {args.classes} classes, {args.repeats} repeats")
    print(f"  metrics          best {metrics_s.min():.3f} s  median {np.median(metrics_s):.3f} s")
    print(f"  temperature fit  best {fit_s.min():.3f} s  median {np.median(fit_s):.3f} s  (includes metrics after)")
    print(f"  total            best {total_s.min():.3f} s  median {np.median(total_s):.3f} s  (target < 2 s)")
    print(f"  ECE {before.ece:.4f} -> {fit.after.ece:.4f} at T = {fit.temperature:.4f} (planted 2.0)")


if __name__ == "__main__":
    main()
