"""Loss spikes: steps where the training loss jumps far above its own recent level.

The rule works on the logarithm of the loss, because loss noise is multiplicative: late in a
mini-batch run a batch with one hard sample often has 5–10× the median loss, which is ordinary
noise there, while on a smooth full-batch curve a rise of 20 % can be many spreads tall. A step is
*spiking* when its log-loss lies more than ``threshold`` robust standard deviations (1.4826 × the
median absolute deviation) above the median log-loss of the ``window`` steps before it, and its
loss is at least ``min_ratio`` times that median (the second rule ignores wiggles that are many
MADs tall only because the curve is very smooth). Spiking steps less than ``min_gap`` steps apart
are one spike, reported at its highest ratio to the median. A falling or flat curve, however
noisy, has none.

``find_spikes`` takes a whole series; ``SpikeDetector`` takes steps as they come (one or many at a
time) and reports each spike once it is over (``min_gap`` quiet steps later, or at ``finish``).
Both give the same spikes. Non-finite losses are skipped (divergence is its own event); a window
whose median is not positive has no spikes (a ratio to it means nothing).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAD_TO_SD = 1.4826  # MAD of a normal distribution × this = its standard deviation
TINY = 1e-300  # losses ≤ 0 are taken as this, so every loss has a log
NO_MEDIAN = float(np.log(TINY)) / 2  # a median log-loss below this means at least half the window was ≤ 0
CHUNK = 65_536  # rows of sliding windows held at once by find_spikes


@dataclass(frozen=True)
class Spike:
    step: int
    loss: float
    median: float  # running median of the window before the step (the exp of its median log-loss)
    ratio: float  # loss / median
    z: float  # log(loss / median) in robust standard deviations of the window's log-loss


@dataclass(frozen=True)
class SpikeRule:
    """The rule a spike meets (the run config's [spikes] table holds the same keys)."""

    window: int = 50
    threshold: float = 5.0
    min_ratio: float = 1.1
    min_gap: int = 20

    @classmethod
    def from_config(cls, table: dict) -> "SpikeRule":
        return cls(table["window"], table["threshold"], table["min_ratio"], table["min_gap"])

    def __post_init__(self):
        for name, low in (("window", 3), ("min_gap", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: got {value!r}, expected an integer ≥ {low}")
        for name in ("threshold", "min_ratio"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: got {getattr(self, name)!r}, expected a number > 0")

    def judge(self, step: int, loss: float, log_median: float, log_mad: float) -> Spike | None:
        """The spike at this step, if the loss is a spike against a window with this median and MAD
        of its log-losses."""
        median = float(np.exp(log_median))
        rise = float(np.log(max(loss, TINY))) - log_median
        scale = MAD_TO_SD * log_mad
        if log_median <= NO_MEDIAN or loss < self.min_ratio * median or rise <= self.threshold * scale:
            return None
        return Spike(int(step), float(loss), median, float(loss / median), rise / scale if scale > 0 else float("inf"))


class _Merger:
    """Joins spiking steps closer than ``min_gap`` into one spike, kept at its highest ratio."""

    def __init__(self, min_gap: int):
        self.min_gap = min_gap
        self.current: Spike | None = None
        self.last_hit = 0

    def add(self, step: int, spike: Spike) -> Spike | None:
        done = self.quiet_at(step)
        if self.current is None or spike.ratio > self.current.ratio:
            self.current = spike
        self.last_hit = step
        return done

    def quiet_at(self, step: int) -> Spike | None:
        """The current spike, if ``step`` is ``min_gap`` steps past its last spiking step: it is over."""
        if self.current is not None and step - self.last_hit >= self.min_gap:
            done, self.current = self.current, None
            return done
        return None

    def finish(self) -> Spike | None:
        done, self.current = self.current, None
        return done


class SpikeDetector:
    """The incremental form: losses go in as they come (one step, or many at once: the engine feeds
    a flush's worth of steps in one vectorised call), spikes come out once they are over."""

    def __init__(self, rule: SpikeRule = SpikeRule()):
        self.rule = rule
        self.history = np.zeros(0)  # the last ``window`` finite losses
        self.merger = _Merger(rule.min_gap)

    def seed(self, losses) -> None:
        """The losses of the steps before the first one fed (a resumed run's last ones)."""
        losses = np.asarray(losses, dtype=np.float64)
        self.history = losses[np.isfinite(losses)][-self.rule.window:]

    def update(self, step: int, loss: float) -> Spike | None:
        done = self.update_many([step], [loss])
        return done[0] if done else None

    def update_many(self, steps, losses) -> list[Spike]:
        """The spikes that are over by the last of these steps, in step order."""
        steps = np.asarray(steps)
        losses = np.asarray(losses, dtype=np.float64)
        ok = np.isfinite(losses)
        steps, losses = steps[ok], losses[ok]
        w, out = self.rule.window, []
        series = np.concatenate([self.history, losses])
        offset = len(self.history)  # series[offset + t] is losses[t]
        for start in range(max(w, offset), len(series), CHUNK):  # rows with a full window before them
            stop = min(len(series), start + CHUNK)
            logs = np.log(np.maximum(series[start - w:stop], TINY))
            past = np.lib.stride_tricks.sliding_window_view(logs[:-1], w)
            median = np.median(past, axis=1)
            mad = np.median(np.abs(past - median[:, None]), axis=1)
            rise = logs[w:] - median
            flagged = (median > NO_MEDIAN) & (series[start:stop] >= self.rule.min_ratio * np.exp(median)) & \
                (rise > self.rule.threshold * (MAD_TO_SD * mad))
            for i in np.flatnonzero(flagged):  # spikes are few: the merging runs on them alone
                t = start + int(i) - offset
                spike = self.rule.judge(steps[t], losses[t], median[i], mad[i])
                if spike is not None and (done := self.merger.add(int(steps[t]), spike)) is not None:
                    out.append(done)
        if len(steps) and (done := self.merger.quiet_at(int(steps[-1]))) is not None:
            out.append(done)
        self.history = series[-w:]
        return out

    def finish(self) -> Spike | None:
        """The spike still going on at the end of the losses, if any."""
        return self.merger.finish()


def find_spikes(steps, losses, rule: SpikeRule = SpikeRule()) -> list[Spike]:
    """Every spike of a whole (steps, losses) series, in step order."""
    detector = SpikeDetector(rule)
    out = detector.update_many(steps, losses)
    last = detector.finish()
    return out + ([last] if last is not None else [])
