"""Oscillation benchmarks: what tracking costs a quantisation-aware training run.

    .venv/bin/python benches/oscillation.py [--steps 1500] [--repeats 5] [--rounds 15]

1. Tracker update time as a share of the step time of the small CNN (digits, batch 64, 4-bit
   weights, first and last layer in full precision): one process, the tracker fed the model's real
   integer weights; blocks of 200 training steps and 200 tracker updates alternate ``--rounds``
   times, so drift in machine load hits both alike. Target ≤ 3 %.
2. Bytes per tracked weight: the tracker's, and all the plugin keeps per weight in each mode.
3. The plugin's hooks (on_step and on_update) as a share of the step time inside one QAT run
   (timed around the hooks at every step, so load drift hits both alike), and the training-time
   ratio of the same QAT run with the plugin on against off, alternating in fresh processes,
   ``--repeats`` times each.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.data import load_data  # noqa: E402
from engine.models import build_model  # noqa: E402
from engine.quantize import quantized_layers  # noqa: E402
from engine.trainer import configure_threads  # noqa: E402
from plugins.oscillation.analysis import OscillationTracker  # noqa: E402

CNN = {"name": "cnn", "channels": [16, 32], "hidden": 64, "activation": "relu",
       "quantize": {"bits": 4, "granularity": "channel", "scale": "lsq", "skip": ["first", "last"]}}
BLOCK = 200


def config(steps: int, plugin: bool) -> dict:
    cfg = {"run": {"seed": 0, "steps": steps, "eval_every": steps},
           "data": {"source": "digits", "batch_size": 64}, "model": CNN,
           "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}}
    if plugin:
        cfg["plugins"] = {"oscillation": {}}
    return cfg


def tracker_share(rounds: int) -> None:
    configure_threads(0)
    torch.manual_seed(0)
    data = load_data("digits", 0.2, 0, ROOT)
    model = build_model(CNN, data.input_shape, data.n_classes, ROOT)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    layers = quantized_layers(model)
    n = sum(q.latent.numel() for q in layers)
    tracker = OscillationTracker(n, 0.01, 256, bits=4)
    x, y = data.train.x, data.train.y
    gen = torch.Generator().manual_seed(0)

    def train_block() -> float:
        t = time.perf_counter()
        for _ in range(BLOCK):
            idx = torch.randint(len(y), (64,), generator=gen)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()
        return (time.perf_counter() - t) / BLOCK

    ints = [torch.cat([q.integers().reshape(-1) for q in layers]) for _ in range(2)]
    ints[1] = ints[1].clone()
    ints[1][::7] += torch.where(ints[1][::7] < 7, 1, -1).to(torch.int8)  # some weights move each update

    def track_block() -> float:
        t = time.perf_counter()
        for i in range(BLOCK):
            tracker.update(ints[i % 2])
        return (time.perf_counter() - t) / BLOCK

    train_block(), track_block()  # warm up
    shares, steps, updates = [], [], []
    for _ in range(rounds):
        step, update = train_block(), track_block()
        steps.append(step)
        updates.append(update)
        shares.append(update / step)
    shares.sort()
    print(f"1. tracker update vs training step, small CNN (4-bit, {n} tracked weights), {rounds} alternating "
          f"blocks of {BLOCK}:")
    print(f"   step {1e3 * statistics.median(steps):.2f} ms median, tracker update "
          f"{1e6 * statistics.median(updates):.1f} µs median → share {100 * statistics.median(shares):.2f} % "
          f"(range {100 * shares[0]:.2f}–{100 * shares[-1]:.2f} %)   target ≤ 3 %")
    print(f"2. bytes per tracked weight: tracker {tracker.bytes_per_weight():.0f} (all its state; the anchor "
          "script kept 16–25); the plugin in all: QAT 12 (+ this step's and the previous gradient side by side, "
          "for the cosine), full precision 16 (+ the previous weights, for Δθ), freezing on +5 (integer EMA, "
          "frozen mask)")


def hook_share(steps: int) -> None:
    """The plugin's hooks timed inside a real run: their time against the whole steps'."""
    from engine.config import RunConfig
    from engine.plugin import PluginHost
    from engine.trainer import Trainer
    spent = [0.0]

    def timed(method):
        def run(self, *args):
            t = time.perf_counter()
            method(self, *args)
            spent[0] += time.perf_counter() - t
        return run
    PluginHost.step, PluginHost.update = timed(PluginHost.step), timed(PluginHost.update)
    with tempfile.TemporaryDirectory() as d:
        trainer = Trainer(RunConfig.from_dict(config(steps, True)), Path(d) / "run.h5")
        original, total = trainer._train_step, [0.0]

        def step(s):
            t = time.perf_counter()
            value = original(s)
            total[0] += time.perf_counter() - t
            return value
        trainer._train_step = step
        trainer.run()
    print(f"3. the plugin's hooks inside a {steps}-step QAT CNN run: {1e6 * spent[0] / steps:.0f} µs a step, "
          f"{100 * spent[0] / total[0]:.1f} % of the step time ({1e3 * total[0] / steps:.2f} ms a step)")


def child(steps: int, plugin: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        from engine import run_training
        t, cpu = time.perf_counter(), time.process_time()
        run_training(config(steps, plugin), Path(d) / "run.h5")
        print(json.dumps({"seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - cpu}))


def training_ratio(steps: int, repeats: int) -> None:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}
    results: dict[bool, list[dict]] = {False: [], True: []}
    for _ in range(repeats):
        for plugin in (False, True):  # alternating, so drift in machine load hits both alike
            out = subprocess.run([sys.executable, __file__, "--child", "on" if plugin else "off",
                                  "--steps", str(steps)], capture_output=True, text=True, env=env, check=True)
            results[plugin].append(json.loads(out.stdout.strip().splitlines()[-1]))
    wall = {k: statistics.median(r["seconds"] for r in v) for k, v in results.items()}
    cpu = {k: statistics.median(r["cpu_seconds"] for r in v) for k, v in results.items()}
    pairs = sorted(on["seconds"] / off["seconds"] for on, off in zip(results[True], results[False]))
    print(f"   the whole run, {steps} steps, plugin on vs off, {repeats} alternating repeats in fresh processes:")
    for k, label in ((False, "off"), (True, "on")):
        times = ", ".join(f"{r['seconds']:.2f}" for r in results[k])
        print(f"   {label:3s}: median {wall[k]:.2f} s [{times}]")
    print(f"   time ratio on/off: {wall[True] / wall[False]:.3f} (wall), {cpu[True] / cpu[False]:.3f} (CPU); "
          f"per-pair ratios {pairs[0]:.3f}–{pairs[-1]:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--child", choices=("on", "off"))
    args = ap.parse_args()
    if args.child:
        return child(args.steps, args.child == "on")
    tracker_share(args.rounds)
    hook_share(args.steps)
    training_ratio(args.steps, args.repeats)


if __name__ == "__main__":
    main()
