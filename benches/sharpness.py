"""Sharpness benchmarks: Lanczos vs power iteration, and what the plugin costs a training run.

    .venv/bin/python benches/sharpness.py [--steps 1500] [--repeats 3] [--models mlp,cnn]
                                          [--skip-solvers] [--skip-training]

1. Hessian-vector products (and wall time) to reach rtol 1e-4 on the top eigenvalue, Lanczos vs
   plain power iteration, on the same operators: planted spectra (large gap, λ₂/λ₁ = 0.95 and 0.99,
   |λ_min| > λ_max) and the Hessian of the small CNN on digits. Both are stopped by an oracle (the
   first iterate within rtol of the true value), so they are compared at equal accuracy; Lanczos is
   also shown with its own residual stopping rule (what it does without knowing the answer).
2. HVPs per measurement during SGD on the CNN: Lanczos cold and with the plugin's warm start,
   against power iteration (cold and warm) stopped as soon as it is as accurate: equal accuracy
   on the Hessians a training run actually meets.
3. Training-time ratio with the plugin vs without, on the digits MLP and the small CNN through
   ``run_training`` in the default example's set-up (1,500 steps): the plugin's defaults (a plan
   of 20 measurements), every cadence step measured (no budget), batch sharpness every step.
"""
from __future__ import annotations

import argparse
import contextlib
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
def power_iteration(matvec, dim, truth, dtype, max_iter=3000, rtol=RTOL, v0=None):
    """Plain power iteration with Rayleigh-quotient estimates (what PyHessian and Cockpit do),
    from ``v0`` or a random start: HVPs until the estimate is within ``rtol`` of the truth."""
    v = torch.randn(dim, generator=torch.Generator().manual_seed(0), dtype=dtype) if v0 is None else v0
    v = v / v.norm()
    for n in range(1, max_iter + 1):
        w = matvec(v)
        theta = float(v @ w)
        if abs(theta - truth) <= rtol * abs(truth):
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


def bench_warm_start(measurements=16, every=50):
    """HVPs per measurement during SGD on the CNN: Lanczos cold and warm-started as the plugin does
    (tol 1e-2, its own stopping rule), and power iteration cold (a random start, as PyHessian does
    at each call) and warm (from the last top eigenvector), each stopped by an oracle as soon as it
    is as accurate as warm Lanczos was: equal accuracy on the Hessians a run actually meets."""
    from plugins.sharpness.plugin import WARM_NOISE
    model, x, y = digits_cnn()
    print(f"\n2. Top eigenvalue every {every} SGD steps on the CNN: HVPs (relative error against a "
          "tol 1e-6 reference)")
    print(f"{'step':>5s} {'λ_max':>8s} {'λ2/λ1':>6s} {'Lanczos cold':>15s} {'Lanczos warm':>15s} "
          f"{'power cold':>10s} {'power warm':>10s}")
    vectors, power_v, totals = None, None, np.zeros(4)
    for m in range(measurements):
        op = A.HessianOperator(model, torch.nn.functional.cross_entropy, [(x, y)])
        ref = A.lanczos_top(op.matvec, op.dim, k=2, tol=1e-6, max_iter=300, dtype=op.dtype).values
        cold = A.lanczos_top(op.matvec, op.dim, tol=1e-2, seed=m, dtype=op.dtype)
        v0 = None
        if vectors is not None:
            noise = torch.randn(vectors.shape, generator=torch.Generator().manual_seed(m))
            v0 = vectors + WARM_NOISE * noise / noise.norm(dim=0, keepdim=True)
        warm = A.lanczos_top(op.matvec, op.dim, tol=1e-2, v0=v0, seed=m, dtype=op.dtype)
        vectors = warm.vectors
        err = max(abs(warm.values[0] - ref[0]) / ref[0], 1e-12)
        p_cold, _ = power_iteration(op.matvec, op.dim, ref[0], op.dtype, 3000, err)
        p_warm, _ = power_iteration(op.matvec, op.dim, ref[0], op.dtype, 3000, err,
                                    v0=None if power_v is None else power_v.clone())
        power_v = warm.vectors[:, 0]  # the best warm start there is: the converged top vector
        row = [cold.n_matvec, warm.n_matvec, p_cold or 3000, p_warm or 3000]
        totals += row
        c_err = abs(cold.values[0] - ref[0]) / ref[0]
        print(f"{m * every:5d} {ref[0]:8.3f} {ref[1] / ref[0]:6.3f} {row[0]:4d} ({c_err:7.1e}) "
              f"{row[1]:4d} ({err:7.1e}) {row[2]:10d} {row[3]:10d}")
        sgd_steps(model, x, y, every, m * every)
    print(f"total HVPs: Lanczos cold {totals[0]:.0f}, warm {totals[1]:.0f}; power iteration cold "
          f"{totals[2]:.0f} ({totals[2] / totals[1]:.1f}× warm Lanczos), warm {totals[3]:.0f} "
          f"({totals[3] / totals[1]:.1f}×)")


