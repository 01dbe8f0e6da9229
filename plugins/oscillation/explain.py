"""What the oscillation series say about one step: the layers whose reversal rate (of integer
weights in QAT, of update directions in full precision) or oscillating share jumped just before it."""
from __future__ import annotations

import numpy as np

from engine.plugin import Evidence

from . import analysis as A
from .plugin import JUMP_RISE, JUMP_ROWS, PREFIX, UNIT_UPDATE, _columns, _label

WHAT = {"flip_rate": "reversal rate", "frac_oscillating": "share of oscillating weights"}


def evidence_at(run, step: int) -> list[Evidence]:
    names = run.names()
    out = []
    for name, what in WHAT.items():
        if PREFIX + name not in names:
            continue
        steps, values = run.series(PREFIX + name)
        if len(steps) < 2 * JUMP_ROWS:
            continue
        values = np.asarray(values, float).reshape(len(steps), -1)
        spacing = int(np.median(np.diff(steps)))
        layers = _columns(run, name)
        for i in range(values.shape[1]):
            near = [j for j in A.find_jumps(steps, values[:, i], JUMP_ROWS, JUMP_RISE)
                    if step - JUMP_ROWS * spacing <= j.step <= step + spacing]
            if near:
                j = max(near, key=lambda j: j.rise)
                out.append(_jump(_label(layers, i), what, j, PREFIX + name))
    return out


def _jump(layer: str, what: str, j: A.Jump, series: str) -> Evidence:
    unit = UNIT_UPDATE if what == "reversal rate" else "of its weights"
    text = (f"The {what} of layer {layer} jumped from {j.before:.2f} to {j.after:.2f} at step {j.step:,}"
            + (" (reversals per weight per step)." if what == "reversal rate" else "."))
    phrase = (f"layer {layer} flips {j.after:.0%} of updates (from {j.before:.0%}, step {j.step:,})"
              if what == "reversal rate" else f"{j.after:.0%} of layer {layer}'s weights oscillate (step {j.step:,})")
    return Evidence("oscillation", text, j.step, j.after, unit, float(min(1.0, 0.25 + j.rise)), phrase, series)
