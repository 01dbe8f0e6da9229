"""A cap on the share of a run's time an expensive, scheduled measurement may take.

A sharpness measurement costs dozens of passes over the probe set, which on a small model is
hundreds of training steps, so a fixed cadence alone would let the plugin dominate short runs.
The cap holds for the whole run, the final measurement included: every measurement keeps room for
one more at the end.
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable

MIN_TIMED_STEPS = 20  # steps timed before the whole run's training time is projected from them


class TimeBudget:
    """Plugin time (spent inside ``spending()``) against training time (everything else since
    ``start``), for a run of ``total_steps``. Time passed to ``record`` (measurements, one-off
    work) is told apart from routine work such as per-step batch sharpness, whose pace so far is
    projected over the rest of the run. ``share`` 0 means no cap."""

    def __init__(self, share: float, total_steps: int, clock: Callable[[], float] = time.perf_counter):
        self.share, self.total_steps, self.clock = share, total_steps, clock
        self.start = clock()
        self.spent = 0.0  # all plugin time
        self.recorded = 0.0  # of which measurements and one-off work
        self.measured = 0

    @contextlib.contextmanager
    def spending(self):
        t = self.clock()
        try:
            yield
        finally:
            self.spent += self.clock() - t

    def record(self, seconds: float, measurement: bool = True) -> None:
        """A measurement, or other work that will not recur every step, took ``seconds`` (already
        inside ``spending()``)."""
        self.recorded += seconds
        self.measured += measurement

    def training_time(self) -> float:
        return self.clock() - self.start - self.spent

    def affords(self, step: int, cost: float, final_cost: float, last: bool) -> bool:
        """May a measurement costing ``cost`` be made at ``step``?

        The budget is ``share`` of the whole run's training time, projected from the steps timed so
        far, less the routine work projected at its pace so far and a reserve of ``final_cost`` for
        the last step's measurement. Of what is left, one measurement is allowed up front and the
        rest is released in proportion to the steps done, which spreads measurements evenly. The
        last step is measured whenever it fits (a caller that must have a measurement makes it
        anyway).
        """
        if self.share == 0:
            return True
        if step < MIN_TIMED_STEPS:
            return False  # too few steps timed to project the run (and step 1 pays warm-ups)
        scale = self.total_steps / step
        budget = self.share * self.training_time() * scale
        if last:
            return self.spent + cost <= budget
        routine = (self.spent - self.recorded) * scale
        free = budget - routine - final_cost - cost
        return free >= 0 and self.recorded <= free * step / self.total_steps
