"""What the sharpness series say about one step: λ_max against the threshold at the nearest
measurement (and whether it crossed just before), batch sharpness there."""
from __future__ import annotations

import math

import numpy as np

from engine.plugin import Evidence

EDGE = 0.9  # "at the edge": at least 90 % of the threshold
BATCH_HIGH = 1.5  # batch sharpness this far above the threshold stands out


def evidence_at(run, step: int) -> list[Evidence]:
    names = run.names()
    if "sharpness/lambda_max" not in names or "sharpness/threshold" not in names:
        return []
    out = []
    steps, lam = run.series("sharpness/lambda_max")
    t_steps, thr = run.series("sharpness/threshold")
    if len(steps) and len(t_steps):
        lam = np.asarray(lam, float).reshape(len(steps), -1)[:, 0]
        threshold = np.interp(steps, t_steps, np.asarray(thr, float))
        with np.errstate(invalid="ignore"):
            ratio = np.where(np.isfinite(threshold), lam / threshold, np.nan)  # lr = 0: no threshold to be near
        i = int(np.searchsorted(steps, step, side="right")) - 1  # the measurement at or before the step
        if i >= 0:
            out.append(_edge(int(steps[i]), float(lam[i]), float(ratio[i]),
                             (int(steps[i - 1]), float(ratio[i - 1])) if i else None))
    if "sharpness/batch_sharpness" in names:
        b_steps, b = run.series("sharpness/batch_sharpness")
        if len(b_steps) and len(t_steps):
            j = int(np.argmin(np.abs(np.asarray(b_steps) - step)))
            threshold = float(np.interp(b_steps[j], t_steps, np.asarray(thr, float)))
            r = float(b[j]) / threshold if threshold > 0 and math.isfinite(threshold) else float("nan")
            rel = f", {times(r)} the threshold" if math.isfinite(r) else " (no threshold: the learning rate was 0)"
            high = math.isfinite(r) and r >= BATCH_HIGH  # SGD holds it near the threshold: only well above counts
            out.append(Evidence("sharpness", f"Batch sharpness {float(b[j]):.4g} at step {int(b_steps[j]):,}{rel}.",
                                int(b_steps[j]), float(b[j]), "", 0.3 if high else 0.0,
                                f"batch sharpness at {r:.2f}× the threshold" if high else "",
                                "sharpness/batch_sharpness"))
    return out


def times(ratio: float) -> str:
    """A ratio to the threshold as "0.87×", small ones with their first digit ("0.0003×", not "0.00×")."""
    return f"{ratio:.2f}×" if abs(ratio) >= 0.01 else f"{ratio:.1g}×"


def _edge(at: int, lam: float, ratio: float, before: tuple[int, float] | None) -> Evidence:
    series = "sharpness/lambda_max"
    if not math.isfinite(ratio):
        return Evidence("sharpness", f"Sharpness λ_max {lam:.4g} at step {at:,} (no threshold: the learning rate was 0).",
                        at, lam, "", 0.0, "", series)
    if before is not None and before[1] < 1 <= ratio:
        return Evidence("sharpness", f"Sharpness λ_max crossed the edge-of-stability threshold between steps {before[0]:,} and "
                        f"{at:,}: {lam:.4g}, {times(ratio)} the threshold (from {times(before[1])}).", at, lam, "",
                        0.8, f"λ_max crossed the threshold at step {at:,} ({ratio:.2f}×)", series)
    if ratio >= EDGE:
        where = "above" if ratio > 1 / EDGE else "at"
        return Evidence("sharpness", f"Sharpness λ_max {lam:.4g} at step {at:,}: {times(ratio)} the threshold, {where} the edge of "
                        "stability.", at, lam, "", 0.6 if where == "above" else 0.5,
                        f"λ_max {where} the edge of stability ({ratio:.2f}× the threshold, step {at:,})", series)
    return Evidence("sharpness", f"Sharpness λ_max {lam:.4g} at step {at:,}: {times(ratio)} the threshold, below the edge of "
                    "stability.", at, lam, "", 0.0, "", series)
