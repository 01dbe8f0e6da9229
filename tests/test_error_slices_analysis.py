"""Error-slice discovery, pure: the statistics against scipy and textbook values, the conjunction
search against brute force, the mixture against scikit-learn, and find_slices on planted slices
(recovered with high precision and recall) and on data with none (nothing reported)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from plugins.error_slices import attributes, mixture
from plugins.error_slices.analysis import errors_by_value, find_slices, search, smallest_slice
from plugins.error_slices.stats import excess_deviance, fisher_greater, holm, hypergeom_upper_tail, wilson_interval
from plugins.error_slices.synthetic import planted_evaluation
from plugins.error_slices.tracking import SliceTracker, error_change, match

SEEDS = range(5)


def best_match(slices, truth: np.ndarray) -> tuple[float, float]:
    """(precision, recall) of the reported slice that best matches a planted one (Jaccard)."""
    rows = np.flatnonzero(truth)
    if not slices:
        return 0.0, 0.0
    best = max(slices, key=lambda s: len(np.intersect1d(s.rows, rows)) / len(np.union1d(s.rows, rows)))
    hit = len(np.intersect1d(best.rows, rows))
    return hit / best.size, hit / len(rows)


def two_class(errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros(len(errors), np.int64)
    probs = np.tile([0.8, 0.2], (len(errors), 1))
    probs[errors] = [0.2, 0.8]
    return labels, probs


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------
def test_fisher_matches_scipy_fisher_exact():
    rng = np.random.default_rng(0)
    for _ in range(200):
        total = int(rng.integers(10, 400))
        total_errors = int(rng.integers(1, total))
        size = int(rng.integers(1, total))
        errors = int(rng.integers(max(0, total_errors - (total - size)), min(size, total_errors) + 1))
        table = [[errors, size - errors], [total_errors - errors, total - size - (total_errors - errors)]]
        expected = stats.fisher_exact(table, alternative="greater").pvalue
        assert fisher_greater([errors], [size], total_errors, total)[0] == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_the_hypergeometric_tail_matches_scipy_at_every_scale_and_in_blocks():
    rng = np.random.default_rng(2)
    for total in (12, 400, 3000, 100_000):
        for _ in range(40):
            total_errors = int(rng.integers(0, total + 1))
            size = rng.integers(0, total + 1, size=60)
            errors = rng.integers(-2, np.minimum(size, total_errors) + 3)  # outside the support too
            expected = stats.hypergeom.sf(errors - 1, total, total_errors, size)
            for max_terms in (2 ** 21, 50):  # one block, and many
                got = hypergeom_upper_tail(errors, size, total_errors, total, max_terms=max_terms)
                assert got == pytest.approx(expected, rel=1e-9, abs=1e-290)


def test_screening_changes_no_decision_at_its_level():
    rng = np.random.default_rng(1)
    for level in (0.05, 1e-4):
        total, total_errors = 3000, 240
        size = rng.integers(1, total, size=5000)
        errors = rng.hypergeometric(total_errors, total - total_errors, size)
        screened = fisher_greater(errors, size, total_errors, total, level=level)
        exact = fisher_greater(errors, size, total_errors, total)
        skipped = screened == 1
        assert skipped.mean() > 0.5  # the screen does its job...
        assert (exact[skipped] > level).all()  # ...and never hides a p-value at or below the level
        np.testing.assert_array_equal(screened[~skipped], exact[~skipped])


def test_holm_matches_its_textbook_definition_and_counts_unscored_candidates():
    rng = np.random.default_rng(2)
    for _ in range(100):
        p = rng.uniform(0, 0.02, size=int(rng.integers(1, 30))) ** rng.uniform(0.5, 2)
        m = len(p) + int(rng.integers(0, 50))
        keep, cutoff = holm(p, m, 0.05)
        order, expected = np.argsort(p, kind="stable"), np.zeros(len(p), bool)
        for i, j in enumerate(order):  # step down: reject while p_(i) <= alpha / (m - i)
            if p[j] > 0.05 / (m - i):
                break
            expected[j] = True
        np.testing.assert_array_equal(keep, expected)
        assert (p[keep] <= cutoff).all() if keep.any() else cutoff == 0
    with pytest.raises(ValueError, match="m: got 1"):
        holm([0.1, 0.2], 1)


def test_wilson_interval_textbook_values():
    lo, hi = wilson_interval(np.array([0, 5, 10]), np.array([10, 10, 10]))
    np.testing.assert_allclose(lo, [0.0, 0.236593, 0.722467], atol=1e-6)
    np.testing.assert_allclose(hi, [0.277533, 0.763407, 1.0], atol=1e-6)


def test_excess_deviance_is_the_g_test_and_signed():
    g = excess_deviance([30, 2], [50, 50], 80, 1000)
    table = np.array([[30, 20], [50, 900]])
    expected = stats.chi2_contingency(table, correction=False, lambda_="log-likelihood")[0]
    assert g[0] == pytest.approx(expected, rel=1e-9)
    assert g[1] < 0  # a slice failing less than the rest


# ---------------------------------------------------------------------------------------------
# The conjunction search
# ---------------------------------------------------------------------------------------------
def test_conjunction_search_agrees_with_brute_force():
    rng = np.random.default_rng(3)
    n = 600
    meta = {"a": rng.integers(0, 3, n), "b": rng.choice(["x", "y"], n), "c": rng.integers(0, 4, n),
            "d": rng.normal(size=n)}
    errors = rng.random(n) < 0.2
    min_count = 15
    pred = attributes.encode(meta, n, min_count)
    found = attributes.search(pred, errors, min_count, 3)
    got = {tuple(sorted(pred.words(c, v))): (s, e) for c, v, s, e in
           zip(found.columns, found.values, found.size, found.errors)}
    expected = {}
    for level in (1, 2, 3):
        for cols in itertools.combinations(range(len(pred.names)), level):
            for values in itertools.product(*[range(len(pred.labels[a])) for a in cols]):
                mask = np.all([pred.codes[a] == v for a, v in zip(cols, values)], axis=0)
                if mask.sum() >= min_count:
                    expected[tuple(sorted(pred.labels[a][v] for a, v in zip(cols, values)))] = \
                        (int(mask.sum()), int(errors[mask].sum()))
    assert got == expected


def test_numbers_are_binned_and_rare_values_left_out():
    n = 1000
    meta = {"age": np.arange(n) % 97 + 0.5, "site": np.where(np.arange(n) < 5, "rare", "common")}
    pred = attributes.encode(meta, n, 10)
    assert len(pred.labels[0]) == attributes.N_BINS and pred.labels[0][0].startswith("age < ")
    assert pred.labels[1] == ("site = common",) and (pred.codes[1, :5] == -1).all()
    with pytest.raises(ValueError, match=r"meta\['x'\]: got shape \(3,\)"):
        attributes.encode({"x": np.zeros(3)}, n, 10)


# ---------------------------------------------------------------------------------------------
# PCA and the mixture
# ---------------------------------------------------------------------------------------------
def test_principal_components_match_scikit_learn():
    x = np.random.default_rng(4).normal(size=(500, 12)) @ np.diag(np.arange(12, 0, -1.0))
    scores, components, _ = mixture.principal_components(x.astype(np.float32), 4)
    ref = PCA(4).fit(x)
    np.testing.assert_allclose(np.abs(components), np.abs(ref.components_), atol=1e-4)
    np.testing.assert_allclose(np.abs(scores), np.abs(ref.transform(x)), rtol=1e-4, atol=1e-3)


def test_mixture_without_labels_matches_scikit_learn_on_separated_blobs():
    rng = np.random.default_rng(5)
    centres = rng.normal(0, 8, size=(4, 3))
    truth = rng.integers(0, 4, 2000)
    z = centres[truth] + rng.normal(size=(2000, 3)) * [1.0, 0.5, 2.0]
    probs = np.eye(4)[truth] * 0.9 + 0.025  # predicts each blob's label: one confusion cell per blob
    mine = mixture.fit_mixture(z, truth, probs, 4, confusion_weight=0.0, min_rows=50)  # plain diagonal EM
    ref = GaussianMixture(4, covariance_type="diag", random_state=0).fit(z)
    pairing = [int(np.argmin(((ref.means_ - m) ** 2).sum(axis=1))) for m in mine.means]
    assert sorted(pairing) == [0, 1, 2, 3]
    np.testing.assert_allclose(mine.means, ref.means_[pairing], atol=0.05)
    regularised = ref.covariances_[pairing] - ref.reg_covar + mixture.VARIANCE_ADDED * z.var(axis=0)
    np.testing.assert_allclose(mine.variances, regularised, rtol=0.02)
    np.testing.assert_allclose(mine.weights, ref.weights_[pairing], atol=0.01)


# ---------------------------------------------------------------------------------------------
# find_slices: planted known answers and data with nothing planted
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def planted_runs():
    out = []
    for seed in SEEDS:
        d = planted_evaluation(3000, seed)
        out.append((d, find_slices(d["embeddings"], d["labels"], d["probs"], d["meta"], seed=seed)))
    return out


@pytest.mark.parametrize("name", ["region", "confusion", "conjunction"])
def test_every_planted_slice_is_recovered(planted_runs, name):
    scores = np.array([best_match(slices, d["truth"][name]) for d, slices in planted_runs])
    precision, recall = scores.T
    assert precision.min() >= 0.9 and recall.min() >= 0.8, scores
    assert precision.std() <= 0.05 and recall.std() <= 0.05, scores


def test_planted_slices_are_described_and_nothing_else_is_reported(planted_runs):
    for d, slices in planted_runs:
        assert len(slices) == 3  # the three planted slices, no parent, child or noise beside them
        words = {s.description for s in slices}
        assert "site = 3 and device = 2" in words
        assert "true 0, predicted 1" in words
        assert "mixed classes in one region of the embedding" in words
        for s in slices:
            assert s.summary.startswith(s.description) and "% error" in s.summary
            assert s.ci[0] <= s.error_rate <= s.ci[1] and s.p_value < 1e-6 and s.lift > 5
            assert s.errors == int((d["probs"].argmax(1) != d["labels"])[s.rows].sum())
            assert set(s.representatives) <= set(s.ids) and len(s.representatives) == 8


def test_nothing_planted_gives_no_slice_in_at_least_95_percent_of_seeds():
    reported = 0
    for seed in range(40):
        d = planted_evaluation(2000, 100 + seed, planted=False)
        reported += bool(find_slices(d["embeddings"], d["labels"], d["probs"], d["meta"], seed=seed))
    assert reported <= 2  # ≥ 38 of 40 clean


def test_a_parent_is_not_reported_beside_the_child_that_explains_it_and_vice_versa():
    rng = np.random.default_rng(6)
    n = 4000
    site, device, shift = rng.integers(0, 4, n), rng.integers(0, 4, n), rng.integers(0, 3, n)
    child = (site == 1) & (device == 2)  # fails; site = 1 alone only through it
    parent = shift == 2  # fails as a whole: none of its children should appear
    errors = rng.random(n) < np.where(child, 0.9, np.where(parent, 0.5, 0.05))
    labels, probs = two_class(errors)
    found = find_slices(None, labels, probs, {"site": site, "device": device, "shift": shift})
    words = [s.description.split(" (")[0] for s in found]
    assert sorted(words) == ["shift = 2", "site = 1 and device = 2"], words


def test_a_worse_child_inside_a_failing_parent_is_reported_with_it():
    rng = np.random.default_rng(7)
    n = 6000
    a, b = rng.integers(0, 3, n), rng.integers(0, 5, n)
    errors = rng.random(n) < np.where((a == 0) & (b == 1), 0.95, np.where(a == 0, 0.35, 0.05))
    labels, probs = two_class(errors)
    words = [s.description.split(" (")[0] for s in find_slices(None, labels, probs, {"a": a, "b": b})]
    assert sorted(words) == ["a = 0", "a = 0 and b = 1"], words


def test_torch_inputs_ids_and_class_names_are_used():
    d = planted_evaluation(3000, 0)
    ids = 10_000 + np.arange(3000)
    found = find_slices(torch.from_numpy(d["embeddings"]), torch.from_numpy(d["labels"]),
                        torch.from_numpy(d["probs"]), d["meta"], ids=ids, class_names=[f"c{i}" for i in range(10)])
    again = find_slices(d["embeddings"], d["labels"], d["probs"], d["meta"], ids=ids,
                        class_names=[f"c{i}" for i in range(10)])
    assert [s.to_dict() for s in found] == [s.to_dict() for s in again]  # deterministic
    confusion = next(s for s in found if "predicted" in s.description)
    assert confusion.description == "true c0, predicted c1"
    assert (confusion.ids == ids[confusion.rows]).all() and confusion.ids.min() >= 10_000


@pytest.mark.parametrize("kwargs, message", [
    (dict(embeddings=np.zeros((5, 2)), labels=np.zeros(4, int), probs=np.full((5, 2), 0.5)), "labels: got shape"),
    (dict(embeddings=np.zeros((4, 2)), labels=np.zeros(5, int), probs=np.full((5, 2), 0.5)), "embeddings: got shape"),
    (dict(embeddings=None, labels=np.zeros(5, int), probs=np.ones((5, 2))), "probs: expected rows of probabilities"),
    (dict(embeddings=None, labels=np.full(5, 3), probs=np.full((5, 2), 0.5)), r"labels: got values in \[3, 3\]"),
    (dict(embeddings=np.full((5, 2), np.nan), labels=np.zeros(5, int), probs=np.full((5, 2), 0.5)), "embeddings: expected finite"),
])
def test_bad_input_names_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        find_slices(**kwargs)


def test_errors_by_value_counts_every_value():
    errors = np.array([1, 1, 0, 0, 0, 1], bool)
    rows = errors_by_value({"site": np.array([1, 1, 1, 2, 2, 2])}, errors)
    assert rows == [("site = 1", 3, pytest.approx(2 / 3)), ("site = 2", 3, pytest.approx(1 / 3))]


def test_search_reports_what_it_examined():
    d = planted_evaluation(3000, 0, planted=False)
    result = search(d["embeddings"], d["labels"], d["probs"], d["meta"])
    assert result.slices == [] and result.examined > 100 and result.coords.shape == (3000, 2)


def test_metadata_encoded_once_gives_the_same_search_and_table():
    """The plugin encodes the validation metadata once for all evaluations; the results are those
    of encoding it at each, and metadata encoded for other rows or slice sizes is refused."""
    d = planted_evaluation(3000, 1)
    n = len(d["labels"])
    pred = attributes.encode(d["meta"], n, smallest_slice(n))
    a = search(d["embeddings"], d["labels"], d["probs"], d["meta"])
    b = search(d["embeddings"], d["labels"], d["probs"], pred)
    assert a.slices and [s.to_dict() for s in a.slices] == [s.to_dict() for s in b.slices]
    assert a.examined == b.examined and np.array_equal(a.coords, b.coords)
    with pytest.raises(ValueError, match="meta: encoded for 3000 rows and slices of 15, expected 3000 rows and "
                                         "slices of 30"):
        search(d["embeddings"], d["labels"], d["probs"], pred, min_size=30)
    errors = d["probs"].argmax(axis=1) != d["labels"]
    assert errors_by_value(attributes.encode(d["meta"], n, 1), errors) == errors_by_value(d["meta"], errors)
    with pytest.raises(ValueError, match="every value kept"):
        errors_by_value(pred, errors)


def test_the_median_of_the_mixtures_start_is_numpys():
    rng = np.random.default_rng(0)
    for n in range(1, 30):
        v = rng.normal(size=n) * 10.0 ** rng.uniform(-5, 5)
        assert mixture._median(v) == np.median(v)


# ---------------------------------------------------------------------------------------------
# Identity across evaluations
# ---------------------------------------------------------------------------------------------
def test_match_pairs_by_overlap_one_to_one():
    a, b, c = np.arange(0, 100), np.arange(200, 260), np.arange(40, 140)
    assert match([a, b], [np.arange(10, 100), np.arange(500, 510), np.arange(205, 260)]) == [0, None, 1]
    assert match([a], [a, c]) == [0, None]  # a continues once


def test_tracker_keeps_numbers_follows_members_and_survives_a_checkpoint(tmp_path):
    tracker = SliceTracker(n_slots=2)
    assert tracker.update(10, [np.arange(50), np.arange(100, 130)], ["x", "y"]) == [1, 2]
    assert tracker.update(20, [np.arange(100, 128), np.arange(5, 50)], ["y", "x"]) == [2, 1]
    assert tracker.update(30, [np.arange(300, 340)], ["z"]) == [3]
    assert tracker.slots == [3, 2]  # z took the line of the slice reported longest ago (x and y tie: first)
    ids = np.arange(400)[::-1]
    errors = np.zeros(400, bool)
    errors[ids < 25] = True
    rates = tracker.errors(ids, errors)
    assert rates[1] == (pytest.approx(20 / 45), 45) and rates[3] == (0.0, 40)
    torch.save(tracker.state_dict(), tmp_path / "t.pt")
    again = SliceTracker(2)
    again.load_state_dict(torch.load(tmp_path / "t.pt", weights_only=True))
    assert again.state_dict() == tracker.state_dict()


def test_error_change_orders_by_size_and_skips_missing():
    changes = error_change({1: 0.2, 2: 0.9, 3: 0.5}, {1: 0.8, 2: 0.85, 4: 0.1, 3: float("nan")})
    assert [(c.track, round(c.change, 2)) for c in changes] == [(1, 0.6), (2, -0.05)]
