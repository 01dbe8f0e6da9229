"""What the calibration series say about one step: ECE at the nearest evaluation and its change."""
from __future__ import annotations

import numpy as np

from engine.plugin import Evidence

NOTABLE_POINTS = 2.0  # an ECE change of this many percentage points between evaluations stands out


def evidence_at(run, step: int) -> list[Evidence]:
    if "calibration/ece" not in run.names():
        return []
    steps, ece = run.series("calibration/ece")
    if not len(steps):
        return []
    i = int(np.argmin(np.abs(np.asarray(steps) - step)))
    at, value = int(steps[i]), 100 * float(ece[i])
    if i == 0:
        return [Evidence("calibration", f"ECE {value:.1f}% at step {at:,}, the first evaluation.", at, value, "%",
                         0.0, "", "calibration/ece")]
    change = value - 100 * float(ece[i - 1])
    weight = min(0.6, 0.3 * abs(change) / NOTABLE_POINTS) if abs(change) >= NOTABLE_POINTS else 0.0
    weight *= 1.0 if change > 0 else 0.5  # better calibration rarely answers "why here?"
    before = int(steps[i - 1])
    if abs(change) < 0.05:  # "fell 0.0 points" would contradict itself
        return [Evidence("calibration", f"ECE {value:.1f}% at step {at:,}, unchanged since step {before:,} "
                         f"({change:+.2f} points).", at, value, "%", 0.0, "", "calibration/ece")]
    went = "rose" if change > 0 else "fell"
    return [Evidence("calibration", f"ECE {value:.1f}% at step {at:,}: it {went} {abs(change):.1f} points since step "
                     f"{before:,}.", at, value, "%", weight,
                     f"ECE {went} {abs(change):.1f} points (step {at:,})" if weight else "", "calibration/ece")]
