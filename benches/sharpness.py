"""Sharpness benchmarks: Lanczos vs power iteration, and what the plugin costs a training run.

    .venv/bin/python benches/sharpness.py [--steps 5000] [--repeats 1] [--skip-solvers] [--skip-training]

1. Hessian-vector products (and wall time) to reach rtol 1e-4 on the top eigenvalue, Lanczos vs
   plain power iteration, on the same operators: planted spectra (large gap, λ₂/λ₁ = 0.95 and 0.99,
   |λ_min| > λ_max) and the Hessian of the small CNN on digits. Both are stopped by an oracle (the
   first iterate within rtol of the true value), so they are compared at equal accuracy; Lanczos is
   also shown with its own residual stopping rule (what it does without knowing the answer).
2. HVPs per measurement during SGD on the CNN, cold vs the plugin's warm start.
3. Training-time ratio with the plugin vs without, on the small CNN through ``run_training``
   (the default's time budget at work, the raw cost of every-50 measurements, batch sharpness).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plugins.sharpness import analysis as A  # noqa: E402

RTOL = 1e-4


# ---------------------------------------------------------------------------------------------
# Operators
# ---------------------------------------------------------------------------------------------
def planted(top, n=2000, bottom=None, seed=0):
    """A dense symmetric matrix: given top eigenvalues over a Hessian-like bulk."""
    rng = np.random.default_rng(seed)
    e = np.concatenate([rng.uniform(-0.05, 0.6, n // 4), rng.exponential(0.03, n - n // 4)])
    e[: len(top)] = top
    if bottom is not None:
        e[-1] = bottom
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    mat = (U * torch.as_tensor(e)) @ U.T
    return (lambda v: mat @ v), n, float(np.max(e)), torch.float64


def digits_cnn(n=512):
    from sklearn.datasets import load_digits
    from engine.models import CNN
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x[:n] / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    torch.manual_seed(0)
    return CNN((1, 8, 8), 10), x, torch.tensor(y[:n])


def sgd_steps(model, x, y, steps, start=0):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for i in range(start, start + steps):
        b = slice(i % 8 * 64, (i % 8 + 1) * 64)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[b]), y[b]).backward()
        opt.step()


def cnn_hessian():
    """The small CNN's Hessian on 512 digits after 200 SGD steps (float32, as trained)."""
    model, x, y = digits_cnn()
    sgd_steps(model, x, y, 200)
    op = A.HessianOperator(model, torch.nn.functional.cross_entropy, [(x, y)])
    truth = A.lanczos_top(op.matvec, op.dim, tol=1e-6, max_iter=300, dtype=op.dtype).values[0]
    return op.matvec, op.dim, float(truth), op.dtype


# ---------------------------------------------------------------------------------------------
# Solvers, stopped at the first iterate within RTOL of the truth
# ---------------------------------------------------------------------------------------------
def power_iteration(matvec, dim, truth, dtype, max_iter=3000):
    """Plain power iteration with Rayleigh-quotient estimates (what PyHessian and Cockpit do)."""
    v = torch.randn(dim, generator=torch.Generator().manual_seed(0), dtype=dtype)
    v = v / v.norm()
    for n in range(1, max_iter + 1):
        w = matvec(v)
        theta = float(v @ w)
        if abs(theta - truth) <= RTOL * abs(truth):
            return n, theta
        v = w / w.norm()
    return None, theta


def lanczos_oracle(matvec, dim, truth, dtype, max_iter=300):
    """Smallest Lanczos Krylov size whose top Ritz value is within RTOL (Ritz values only grow)."""
    lo, hi = 1, max_iter
    while lo < hi:
        mid = (lo + hi) // 2
        res = A.lanczos_top(matvec, dim, tol=1e-300, max_iter=mid, dtype=dtype)
        lo, hi = (mid + 1, hi) if abs(res.values[0] - truth) > RTOL * abs(truth) else (lo, mid)
    return lo


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def bench_eigensolvers():
    cases = {
        "large gap": lambda: planted([1.0]),
        "λ2/λ1 = 0.95": lambda: planted([1.0, 0.95]),
        "λ2/λ1 = 0.99": lambda: planted([1.0, 0.99]),
        "|λmin| > λmax": lambda: planted([1.0], bottom=-3.0),
        "CNN Hessian (digits)": cnn_hessian,
    }
    print(f"\n1. HVPs to reach rtol {RTOL:g} on λ_max (planted: dim 2000; CNN: dim 13706). Ratios: "
          "power's HVPs over Lanczos' (own stop | oracle stop)")
    print(f"{'operator':22s} {'power HVPs':>12s} {'power s':>8s} {'Lanczos oracle':>14s} "
          f"{'Lanczos own stop':>16s} {'Lanczos s':>9s} {'rel err':>8s} {'ratios':>12s}")
    for name, make in cases.items():
        matvec, dim, truth, dtype = make()
        (p_n, p_theta), p_s = timed(lambda: power_iteration(matvec, dim, truth, dtype))
        l_oracle = lanczos_oracle(matvec, dim, truth, dtype)
        res, l_s = timed(lambda: A.lanczos_top(matvec, dim, tol=RTOL, dtype=dtype))
        err = abs(res.values[0] - truth) / abs(truth)
        power = f"{p_n}" if p_n else f">3000 (→{p_theta:.3g})"
        ratios = f"{p_n / res.n_matvec:.1f}× | {p_n / l_oracle:.1f}×" if p_n else "∞ (wrong λ)"
        print(f"{name:22s} {power:>12s} {p_s:8.3f} {l_oracle:14d} {res.n_matvec:16d} {l_s:9.3f} "
              f"{err:8.1e} {ratios:>12s}")


