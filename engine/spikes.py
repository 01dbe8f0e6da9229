"""Loss spikes: steps where the training loss jumps far above its own recent level.

A step is *spiking* when its loss lies more than ``threshold`` robust standard deviations (1.4826 ×
the median absolute deviation) above the median of the ``window`` losses before it, and at least
``min_ratio`` times that median: the first rule ignores ordinary noise however large, the second
ignores wiggles that are many MADs tall only because the curve is very smooth. Spiking steps less
than ``min_gap`` steps apart are one spike, reported at its highest ratio to the median. A falling
or flat curve, however noisy, has none.

``find_spikes`` takes a whole series; ``SpikeDetector`` takes one step at a time and reports each
spike once it is over (``min_gap`` quiet steps later, or at ``finish``). Both give the same spikes.
Non-finite losses are skipped (divergence is its own event).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

MAD_TO_SD = 1.4826  # MAD of a normal distribution × this = its standard deviation
CHUNK = 65_536  # rows of sliding windows held at once by find_spikes


@dataclass(frozen=True)
class Spike:
    step: int
    loss: float
    median: float  # running median of the window before the step
    ratio: float  # loss / median
    z: float  # (loss − median) in robust standard deviations


@dataclass(frozen=True)
class SpikeRule:
    window: int = 50
    threshold: float = 6.0
    min_ratio: float = 1.1
    min_gap: int = 20

    def __post_init__(self):
        for name, low in (("window", 3), ("min_gap", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: got {value!r}, expected an integer ≥ {low}")
        for name in ("threshold", "min_ratio"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: got {getattr(self, name)!r}, expected a number > 0")

    def judge(self, step: int, loss: float, median: float, mad: float) -> Spike | None:
        """The spike at this step, if the loss is a spike against a window with this median and MAD."""
        scale = MAD_TO_SD * mad
        rise = loss - median
        if median <= 0 or loss < self.min_ratio * median or rise <= self.threshold * scale:
            return None
        return Spike(int(step), float(loss), float(median), float(loss / median),
                     float(rise / scale) if scale > 0 else float("inf"))


class _Merger:
    """Joins spiking steps closer than ``min_gap`` into one spike, kept at its highest ratio."""

    def __init__(self, min_gap: int):
        self.min_gap = min_gap
        self.current: Spike | None = None
        self.last_hit = 0

    def add(self, step: int, spike: Spike | None) -> Spike | None:
        done = None
        if self.current is not None and step - self.last_hit >= self.min_gap:
            done, self.current = self.current, None
        if spike is not None:
            if self.current is None or spike.ratio > self.current.ratio:
                self.current = spike
            self.last_hit = step
        return done

    def finish(self) -> Spike | None:
        done, self.current = self.current, None
        return done


class SpikeDetector:
    """The incremental form: ``update(step, loss)`` returns a spike when one has ended."""

    def __init__(self, rule: SpikeRule = SpikeRule()):
        self.rule = rule
        self.history: deque[float] = deque(maxlen=rule.window)
        self.merger = _Merger(rule.min_gap)

    def update(self, step: int, loss: float) -> Spike | None:
        if not np.isfinite(loss):
            return None
        spike = None
        if len(self.history) == self.rule.window:
            past = np.fromiter(self.history, dtype=np.float64)
            median = float(np.median(past))
            spike = self.rule.judge(step, loss, median, float(np.median(np.abs(past - median))))
        self.history.append(float(loss))
        return self.merger.add(step, spike)

    def finish(self) -> Spike | None:
        return self.merger.finish()


def find_spikes(steps, losses, rule: SpikeRule = SpikeRule()) -> list[Spike]:
    """Every spike of a whole (steps, losses) series, in step order."""
    steps = np.asarray(steps)
    losses = np.asarray(losses, dtype=np.float64)
    ok = np.isfinite(losses)
    steps, losses = steps[ok], losses[ok]
    w = rule.window
    merger, out = _Merger(rule.min_gap), []
    for start in range(w, len(losses), CHUNK):
        stop = min(len(losses), start + CHUNK)
        past = np.lib.stride_tricks.sliding_window_view(losses[start - w:stop - 1], w)
        median = np.median(past, axis=1)
        mad = np.median(np.abs(past - median[:, None]), axis=1)
        rise = losses[start:stop] - median
        flagged = (median > 0) & (losses[start:stop] >= rule.min_ratio * median) & \
            (rise > rule.threshold * (MAD_TO_SD * mad))
        for i in np.flatnonzero(flagged):  # spikes are few: the merging runs on them alone
            t = start + int(i)
            done = merger.add(int(steps[t]), rule.judge(steps[t], losses[t], median[i], mad[i]))
            if done is not None:
                out.append(done)
    last = merger.finish()
    return out + ([last] if last is not None else [])
