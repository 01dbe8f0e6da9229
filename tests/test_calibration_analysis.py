"""Known answers for plugins/calibration/analysis.py: closed forms, planted miscalibration,
exact bin-edge rules, and agreement with torchmetrics (test-only dependency)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from plugins.calibration import analysis as A

torchmetrics_cls = pytest.importorskip("torchmetrics.functional.classification")


# ---------------------------------------------------------------------------------------------
# Synthetic data with a planted calibration
# ---------------------------------------------------------------------------------------------
def calibrated_logits(n: int, n_classes: int = 10, seed: int = 0, scale: float = 3.0):
    """Logits whose softmax is the true label distribution (labels by Gumbel-max sampling)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=scale, size=(n, n_classes))
    return z, np.argmax(z + rng.gumbel(size=z.shape), axis=1)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def accuracy_is_confidence_squared(n: int, seed: int = 0):
    """Confidence ~ U(0, 1), correct with probability confidence**2: gap c - c^2 >= 0 everywhere."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(size=n)
    return c, rng.uniform(size=n) < c**2


# ---------------------------------------------------------------------------------------------
# The bin rule
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_bins", [1, 3, 7, 10, 15, 49])
def test_every_edge_opens_its_bin_and_the_float_below_stays_in_the_previous(dtype, n_bins):
    edges = np.array([k / n_bins for k in range(n_bins + 1)], dtype=dtype)  # the literal, e.g. 0.3
    below = np.nextafter(edges[1:], dtype(-np.inf)).astype(dtype)
    conf = np.r_[edges, below].astype(dtype)
    idx, _ = A.bin_index(conf, n_bins, "uniform")
    expected = np.r_[np.arange(n_bins), n_bins - 1, np.arange(n_bins)]  # 1.0 -> last bin
    np.testing.assert_array_equal(idx, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_point_three_opens_the_fourth_of_ten_bins_in_both_precisions(dtype):
    # float64(0.3) < 3/10 < float32(0.3): only a dtype-aware rule puts both in [0.3, 0.4)
    conf = np.array([0.3, 1.0, 0.0], dtype=dtype)
    bins = A.bin_confidences(conf, [True, True, False], n_bins=10)
    assert bins.count[3] == 1 and bins.count[9] == 1 and bins.count[0] == 1
    assert bins.lower[3] == pytest.approx(0.3) and bins.upper[9] == 1.0


def test_probability_one_lands_in_last_bin_through_the_top_label_path():
    probs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    bins = A.reliability_bins(probs, np.array([0, 2]), n_bins=15)
    assert bins.count[-1] == 2 and bins.accuracy[-1] == 0.5


def test_empty_bins_are_nan_with_zero_count_and_carry_no_weight():
    bins = A.bin_confidences(np.array([0.05, 0.95]), np.array([False, True]), n_bins=10)
    rows = bins.rows()
    assert rows.shape == (10, 7)
    empty = rows[:, 4] == 0
    assert empty.sum() == 8
    assert np.isnan(rows[empty][:, [2, 3, 5, 6]]).all()
    assert bins.calibration_error("l1") == pytest.approx(0.05)
    assert bins.calibration_error("max") == pytest.approx(0.05)


def test_quantile_bins_hold_equal_mass_and_keep_ties_together():
    rng = np.random.default_rng(1)
    conf = rng.uniform(size=1003)
    bins = A.bin_confidences(conf, conf > 0.5, n_bins=10, binning="quantile")
    assert set(bins.count.tolist()) <= {100, 101} and bins.n_samples == 1003
    assert bins.lower[0] == conf.min() and bins.upper[-1] == conf.max()
    tied = A.bin_confidences(np.r_[np.full(60, 0.7), np.linspace(0.1, 0.2, 40)], np.ones(100, bool),
                             n_bins=4, binning="quantile")
    assert tied.count.tolist() == [25, 15, 0, 60]
    five = A.bin_confidences(np.array([0.5, 0.1, 0.4, 0.2, 0.3]), np.ones(5, bool), n_bins=2, binning="quantile")
    assert five.count.tolist() == [3, 2] and five.lower[1] == 0.4  # e_1 = s_ceil(1 * 5 / 2) = s_3


def test_rows_are_in_the_declared_column_order():
    bins = A.bin_confidences(np.array([0.1, 0.12, 0.9]), np.array([1, 0, 1]), n_bins=5)
    row = bins.rows()[0]
    assert A.ROW_COLUMNS == ("lower", "upper", "confidence", "accuracy", "count", "ci_low", "ci_high")
    np.testing.assert_allclose(row[:5], [0.0, 0.2, 0.11, 0.5, 2])
    assert row[5] < 0.5 < row[6]


# ---------------------------------------------------------------------------------------------
# Clopper-Pearson
# ---------------------------------------------------------------------------------------------
def test_clopper_pearson_matches_scipy_exact_binomial_interval_and_closed_forms():
    k = np.array([0, 1, 7, 20, 20])
    n = np.array([20, 20, 20, 20, 50])
    low, high = A.clopper_pearson(k, n, alpha=0.05)
    for ki, ni, lo, hi in zip(k, n, low, high):
        ci = stats.binomtest(int(ki), int(ni)).proportion_ci(0.95, method="exact")
        assert (lo, hi) == pytest.approx((ci.low, ci.high), abs=1e-10)
    assert high[0] == pytest.approx(1 - 0.025 ** (1 / 20))  # k = 0: closed form
    assert low[0] == 0.0
    nan_low, nan_high = A.clopper_pearson([0], [0])
    assert np.isnan(nan_low[0]) and np.isnan(nan_high[0])


# ---------------------------------------------------------------------------------------------
# The ECE family: known answers
# ---------------------------------------------------------------------------------------------
def test_ece_of_calibrated_predictions_shrinks_toward_zero_with_n():
    eces = []
    for n in (1_000, 10_000, 100_000):
        z, y = calibrated_logits(n, seed=n)
        eces.append(A.expected_calibration_error(z, y, from_logits=True))
    assert eces[0] > eces[1] > eces[2]
    assert eces[2] < 0.01


def test_debiased_l2_of_calibrated_predictions_is_near_zero_and_below_plug_in():
    z, y = calibrated_logits(20_000, seed=3)
    plug_in = A.expected_calibration_error(z, y, norm="l2", binning="quantile", from_logits=True)
    debiased = A.debiased_l2_calibration_error(z, y, from_logits=True)
    assert debiased < 0.006 and debiased < plug_in


def test_debiased_l2_removes_the_plug_in_bias_of_the_squared_error():
    # accuracy = c^2, c ~ U(0, 1), equal-width bins of width h: per bin E[c] = m and E[c^2] = m^2 + h^2/12
    n_bins = 10
    h = 1 / n_bins
    m = (np.arange(n_bins) + 0.5) * h
    truth = np.mean((m - m**2 - h**2 / 12) ** 2)
    plug_in, debiased = [], []
    for seed in range(200):
        bins = A.bin_confidences(*accuracy_is_confidence_squared(300, seed), n_bins=n_bins)
        plug_in.append(bins.calibration_error("l2") ** 2)
        debiased.append(bins.debiased_l2() ** 2)
    bias_plug_in = np.mean(plug_in) - truth  # about n_bins * E[a(1 - a)] / N = 10 * (2/15) / 300 ~ 4e-3
    se = np.std(debiased) / np.sqrt(len(debiased))  # ~ 6e-4
    assert bias_plug_in > 2e-3 > 3 * se
    assert abs(np.mean(debiased) - truth) < 3 * se


@pytest.mark.parametrize("binning", ["uniform", "quantile"])
@pytest.mark.parametrize("n_bins", [5, 15, 40])
def test_accuracy_equal_to_confidence_squared_gives_one_sixth(binning, n_bins):
    c, hit = accuracy_is_confidence_squared(200_000, seed=n_bins)
    bins = A.bin_confidences(c, hit, n_bins=n_bins, binning=binning)
    full = bins.count > 0
    assert (bins.confidence[full] >= bins.accuracy[full]).all()  # precondition: one sign in every bin
    ece = bins.calibration_error("l1")
    assert ece == pytest.approx(c.mean() - hit.mean(), abs=1e-12)  # exact identity under one sign
    se = np.sqrt(5 / 36 / c.size)  # sd of c - 1[correct] is sqrt(1/6 - 1/36)
    assert abs(ece - 1 / 6) < 4 * se


def test_one_signed_gap_makes_top_label_ece_mean_confidence_minus_accuracy_under_any_binning():
    rng = np.random.default_rng(5)
    n, n_classes = 100_000, 4
    top = rng.uniform(1 / n_classes + 0.01, 1, size=n)
    probs = np.repeat(((1 - top) / (n_classes - 1))[:, None], n_classes, axis=1)
    predicted = rng.integers(0, n_classes, size=n)
    probs[np.arange(n), predicted] = top
    correct = rng.uniform(size=n) < top**2
    labels = np.where(correct, predicted, (predicted + rng.integers(1, n_classes, size=n)) % n_classes)
    gap = top.mean() - correct.mean()
    for binning in A.BINNINGS:
        for n_bins in (4, 15, 30):
            bins = A.reliability_bins(probs, labels, n_bins, binning)
            full = bins.count > 0
            assert (bins.confidence[full] >= bins.accuracy[full]).all()
            assert A.expected_calibration_error(probs, labels, n_bins, "l1", binning) == pytest.approx(gap, abs=1e-12)


def test_adaptive_ece_is_ece_over_equal_mass_bins():
    z, y = calibrated_logits(3_000, seed=6)
    z *= 2.0
    ace = A.adaptive_calibration_error(z, y, n_bins=12, from_logits=True)
    assert ace == A.expected_calibration_error(z, y, 12, "l1", "quantile", from_logits=True)
    assert ace != A.expected_calibration_error(z, y, 12, "l1", "uniform", from_logits=True)


def test_brier_and_nll_closed_forms():
    n_classes = 5
    uniform = np.full((4, n_classes), 1 / n_classes)
    labels = np.array([0, 1, 2, 4])
    assert A.brier_score(uniform, labels) == pytest.approx((n_classes - 1) / n_classes)
    assert A.negative_log_likelihood(uniform, labels) == pytest.approx(np.log(n_classes))
    one_hot = np.eye(3)[[0, 1, 2]]
    assert A.brier_score(one_hot, np.array([0, 1, 0])) == pytest.approx(2 / 3)  # one wrong row costs 2
    assert A.negative_log_likelihood(one_hot, np.array([0, 1, 0])) == np.inf


def test_nll_and_brier_from_logits_match_torch():
    z, y = calibrated_logits(500, n_classes=7, seed=8)
    expected_nll = torch.nn.functional.cross_entropy(torch.from_numpy(z), torch.from_numpy(y)).item()
    assert A.negative_log_likelihood(z, y, from_logits=True) == pytest.approx(expected_nll, rel=1e-12)
    p = torch.softmax(torch.from_numpy(z), 1)
    expected_brier = ((p - torch.nn.functional.one_hot(torch.from_numpy(y), 7)) ** 2).sum(1).mean().item()
    assert A.brier_score(z, y, from_logits=True) == pytest.approx(expected_brier, rel=1e-12)
    assert A.brier_score(softmax(z), y) == pytest.approx(expected_brier, rel=1e-12)


def test_metrics_bundle_agrees_with_the_single_functions():
    z, y = calibrated_logits(2_000, seed=9)
    z *= 1.7
    m = A.calibration_metrics(z, y, n_bins=12, from_logits=True)
    assert m.ece == pytest.approx(A.expected_calibration_error(z, y, 12, from_logits=True), abs=1e-15)
    assert m.rms_ce == pytest.approx(A.expected_calibration_error(z, y, 12, "l2", from_logits=True), abs=1e-15)
    assert m.mce == pytest.approx(A.expected_calibration_error(z, y, 12, "max", from_logits=True), abs=1e-15)
    assert m.ace == pytest.approx(A.adaptive_calibration_error(z, y, 12, from_logits=True), abs=1e-15)
    assert m.classwise_ece == pytest.approx(A.classwise_calibration_error(z, y, 12, from_logits=True), abs=1e-15)
    assert m.debiased_l2 == pytest.approx(A.debiased_l2_calibration_error(z, y, 12, from_logits=True), abs=1e-15)
    assert m.accuracy == pytest.approx(np.mean(z.argmax(1) == y))
    assert m.confidence_gap > 0.05  # logits scaled up by 1.7 are overconfident


# ---------------------------------------------------------------------------------------------
# Independent implementation: torchmetrics
# ---------------------------------------------------------------------------------------------
def off_edge_predictions(n: int, n_classes: int, n_bins: int, seed: int):
    """Miscalibrated probabilities with no confidence within 1e-6 of a bin edge."""
    z, y = calibrated_logits(n, n_classes, seed=seed)
    probs = softmax(z * 1.6)
    edges = np.arange(n_bins + 1) / n_bins
    keep = np.abs(probs[..., None] - edges).min(axis=(1, 2)) > 1e-6
    return probs[keep], y[keep]


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_top_label_errors_agree_with_torchmetrics(norm):
    probs, y = off_edge_predictions(3_000, 6, 15, seed=10)
    expected = torchmetrics_cls.multiclass_calibration_error(
        torch.from_numpy(probs), torch.from_numpy(y), num_classes=6, n_bins=15, norm=norm).item()
    assert A.expected_calibration_error(probs, y, 15, norm) == pytest.approx(expected, abs=1e-6)


def test_classwise_ece_is_the_mean_of_torchmetrics_binary_errors_per_class():
    probs, y = off_edge_predictions(3_000, 6, 15, seed=11)
    per_class = [torchmetrics_cls.binary_calibration_error(
        torch.from_numpy(np.ascontiguousarray(probs[:, k])), torch.from_numpy((y == k).astype(np.int64)),
        n_bins=15).item()
        for k in range(6)]
    assert A.classwise_calibration_error(probs, y, 15) == pytest.approx(np.mean(per_class), abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Temperature scaling
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [0.5, 2.0, 3.0])
def test_fit_temperature_recovers_a_planted_temperature_within_one_percent(temperature):
    z, y = calibrated_logits(100_000, seed=int(temperature * 10))
    fit = A.fit_temperature((z * temperature).astype(np.float32), y)
    assert fit.temperature == pytest.approx(temperature, rel=0.01)
    assert not fit.at_bound
    direct = A.calibration_metrics(z, y, from_logits=True)  # the planted, calibrated logits
    assert fit.after.nll == pytest.approx(direct.nll, abs=1e-3)
    assert fit.after.ece < 0.01


def test_temperature_minimises_nll_and_keeps_accuracy():
    z, y = calibrated_logits(5_000, seed=12)
    z *= 2.5
    fit = A.fit_temperature(z, y)
    for nudge in (0.97, 1.03):
        assert fit.after.nll < A.negative_log_likelihood(z / (fit.temperature * nudge), y, from_logits=True)
    assert fit.after.accuracy == A.calibration_metrics(z, y, from_logits=True).accuracy


def test_separable_data_pushes_temperature_to_its_bound():
    z = np.eye(3)[[0, 1, 2, 0]] * 5.0
    fit = A.fit_temperature(z, np.array([0, 1, 2, 0]), bounds=(0.05, 20.0))
    assert fit.at_bound and fit.temperature == pytest.approx(0.05, rel=1e-2)


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
def test_torch_tensors_and_numpy_arrays_give_the_same_answer():
    z, y = calibrated_logits(400, seed=13)
    t = A.expected_calibration_error(torch.from_numpy(z).float(), torch.from_numpy(y), from_logits=True)
    assert t == pytest.approx(A.expected_calibration_error(z.astype(np.float32), y, from_logits=True), abs=1e-12)


@pytest.mark.parametrize("call, match", [
    (lambda: A.expected_calibration_error(np.array([[2.0, -1.0]]), [0]), "pass from_logits=True"),
    (lambda: A.expected_calibration_error(np.array([[0.2, 0.2]]), [0]), r"row 0 sums to 0\.4"),
    (lambda: A.expected_calibration_error(np.array([0.2, 0.8]), [0]), r"probs: got shape \(2,\)"),
    (lambda: A.expected_calibration_error(np.array([[np.nan, 1.0]]), [0], from_logits=True), "finite"),
    (lambda: A.expected_calibration_error(np.array([[0.2, 0.8]]), [2]), r"class indices in \[0, 1\]"),
    (lambda: A.expected_calibration_error(np.array([[0.2, 0.8]]), [0, 1]), r"labels: got shape \(2,\)"),
    (lambda: A.expected_calibration_error(np.array([[0.2, 0.8]]), [0.0]), "integer class indices"),
    (lambda: A.expected_calibration_error(np.array([[0.2, 0.8]]), [0], n_bins=0), "n_bins: got 0"),
    (lambda: A.expected_calibration_error(np.array([[0.2, 0.8]]), [0], norm="l3"), "norm: got 'l3'"),
    (lambda: A.reliability_bins(np.array([[0.2, 0.8]]), [0], binning="equal"), "binning: got 'equal'"),
    (lambda: A.reliability_bins(np.array([[0.2, 0.8]]), [0], from_logits="yes"), "from_logits"),
    (lambda: A.bin_confidences(np.array([1.2]), [True]), r"confidence: got values in \[1\.2"),
    (lambda: A.bin_confidences(np.array([0.2]), [2]), "correct: got values other than 0 and 1"),
    (lambda: A.fit_temperature(np.ones((2, 3)), [0, 1], bounds=(0, 1)), "bounds"),
])
def test_bad_inputs_raise_errors_that_name_argument_value_and_expectation(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
