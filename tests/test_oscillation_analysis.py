"""Known answers for the pure oscillation analysis (plugins/oscillation/analysis.py)."""
import math

import numpy as np
import pytest
import torch

from plugins.oscillation.analysis import (Freezer, OscillationTracker, cosine_schedule, dampening_gradient,
                                          find_jumps, frequency_histogram, segment_cosines, segment_sums,
                                          settled_since)


def nagel_reference(trajectory: np.ndarray, momentum: float):
    """A direct float64 transcription of the definition (as in Nagel et al.'s code), with the
    start-up bias correction: per-update oscillation events and the corrected EMA."""
    prev = trajectory[0].astype(np.int64)
    direction = np.zeros_like(prev)
    events = np.zeros(trajectory.shape, dtype=bool)
    ema = np.zeros(trajectory.shape)
    e = np.zeros(trajectory.shape[1])
    for t in range(len(trajectory)):
        if t:
            change = trajectory[t].astype(np.int64) - prev
            events[t] = change * direction < 0
            direction = np.where(change != 0, np.sign(change), direction)
            prev = trajectory[t].astype(np.int64)
        e = (1 - momentum) * e + momentum * events[t]
        ema[t] = e / (1 - (1 - momentum) ** (t + 1))
    return events, ema


def run(tracker: OscillationTracker, trajectory: np.ndarray):
    """Feed a (T, n) integer trajectory; per update: events, EMA, and the window count if complete."""
    out = []
    for row in trajectory:
        events = tracker.update(torch.from_numpy(row)).numpy()
        window = tracker.window_counts().numpy().copy() if tracker.window_complete else None
        out.append((events, tracker.ema_frequency().numpy().astype(float), window))
    return out


def toggling(period: int, steps: int) -> np.ndarray:
    return ((np.arange(steps) // period) % 2).astype(np.int8)[:, None]


@pytest.mark.parametrize("bits", [8, 4])
def test_events_window_counts_and_ema_agree_with_a_direct_implementation(bits):
    rng = np.random.default_rng(bits)
    lo, hi = -2 ** (bits - 1), 2 ** (bits - 1) - 1
    moves = rng.choice([-3, -1, 0, 0, 0, 0, 1, 2], size=(900, 400))  # jumps of several levels, clipping
    trajectory = np.clip(np.cumsum(moves, axis=0), lo, hi).astype(np.int8)
    m, window = 0.01, 100
    tracker = OscillationTracker(400, m, window, bits=bits)
    events, ema = nagel_reference(trajectory, m)
    for t, (ev, e, counts) in enumerate(run(tracker, trajectory)):
        assert np.array_equal(ev, events[t]), t
        bound = tracker.relative_error * ema[t] + tracker.absolute_error / (1 - (1 - m) ** (t + 1))
        assert np.all(np.abs(e - ema[t]) <= bound + 1e-7), t
        if counts is not None:
            assert np.array_equal(counts, events[t - window + 1:t + 1].sum(axis=0)), t
    assert events.sum() > 10_000  # the walk oscillates plenty: the comparison is not vacuous


def test_all_state_fits_in_four_bytes_per_weight():
    tracker = OscillationTracker(10_000)
    assert tracker.bytes_per_weight() == 4.0
    state = tracker.state_dict()
    assert sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v)) == 40_000


@pytest.mark.parametrize("period", [1, 2, 4, 10, 50])
def test_toggling_every_p_steps_gives_window_frequency_exactly_one_over_p(period):
    window = 200  # a multiple of every period, so each window holds a whole number of oscillations
    tracker = OscillationTracker(1, 0.01, window)
    results = run(tracker, toggling(period, 2000))
    windows = [w for _, _, w in results if w is not None]
    assert len(windows) == 10
    # the first window starts at the first value, and its first change has no direction to reverse
    assert windows[0][0] == (window - 1) // period - 1
    for t, (_, _, w) in enumerate(results):
        if w is not None and t >= window:
            assert tracker.window_span == window
            assert w[0] == window // period
    assert tracker.window_frequency()[0].item() == np.float32(1 / period)


