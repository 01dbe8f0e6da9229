"""Pure numpy helpers behind every plot: smoothing, per-pixel envelopes, growable buffers.

No Qt here, so the numbers the plots show can be tested (and reused from a notebook) on their own.
Order matters: smooth the full-resolution series first, then reduce for drawing — reducing first
would make the smoothed curve depend on the zoom level.
"""
from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

MAX_WEIGHT = 0.999


def _check_weight(weight: float) -> float:
    if not 0.0 <= weight <= MAX_WEIGHT:
        raise ValueError(f"smoothing weight: got {weight!r}, expected a number in [0, {MAX_WEIGHT}]")
    return float(weight)


class Ema:
    """TensorBoard's debiased EMA, fed incrementally so a live curve only smooths its new rows.

    ``last = w*last + (1-w)*y; n += 1; out = last / (1 - w**n)`` over finite y; non-finite y pass
    through unsmoothed and uncounted, and a constant series stays constant.
    """

    def __init__(self, weight: float):
        self.weight = _check_weight(weight)
        self.last = 0.0
        self.count = 0

    def extend(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=float)
        out = y.copy()
        w = self.weight
        if w == 0.0 or y.size == 0:
            return out
        finite = np.isfinite(y)
        yf = y[finite]
        if yf.size == 0:
            return out
        last, _ = lfilter([1.0 - w], [1.0, -w], yf, zi=[w * self.last])
        n = self.count + np.arange(1, yf.size + 1)
        out[finite] = last / (1.0 - w ** n)
        self.last, self.count = float(last[-1]), int(n[-1])
        return out


def smooth(y: np.ndarray, weight: float) -> np.ndarray:
    """The whole series smoothed at once (see ``Ema``)."""
    return Ema(weight).extend(y)


def visible_slice(x: np.ndarray, x0: float, x1: float) -> slice:
    """Rows with x in [x0, x1] plus one neighbour each side, so lines run to the plot's edges."""
    i0 = max(0, int(np.searchsorted(x, x0, side="left")) - 1)
    i1 = min(len(x), int(np.searchsorted(x, x1, side="right")) + 1)
    return slice(i0, max(i0, i1))


def column_starts(x: np.ndarray, columns: int) -> np.ndarray:
    """First row index of each non-empty pixel column over sorted ``x``."""
    edges = np.linspace(x[0], x[-1], columns + 1)[:-1]
    return np.unique(np.searchsorted(x, edges, side="left"))


def envelope(x: np.ndarray, y: np.ndarray, x0: float, x1: float, columns: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """What to draw of (x, y) in [x0, x1] on ``columns`` pixels: the raw points when they fit,
    else each column's minimum then maximum (spikes survive, unlike random or stride sampling)."""
    sl = visible_slice(x, x0, x1)
    xv, yv = x[sl], np.asarray(y[sl], dtype=float)
    if len(xv) <= 2 * max(1, columns):
        return xv, yv
    starts = column_starts(xv, columns)
    ends = np.append(starts[1:], len(xv)) - 1
    with np.errstate(invalid="ignore"):
        lo = np.fmin.reduceat(yv, starts)
        hi = np.fmax.reduceat(yv, starts)
    xs = np.empty(2 * len(starts))
    ys = np.empty(2 * len(starts))
    xs[0::2], xs[1::2] = xv[starts], xv[ends]
    ys[0::2], ys[1::2] = lo, hi
    return xs, ys


def band_envelope(x: np.ndarray, low: np.ndarray, high: np.ndarray, x0: float, x1: float, columns: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A (low, high) band on ``columns`` pixels: the lowest low and highest high per column."""
    sl = visible_slice(x, x0, x1)
    xv, lv, hv = x[sl], np.asarray(low[sl], float), np.asarray(high[sl], float)
    if len(xv) <= 2 * max(1, columns):
        return xv, lv, hv
    starts = column_starts(xv, columns)
    with np.errstate(invalid="ignore"):
        return xv[starts], np.fmin.reduceat(lv, starts), np.fmax.reduceat(hv, starts)


def log10_or_nan(y: np.ndarray) -> tuple[np.ndarray, int]:
    """log10 for a log axis; zeros and negatives become NaN (a gap) and are counted, not hidden."""
    y = np.asarray(y, dtype=float)
    bad = ~(y > 0) & np.isfinite(y)
    out = np.full(y.shape, np.nan)
    np.log10(y, out=out, where=y > 0)
    return out, int(bad.sum())


def value_at(steps: np.ndarray, values, step: int):
    """The row at ``step`` or the last one before it; None before the first row."""
    if len(steps) == 0:
        return None, None
    i = int(np.searchsorted(steps, step, side="right")) - 1
    if i < 0:
        return None, None
    return int(steps[i]), values[i]


class Grow:
    """An append-only array with amortised doubling: appending k rows costs O(k)."""

    def __init__(self, first: np.ndarray):
        first = np.asarray(first)
        self._buf = np.empty((max(16, 2 * len(first)), *first.shape[1:]), dtype=first.dtype)
        self._buf[:len(first)] = first
        self.n = len(first)

    def append(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=self._buf.dtype)
        need = self.n + len(rows)
        if need > len(self._buf):
            bigger = np.empty((max(need, 2 * len(self._buf)), *self._buf.shape[1:]), dtype=self._buf.dtype)
            bigger[:self.n] = self._buf[:self.n]
            self._buf = bigger
        self._buf[self.n:need] = rows
        self.n = need

    @property
    def array(self) -> np.ndarray:
        """A view of the rows so far; later appends never change what it shows."""
        return self._buf[:self.n]

    def __len__(self) -> int:
        return self.n