def bench_warm_start(measurements=8, every=50):
    """HVPs per measurement during SGD on the CNN: cold start vs the plugin's warm start."""
    from plugins.sharpness.plugin import WARM_NOISE
    model, x, y = digits_cnn()
    print(f"\n2. Warm vs cold Lanczos (tol 1e-2, the plugin's default) every {every} SGD steps on the "
          "CNN; relative error against a tol 1e-6 reference")
    print(f"{'step':>5s} {'λ_max':>8s} {'cold HVPs':>9s} {'cold err':>9s} "
          f"{'warm HVPs':>9s} {'warm err':>9s}")
    vectors, totals = None, [0, 0]
    for m in range(measurements):
        op = A.HessianOperator(model, torch.nn.functional.cross_entropy, [(x, y)])
        ref = A.lanczos_top(op.matvec, op.dim, tol=1e-6, max_iter=300, dtype=op.dtype).values[0]
        cold = A.lanczos_top(op.matvec, op.dim, tol=1e-2, seed=m, dtype=op.dtype)
        v0 = None
        if vectors is not None:
            noise = torch.randn(vectors.shape, generator=torch.Generator().manual_seed(m))
            v0 = vectors + WARM_NOISE * noise / noise.norm(dim=0, keepdim=True)
        warm = A.lanczos_top(op.matvec, op.dim, tol=1e-2, v0=v0, seed=m, dtype=op.dtype)
        vectors = warm.vectors
        totals[0] += cold.n_matvec
        totals[1] += warm.n_matvec
        print(f"{m * every:5d} {ref:8.3f} {cold.n_matvec:9d} {abs(cold.values[0] - ref) / ref:9.1e} "
              f"{warm.n_matvec:9d} {abs(warm.values[0] - ref) / ref:9.1e}")
        sgd_steps(model, x, y, every, m * every)
    print(f"total HVPs: cold {totals[0]}, warm {totals[1]}")


# ---------------------------------------------------------------------------------------------
# Training overhead
# ---------------------------------------------------------------------------------------------
def cnn_config(steps, plugin):
    cfg = {"run": {"seed": 0, "steps": steps, "eval_every": 100, "threads": 1},
           "data": {"source": "digits", "batch_size": 64},
           "model": {"name": "cnn"}, "optimizer": {"name": "sgd", "lr": 0.1},
           "loss": {"name": "cross_entropy"}}
    if plugin is not None:
        cfg["plugins"] = {"sharpness": plugin}
    return cfg


def bench_training(steps, repeats):
    from engine import open_run, run_training
    rare = {"every": 10 ** 9, "slices": "off"}  # measured at the first and last step only
    variants = {
        "no plugin": None,
        "default (every 50, budget 0.25)": {},
        "every 50, no budget": {"budget": 0.0},
        "first/last only, no batch": {**rare, "batch_every": 0},
        "first/last + batch every step": {**rare, "batch_every": 1},
        "default + batch every step": {"batch_every": 1},
    }
    print(f"\n3. Small CNN on digits, {steps} steps, batch 64, 1 thread (best of {repeats}; CPU time "
          "is the steadier number on a shared machine)")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        run_training(cnn_config(20, {}), Path(tmp) / "warm-up.h5")  # first-call costs off the clock
        for i, (name, plugin) in enumerate(variants.items()):
            wall, cpu = np.inf, np.inf
            for r in range(repeats):
                path = Path(tmp) / f"{i}_{r}.h5"
                c0 = time.process_time()
                _, w = timed(lambda: run_training(cnn_config(steps, plugin), path))
                wall, cpu = min(wall, w), min(cpu, time.process_time() - c0)
            base = base or (wall, cpu)
            extra = ""
            if plugin is not None:
                with open_run(path) as run:
                    n_hvp = run.series("sharpness/n_hvp")[1]
                extra = (f"  {len(n_hvp)} measurements, HVPs each: median {np.median(n_hvp):.0f}, "
                         f"first {n_hvp[0]:.0f}")
            print(f"{name:31s} wall {wall:6.2f} s {wall / base[0]:5.2f}×   cpu {cpu:6.2f} s "
                  f"{cpu / base[1]:5.2f}×{extra}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-solvers", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not args.skip_solvers:
        bench_eigensolvers()
        bench_warm_start()
    if not args.skip_training:
        bench_training(args.steps, args.repeats)


if __name__ == "__main__":
    main()
