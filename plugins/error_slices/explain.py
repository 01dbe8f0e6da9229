"""What the error-slice series say about one step: the tracked slices whose error changed most at
the evaluation nearest to it."""
from __future__ import annotations

from engine.plugin import Evidence

from .plugin import PREFIX, changes_at

SHOWN = 3
NOTABLE = 0.10  # an error change of 10 points between evaluations stands out
STILL = 0.005  # below half a point a slice's error did not move


def evidence_at(run, step: int) -> list[Evidence]:
    if PREFIX + "slices" not in run.names():
        return []
    at, changes = changes_at(run, step)
    if not changes:
        return []
    _, row = run.row_at(PREFIX + "slices", at)
    names = {t["track"]: t["description"] for t in row["tracked"]}
    moved = [c for c in changes if abs(c.change) >= STILL]
    if not moved:
        return [Evidence("error_slices", f"No tracked slice's error changed by {100 * STILL:.1f} points or more at the "
                         f"evaluation of step {at:,}.", at, None, "", 0.0, "", PREFIX + "accuracy")]
    out = []
    for c in moved[:SHOWN]:
        went = "rose" if c.change > 0 else "fell"
        weight = min(0.7, abs(c.change)) * (1.0 if c.change > 0 else 0.5) if abs(c.change) >= NOTABLE else 0.0
        name = names.get(c.track, f"#{c.track}")
        out.append(Evidence("error_slices", f"The error of slice “{name}” {went} from {c.before:.1%} to {c.after:.1%} "
                            f"at the evaluation of step {at:,} ({100 * c.change:+.1f} points).", at, 100 * c.after, "%",
                            weight, f"slice “{name}” error {went} {abs(100 * c.change):.0f} points" if weight else "",
                            PREFIX + "accuracy"))
    return out