@pytest.mark.parametrize("period", [1, 2, 4, 10, 50])
def test_ema_of_a_toggle_stays_within_its_documented_ripple(period):
    m = 0.01
    high = m / (1 - (1 - m) ** period)  # just after an oscillation
    low = high * (1 - m) ** (period - 1)  # just before the next
    tracker = OscillationTracker(1, m, 200)
    ema = np.array([e[0] for _, e, _ in run(tracker, toggling(period, 3000))])
    settled = ema[2000:]  # the start-up transient has decayed by (1 − m)^2000
    tol = tracker.relative_error * high + tracker.absolute_error
    assert settled.max() <= high + tol and settled.min() >= low - tol
    assert settled.max() >= high - tol and settled.min() <= low + tol  # the ripple is really there
    whole = settled[: len(settled) // (2 * period) * 2 * period]
    assert whole.mean() == pytest.approx(1 / period, rel=0.01)  # unbiased over a period


def test_ripple_of_a_slow_oscillation_is_measured_as_documented():
    """P = 50 at m = 0.01: +27 % just after each oscillation, −23 % just before the next (docstring)."""
    tracker = OscillationTracker(1, 0.01, 200)
    ema = np.array([e[0] for _, e, _ in run(tracker, toggling(50, 4000))])[3000:]
    assert ema.max() * 50 - 1 == pytest.approx(0.266, abs=0.01)
    assert ema.min() * 50 - 1 == pytest.approx(-0.226, abs=0.01)
    # the window count read on its cadence does not ripple at all
    assert tracker.window_frequency()[0].item() == np.float32(1 / 50)


def test_a_monotone_staircase_never_oscillates():
    stairs = np.stack([np.arange(600) // 5 - 60, -(np.arange(600) // 3) + 100], axis=1).astype(np.int8)
    tracker = OscillationTracker(2, 0.01, 100)
    results = run(tracker, stairs)
    assert not any(ev.any() for ev, _, _ in results)
    assert tracker.ema_frequency().abs().max() == 0 and tracker.window_counts().max() == 0


@pytest.mark.parametrize("q", [0.1, 0.5, 0.9])
def test_a_random_walk_moving_with_probability_q_oscillates_at_q_over_2(q):
    rng = np.random.default_rng(7)
    n, steps, window = 2000, 1300, 256
    moves = np.where(rng.random((steps, n)) < q, rng.choice([-1, 1], size=(steps, n)), 0)
    walk = np.clip(np.cumsum(moves, axis=0), -128, 127).astype(np.int8)
    tracker = OscillationTracker(n, 0.01, window)
    windows = [w for _, _, w in run(tracker, walk) if w is not None][1:]  # past the first move
    assert np.mean(windows) / window == pytest.approx(q / 2, abs=0.004)
    assert tracker.ema_frequency().mean().item() == pytest.approx(q / 2, abs=0.006)


def test_window_count_between_boundaries_is_exact_over_the_updates_since_the_last():
    tracker = OscillationTracker(1, 0.01, 10)
    results = run(tracker, toggling(1, 25))  # updates 1-10 and 11-20 are windows; 21-25 is partial
    assert tracker.window_span == 5 and not tracker.window_complete
    assert tracker.window_counts()[0] == 5 and tracker.window_frequency()[0] == 1.0
    assert [t for t, (_, _, w) in enumerate(results, 1) if w is not None] == [10, 20]


@pytest.mark.parametrize("eta_lambda, flips, cosine", [(1.5, 1.0, -1.0), (1.9, 1.0, -1.0),
                                                       (0.5, 0.0, 1.0), (0.1, 0.0, 1.0)])
def test_gradient_descent_on_a_quadratic_flips_only_beyond_eta_lambda_one(eta_lambda, flips, cosine):
    """x ← x − ηλx on ½λx²: for ηλ in (1, 2) every update reverses and consecutive gradients are
    opposite; below 1 nothing reverses. A weight resting at the minimum (sign(0)) never counts."""
    lam, sizes = 2.0, [50, 10]
    x = torch.cat([torch.randn(50, generator=torch.Generator().manual_seed(0)) + 0.5, torch.zeros(10)])
    tracker = OscillationTracker(60, 0.05, 8, bits=1)
    previous_grad, rates, cosines = None, [], []
    for _ in range(40):
        grad = lam * x
        if previous_grad is not None:
            cosines.append(segment_cosines(grad, previous_grad, sizes))
        previous_grad = grad
        new = x - eta_lambda / lam * grad
        rates.append(segment_sums(tracker.update_changes(new - x), sizes) / torch.tensor(sizes))
        x = new
    rates, cosines = torch.stack(rates), torch.stack(cosines)
    assert torch.all(rates[1:, 0] == flips) and rates[0, 0] == 0  # the first change has no previous one
    assert torch.allclose(cosines[:, 0], torch.tensor(cosine), atol=1e-6)
    assert torch.all(rates[:, 1] == 0) and torch.isnan(cosines[:, 1]).all()  # resting at 0: no flips, no cosine
    assert tracker.window_frequency()[:50].eq(flips).all()


def test_state_dict_resumes_exactly_and_refuses_another_shape():
    rng = np.random.default_rng(3)
    trajectory = np.clip(np.cumsum(rng.choice([-1, 0, 0, 1], size=(300, 50)), 0), -8, 7).astype(np.int8)
    whole = OscillationTracker(50, 0.02, 64, bits=4)
    run(whole, trajectory)
    first = OscillationTracker(50, 0.02, 64, bits=4)
    run(first, trajectory[:137])
    second = OscillationTracker(50, 0.02, 64, bits=4)
    second.load_state_dict(first.state_dict())
    run(second, trajectory[137:])
    assert torch.equal(second.word, whole.word) and second.steps == whole.steps == 300
    with pytest.raises(ValueError, match="window"):
        OscillationTracker(50, 0.02, 32, bits=4).load_state_dict(first.state_dict())


def test_bad_input_is_refused_clearly():
    with pytest.raises(ValueError, match="window must be an integer in \\[1, 511\\]"):
        OscillationTracker(4, window=512)
    with pytest.raises(ValueError, match="momentum"):
        OscillationTracker(4, momentum=0.0)
    with pytest.raises(ValueError, match="use momentum ≥"):
        OscillationTracker(4, momentum=0.0002)
    tracker = OscillationTracker(3, bits=4)
    with pytest.raises(TypeError, match="integer dtype"):
        tracker.update(torch.zeros(3))
    with pytest.raises(ValueError, match="1-D tensor of 3"):
        tracker.update(torch.zeros(4, dtype=torch.int8))
    with pytest.raises(ValueError, match=r"\[-8, 7\] for bits = 4, got values from 0 to 9"):
        tracker.update(np.array([0, 9, 1]))


def test_freezer_freezes_at_the_rounded_integer_ema_and_stops_following():
    freezer = Freezer(2, momentum=0.5)
    freezer.update(torch.tensor([0, 3]), None, None)
    freezer.update(torch.tensor([1, 3]), None, None)  # EMA 0.5 → 0.5 stays, 3 stays
    freezer.update(torch.tensor([1, 3]), None, None)  # EMA 0.75
    new = freezer.update(torch.tensor([0, 3]), torch.tensor([0.3, 0.0]), 0.2)
    assert new.tolist() == [True, False] and freezer.values()[0] == 1  # round(0.75), before this update
    freezer.update(torch.tensor([1, 4]), torch.tensor([0.9, 0.9]), 0.95)
    assert freezer.values()[0] == 1 and freezer.ema[0] == 1.0  # frozen: its EMA no longer moves
    assert freezer.frozen.tolist() == [True, False]


def test_cosine_schedule_holds_then_anneals():
    assert cosine_schedule(0.1, 0.1, 0.02) == 0.1
    assert cosine_schedule(0.625, 0.1, 0.02) == pytest.approx(0.06)
    assert cosine_schedule(1.0, 0.1, 0.02) == pytest.approx(0.02)
    assert cosine_schedule(1.0, 0.0, 0.5) == pytest.approx(0.5)


def test_dampening_gradient_pulls_towards_the_grid_point_inside_the_range_only():
    w = torch.tensor([0.3, 0.7, 5.0, -5.0])
    q = torch.tensor([0.0, 1.0, 2.0, -2.0])  # grid points; the range is [-2, 2]
    g = dampening_gradient(w, q, torch.tensor(-2.0), torch.tensor(2.0), 0.5)
    assert torch.allclose(g, torch.tensor([0.3, -0.3, 0.0, 0.0]))


def test_frequency_histogram_leaves_out_weights_that_never_oscillated():
    f = torch.tensor([0.0, 0.0, 0.01, 0.06, 0.06, 1.0, 0.0, 0.0])
    h = frequency_histogram(f, 20)
    assert h.sum() == pytest.approx(0.5) and h[0] == pytest.approx(1 / 8) and h[1] == pytest.approx(2 / 8)
    assert h[-1] == pytest.approx(1 / 8)


def test_find_jumps_finds_a_planted_step_and_ignores_noise():
    rng = np.random.default_rng(0)
    steps = np.arange(10, 1010, 10)
    values = np.where(steps >= 420, 0.6, 0.1) + rng.normal(0, 0.02, len(steps))
    (jump,) = find_jumps(steps, values)
    assert jump.step == 420
    assert jump.before == pytest.approx(0.1, abs=0.03) and jump.after == pytest.approx(0.6, abs=0.03)
    assert find_jumps(steps, rng.normal(0.3, 0.05, len(steps))) == []
    assert find_jumps(steps, np.where(steps >= 420, 0.1, 0.6)) == []  # a fall is not a jump
    exact = np.r_[np.zeros(20), np.ones(20)]
    assert [j.step for j in find_jumps(np.arange(1, 41), exact)] == [21]


def test_settled_since_is_the_start_of_the_last_stretch_above_a_level():
    steps = np.array([10, 20, 30, 40, 50])
    assert settled_since(steps, [0.0, 0.3, 0.1, 0.4, 0.5], 0.2) == 40
    assert settled_since(steps, [0.3, 0.3, 0.3, 0.3, 0.3], 0.2) == 10
    assert settled_since(steps, [0.3, 0.3, 0.3, 0.3, math.nan], 0.2) == 50
