"""Which steps the sharpness plugin measures, fixed before training from what a measurement costs.

Costs are counted in *sample-passes*, one forward and backward pass of one sample: what a training
step spends per sample, so a step costs ``batch_size`` of them. Over a probe of P samples, building
the Hessian operator (the gradient, keeping its graph) costs P, a Hessian-vector product (a double
backward) about 2P and a loss-slice point (a forward pass) P/3. Counting work rather than seconds
makes the plan a function of the config alone: two runs of one config measure the same steps on
any machine at any speed, and a resumed run measures what an uninterrupted one would.

A budget that would leave fewer than ``min_measurements`` points is overruled (a handful of points
is no curve), and the event that announces the plan says so and what it costs. A run whose length
or batch size is not known (a user's own loop may not say) has no training work to take a share
of: it is measured at every step of the cadence.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

GRADIENT, HVP, FORWARD = 1.0, 2.0, 1 / 3  # sample-passes per probe sample
LISTED_STEPS = 24  # a plan of more steps is shown by its first and last ones


def measurement_cost(probe: int, hvps: int) -> float:
    """Most sample-passes one measurement can take: the operator's gradient, then ``hvps`` products."""
    return probe * (GRADIENT + HVP * hvps)


def snapshot_cost(probe: int, slice_points: int, hvps: int) -> float:
    """Loss slices (a forward pass over the probe per point) and the density's products."""
    return probe * (FORWARD * slice_points + HVP * hvps)


@dataclass(frozen=True)
class Plan:
    """The measured steps and the costs they were chosen by (all in sample-passes)."""

    steps: tuple[int, ...] | None  # None: a run of unknown length, measured at every cadence step
    every: int
    first: int  # the first step the optimizer can be measured at
    cadence: int | None  # steps the cadence offered (every N, the first and the last)
    affordable: int | None  # measurements the budget alone allows; None: no budget applies
    measurement: float  # the most one measurement may cost
    fixed: float  # batch sharpness and snapshots, made whatever the plan
    training: float | None  # the run's training work; None: not known
    budget: float
    _lookup: frozenset = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_lookup", frozenset(self.steps or ()))

    def measures(self, step: int) -> bool:
        if self.steps is None:
            return step == self.first or (step > self.first and step % self.every == 0)
        return step in self._lookup

    @property
    def most(self) -> float:
        """The most the plugin can spend in the whole run (a known number of measurements)."""
        return self.fixed + len(self.steps or ()) * self.measurement

    def describe(self) -> str:
        if self.steps is None:
            return (f"Sharpness: this loop did not say how many steps it trains, so the sharpness is "
                    f"measured at step {self.first} and every {self.every} steps, each measurement at "
                    f"most {self.measurement:,.0f} sample-passes (a sample-pass: one sample's forward "
                    "and backward pass); no budget applies.")
        n, s = len(self.steps), self.steps
        shown = s if n <= LISTED_STEPS else (*s[:LISTED_STEPS - 4], "…", *s[-3:])
        text = (f"Sharpness: {n} measurements planned, at steps {', '.join(map(str, shown))}. Each costs "
                f"at most {self.measurement:,.0f} sample-passes (a sample-pass: one sample's forward and "
                f"backward pass) and the whole plugin at most {self.most:,.0f}")
        if self.training is None:
            return text + (". This loop did not give its batch size, so the training's work is not "
                           "known and no budget applies: every step of the cadence is measured.")
        text += f", {self.most / self.training:.2g}× the training's {self.training:,.0f}."
        if self.affordable is not None and n > self.affordable:
            text += (f" The budget ({self.budget:g}× the training's work) alone would allow {self.affordable}; "
                     "min_measurements raises that so the curve has points.")
        if n >= self.cadence:
            return text + " Every step of the cadence is measured."
        return text + f" They are spread evenly over the {self.cadence} steps of the cadence."


def cadence_steps(total_steps: int, every: int, first: int) -> list[int]:
    """The first measurable step, every ``every``-th step after it, and the last step."""
    if total_steps < first:
        return []
    return sorted({first, *range(every, total_steps + 1, every), total_steps} - set(range(first)))


def spread(steps: list[int], n: int, forced: set[int]) -> set[int]:
    """``n`` of ``steps`` evenly spaced by position (the first and the last among them), each
    ``forced`` step taking the place of the nearest one that is not forced (n ≥ len(forced))."""
    at = np.round(np.linspace(len(steps) - 1, 0, min(n, len(steps)))).astype(int)
    chosen = {steps[i] for i in at}
    for f in sorted(forced - chosen):
        if len(chosen) >= n:
            chosen.remove(min(chosen - forced, key=lambda s: (abs(s - f), s)))
        chosen.add(f)
    return chosen


def make_plan(total_steps: int | None, every: int, first: int, batch_size: int | None, budget: float,
              min_measurements: int, measurement: float, fixed: float, forced: set[int]) -> Plan:
    """Measure every cadence step the budget pays for (``budget`` × the training's work, 0: no
    limit), but never fewer than ``min_measurements``; ``forced`` steps (snapshots) are always
    measured and count among them."""
    if total_steps is None:
        return Plan(None, every, first, None, None, measurement, fixed, None, budget)
    cadence = cadence_steps(total_steps, every, first)
    forced = {s for s in forced if first <= s <= total_steps}
    training = float(total_steps * batch_size) if batch_size else None
    if budget <= 0 or training is None:
        return Plan(tuple(sorted({*cadence, *forced})), every, first, len(cadence), None, measurement, fixed,
                    training, budget)
    affordable = max(0, int((budget * training - fixed) // measurement))
    n = max(min(affordable, len(cadence)), min(min_measurements, len(cadence)), len(forced))
    return Plan(tuple(sorted(spread(cadence, n, forced))), every, first, len(cadence), affordable, measurement,
                fixed, training, budget)
