"""TrainDx's overhead: the same model on the same data, trained by a bare PyTorch loop, by the same
loop with ``traindx.watch`` (no plugins), and by the engine (no plugins), alternating in fresh
processes; prints the time ratios and peak memory.

    .venv/bin/python benches/overhead.py [--steps 5000] [--repeats 7] [--model mlp|cnn]

All three: digits, batch 64, SGD with momentum, one evaluation and one saved state at the end, the
same torch thread count. Targets: watch ≤ 1.03 × bare loop, engine ≤ 1.05 × bare loop.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("bare", "watch", "engine")
MODELS = {"mlp": {"name": "mlp", "hidden": [64, 64]}, "cnn": {"name": "cnn", "channels": [16, 32], "hidden": 64}}


def config(steps: int, model: str) -> dict:
    return {"run": {"seed": 0, "steps": steps, "eval_every": steps},
            "data": {"source": "digits", "batch_size": 64},
            "model": MODELS[model], "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
            "loss": {"name": "cross_entropy"}}


def bare(cfg: dict, out: Path, watched: bool = False) -> None:
    """What a person writes without TrainDx: tensors in memory, a shuffled index per epoch; with
    ``watched``, the same loop with the three lines of ``traindx.watch``."""
    import contextlib

    import torch
    import torch.nn.functional as F
    from engine.data import load_data
    from engine.models import build_model
    from engine.trainer import configure_threads
    configure_threads(0)
    torch.manual_seed(0)
    data = load_data("digits", 0.2, 0, ROOT)
    x, y = data.train.x, data.train.y
    model = build_model(cfg["model"], data.input_shape, data.n_classes, ROOT)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    bs, n, step, steps = 64, len(y), 0, cfg["run"]["steps"]
    if watched:
        import traindx
        dx = traindx.watch(model, opt, out, val_data=(data.val.x, data.val.y), steps=steps, eval_every=steps)
    with dx if watched else contextlib.nullcontext():
        while step < steps:
            for idx in torch.randperm(n).split(bs):
                out_ = model(x[idx])
                loss = F.cross_entropy(out_, y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if watched:
                    dx.step(loss)
                opt.step()
                loss.item()
                step += 1
                if step == steps:
                    break
        if not watched:  # watch evaluates the last step itself
            with torch.no_grad():
                model.eval()
                (model(data.val.x).argmax(1) == data.val.y).float().mean().item()
    torch.save(model.state_dict(), out.with_suffix(".pt"))


def engine(cfg: dict, out: Path) -> None:
    from engine import run_training
    run_training(cfg, out)


def child(kind: str, steps: int, model: str) -> None:
    cfg = config(steps, model)
    with tempfile.TemporaryDirectory() as d:
        t, cpu = time.perf_counter(), time.process_time()
        {"bare": bare, "watch": lambda c, o: bare(c, o, watched=True), "engine": engine}[kind](cfg, Path(d) / "run.h5")
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--model", choices=sorted(MODELS), default="mlp")
    ap.add_argument("--child", choices=KINDS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.steps, args.model)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}
    results = {kind: [] for kind in KINDS}
    for _ in range(args.repeats):
        for kind in KINDS:  # alternating, so drift in machine load hits all alike
            out = subprocess.run([sys.executable, __file__, "--child", kind, "--steps", str(args.steps),
                                  "--model", args.model], capture_output=True, text=True, env=env, check=True)
            results[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in results.items()}
    cpu = {k: statistics.median(r["cpu_seconds"] for r in v) for k, v in results.items()}
    mem = {k: max(r["peak_rss_mb"] for r in v) for k, v in results.items()}
    print(f"model {args.model}, {args.steps} steps, {args.repeats} alternating repeats")
    for k in results:
        times = ", ".join(f"{r['seconds']:.2f}" for r in results[k])
        print(f"  {k:6s}: median {med[k]:.2f} s ({args.steps / med[k]:.0f} steps/s) [{times}]  peak RSS {mem[k]:.0f} MB")
    for kind in KINDS[1:]:
        print(f"time ratio {kind}/bare: {med[kind] / med['bare']:.3f} (wall), {cpu[kind] / cpu['bare']:.3f} (CPU)"
              f"   memory ratio: {mem[kind] / mem['bare']:.3f}")


if __name__ == "__main__":
    main()
