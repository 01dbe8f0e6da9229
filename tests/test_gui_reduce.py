"""Known answers for the numbers behind every plot: smoothing, envelopes, log axes, buffers."""
import math

import numpy as np
import pytest

from gui.reduce import Ema, Grow, envelope, band_envelope, log10_or_nan, smooth, value_at


def tensorboard_smooth(ys, w):
    """TensorBoard's debiased EMA written out as its loop (the reference users compare against)."""
    last, n, out = 0.0, 0, []
    for y in ys:
        if not math.isfinite(y):
            out.append(y)
            continue
        last = last * w + (1 - w) * y
        n += 1
        out.append(last / (1 - w ** n))
    return np.array(out)


@pytest.mark.parametrize("w", [0.0, 0.3, 0.9, 0.99])
def test_smoothing_matches_tensorboard_loop(w):
    y = np.random.default_rng(0).standard_normal(500).cumsum()
    y[[10, 200]] = np.nan
    y[300] = np.inf
    np.testing.assert_allclose(smooth(y, w), tensorboard_smooth(y, w), rtol=1e-12, equal_nan=True)


def test_smoothing_keeps_constant_series_and_passes_non_finite_uncounted():
    y = np.full(50, 3.25)
    y[5] = np.nan
    out = smooth(y, 0.95)
    assert np.isnan(out[5])
    np.testing.assert_allclose(np.delete(out, 5), 3.25, rtol=1e-12)


def test_incremental_smoothing_equals_smoothing_at_once():
    y = np.random.default_rng(1).random(1000)
    ema = Ema(0.9)
    parts = [ema.extend(chunk) for chunk in np.split(y, [1, 7, 300, 301, 999])]
    np.testing.assert_allclose(np.concatenate(parts), smooth(y, 0.9), rtol=1e-12)


def test_smoothing_rejects_weight_outside_range():
    with pytest.raises(ValueError, match="smoothing weight: got 1.5"):
        Ema(1.5)


def test_envelope_keeps_every_column_extreme_and_the_spike():
    rng = np.random.default_rng(2)
    x = np.arange(1, 100_001, dtype=float)
    y = rng.standard_normal(len(x))
    y[54_321] = 50.0
    y[12_345] = -40.0
    xs, ys = envelope(x, y, x[0], x[-1], columns=500)
    assert len(xs) <= 2 * 500 and ys.max() == 50.0 and ys.min() == -40.0
    # brute force: each column's min and max over the same buckets
    edges = np.linspace(x[0], x[-1], 501)[:-1]
    starts = np.unique(np.searchsorted(x, edges))
    bounds = list(starts) + [len(x)]
    lo = [y[a:b].min() for a, b in zip(bounds[:-1], bounds[1:])]
    hi = [y[a:b].max() for a, b in zip(bounds[:-1], bounds[1:])]
    np.testing.assert_array_equal(ys[0::2], lo)
    np.testing.assert_array_equal(ys[1::2], hi)


def test_envelope_returns_raw_points_when_they_fit_and_clips_to_the_window():
    x = np.arange(100, dtype=float)
    y = x ** 2
    xs, ys = envelope(x, y, 10, 20, columns=400)
    np.testing.assert_array_equal(xs, np.arange(9, 22))  # one neighbour each side
    np.testing.assert_array_equal(ys, xs ** 2)


def test_band_envelope_takes_lowest_low_and_highest_high():
    x = np.arange(10_000, dtype=float)
    low, high = -np.ones(len(x)), np.ones(len(x))
    low[777], high[8888] = -9.0, 9.0
    bx, lo, hi = band_envelope(x, low, high, 0, 9999, columns=100)
    assert len(bx) <= 100 and lo.min() == -9.0 and hi.max() == 9.0


def test_log_of_non_positive_values_is_a_counted_gap():
    out, bad = log10_or_nan(np.array([100.0, 0.0, -3.0, 0.01, np.nan]))
    np.testing.assert_allclose(out[[0, 3]], [2.0, -2.0])
    assert np.isnan(out[[1, 2, 4]]).all() and bad == 2


def test_value_at_takes_last_row_at_or_before_step():
    steps = np.array([10, 20, 30])
    assert value_at(steps, ["a", "b", "c"], 25) == (20, "b")
    assert value_at(steps, ["a", "b", "c"], 30) == (30, "c")
    assert value_at(steps, ["a", "b", "c"], 5) == (None, None)


def test_grow_appends_without_changing_earlier_views():
    g = Grow(np.arange(3))
    before = g.array
    for i in range(100):
        g.append(np.array([i, i]))
    assert len(g) == 203 and list(before) == [0, 1, 2]
    np.testing.assert_array_equal(g.array[3:7], [0, 0, 1, 1])