# ---------------------------------------------------------------------------------------------
# Training overhead
# ---------------------------------------------------------------------------------------------
MODELS = {"mlp": {"name": "mlp", "hidden": [64, 64]}, "cnn": {"name": "cnn"}}


def run_config(model, steps, plugin):
    """The default example's run (digits, batch 64, SGD with momentum on a cosine schedule) with
    the given model and sharpness settings (None: no plugin)."""
    cfg = {"run": {"seed": 0, "steps": steps, "eval_every": 50, "threads": 1},
           "data": {"source": "digits", "batch_size": 64},
           "model": MODELS[model],
           "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "schedule": "cosine", "warmup_steps": 50},
           "loss": {"name": "cross_entropy"}}
    if plugin is not None:
        cfg["plugins"] = {"sharpness": plugin}
    return cfg


@contextlib.contextmanager
def plugin_clock():
    """CPU seconds spent inside the sharpness plugin's hooks. Its share of the same run is steadier
    on a busy machine than the ratio of two runs, which drifts with the machine between them."""
    from plugins.sharpness.plugin import SharpnessPlugin
    spent = [0.0]
    hooks = {name: getattr(SharpnessPlugin, name) for name in ("setup", "on_step", "on_end")}

    def timed(hook):
        def call(*args, **kwargs):
            t = time.process_time()
            try:
                return hook(*args, **kwargs)
            finally:
                spent[0] += time.process_time() - t
        return call
    for name, hook in hooks.items():
        setattr(SharpnessPlugin, name, timed(hook))
    try:
        yield spent
    finally:
        for name, hook in hooks.items():
            setattr(SharpnessPlugin, name, hook)


def bench_training(models, steps, repeats):
    """Each variant runs ``repeats`` times, the variants interleaved so drifts in machine speed hit
    them alike. "ratio" is each repeat's CPU time over the bare run of the same repeat (median, then
    the lowest and highest: their range says how noisy the machine was); "share" is the plugin's
    CPU time over the rest of the same run, which no drift between runs can move."""
    from engine import open_run, run_training
    variants = {
        "no plugin": None,
        "default": {},
        "every 50, no budget": {"budget": 0.0},
        "batch sharpness every step": {"batch_every": 1},
    }
    for model in models:
        print(f"\n3. {model.upper()} on digits, {steps} steps, batch 64, 1 thread ({repeats} repeats, CPU time)")
        cpu, share = ({name: [] for name in variants} for _ in range(2))
        with tempfile.TemporaryDirectory() as tmp:
            run_training(run_config(model, 20, {}), Path(tmp) / "warm-up.h5")  # first-call costs off the clock
            for _ in range(repeats):
                for i, (name, plugin) in enumerate(variants.items()):
                    with plugin_clock() as spent:
                        c0 = time.process_time()
                        run_training(run_config(model, steps, plugin), Path(tmp) / f"{i}.h5", overwrite=True)
                        total = time.process_time() - c0
                    cpu[name].append(total)
                    share[name].append(spent[0] / (total - spent[0]))
            print(f"{'no plugin':28s} cpu {np.median(cpu['no plugin']):6.2f} s (median)")
            for i, (name, plugin) in enumerate(list(variants.items())[1:], start=1):
                with open_run(Path(tmp) / f"{i}.h5") as run:
                    m_steps, n_hvp = run.series("sharpness/n_hvp")
                ratio = np.array(cpu[name]) / np.array(cpu["no plugin"])
                more = f", … ({len(m_steps)} in all)" if len(m_steps) > 6 else ""
                print(f"{name:28s} ratio {np.median(ratio):5.2f}× ({ratio.min():.2f}–{ratio.max():.2f})  share "
                      f"{np.median(share[name]):.3f} ({min(share[name]):.3f}–{max(share[name]):.3f})  measured at "
                      f"steps {', '.join(map(str, m_steps[:6]))}{more}; HVPs {np.sum(n_hvp):.0f} in all")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp, cnn")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-solvers", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not args.skip_solvers:
        bench_eigensolvers()
        bench_warm_start()
    if not args.skip_training:
        bench_training(args.models.split(","), args.steps, args.repeats)


if __name__ == "__main__":
    main()
