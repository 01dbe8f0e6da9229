"""Known answers for plugins/opposing_signals/analysis.py on synthetic histories with planted
structure: a pair of opposing groups is found with its shared feature, an equally unstable control
that swings with one side is not, and loss swings or anti-phase alone never make a pair. The
factored per-sample gradients are checked against explicit per-sample backward passes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from plugins.opposing_signals import analysis as A

N, T, C, D, X = 600, 64, 4, 6, 12
A_IDS, B_IDS = np.arange(0, 12), np.arange(12, 24)
CONTROL, FOLLOWERS = np.arange(24, 48), np.arange(48, 56)
FEATURE = 5  # the input dimension A and B share


def planted(seed=0, shared_feature=True, b_opposes=True, followers=False):
    """(steps, losses, signals, features): a period-2 oscillation s_t in which A's and B's losses
    swing in anti-phase; the control swings in phase with A, as strongly, but pulls another way;
    followers (optional) swing and pull with B but lack the feature."""
    rng = np.random.default_rng(seed)
    steps = np.arange(101, 101 + T)
    s = (-1.0) ** np.arange(T) * np.linspace(0.5, 1.5, T)
    losses = 0.3 + 0.01 * rng.normal(size=(T, N))
    losses[:, A_IDS] += 0.2 * s[:, None] * rng.uniform(0.8, 1.2, len(A_IDS))
    losses[:, B_IDS] -= 0.2 * s[:, None] * rng.uniform(0.8, 1.2, len(B_IDS))
    losses[:, CONTROL] += 0.2 * s[:, None] * rng.uniform(0.8, 1.2, len(CONTROL))
    u, w, v = np.array([1.0, -1, 0, 0]), np.array([0.0, 0, 1, 0]), rng.uniform(0.5, 1.0, D)
    errors = 0.1 * rng.normal(size=(2, N, C))
    inputs = rng.uniform(0, 1, size=(2, N, D))
    errors[:, A_IDS] += u
    errors[:, B_IDS] += -u if b_opposes else u
    errors[:, CONTROL] += w
    inputs[:, A_IDS] = inputs[:, B_IDS] = v + 0.05 * rng.normal(size=(2, len(A_IDS), D))
    x = rng.normal(size=(N, X))
    if shared_feature:
        x[A_IDS, FEATURE] += 10.0
        x[B_IDS, FEATURE] += 10.0
    if followers:
        losses[:, FOLLOWERS] -= 0.2 * s[:, None]
        errors[:, FOLLOWERS] -= u
        inputs[:, FOLLOWERS] = v
    return steps, losses, A.GradientSignals(errors, inputs), {"input": x}


def ids(group):
    return set(group.members.tolist())


def test_the_planted_pair_is_found_with_its_feature_and_the_control_is_left_out():
    result = A.find_opposing_groups(*planted())
    assert len(result.pairs) == 1
    p = result.pairs[0]
    assert {frozenset(ids(p.a)), frozenset(ids(p.b))} == {frozenset(A_IDS), frozenset(B_IDS)}
    assert p.grad_cos < -0.9 and p.loss_corr < -0.9
    assert (p.feature.space, p.feature.index, p.feature.share) == ("input", FEATURE, 1.0)
    assert p.feature.smd > 5
    assert [ids(g) for g in result.unpaired] == [set(CONTROL)]  # as unstable as A, and in phase with it
    assert set(CONTROL) | set(A_IDS) | set(B_IDS) <= set(result.candidates.tolist())


def test_anti_phase_and_opposing_gradients_without_a_shared_feature_make_no_pair():
    result = A.find_opposing_groups(*planted(shared_feature=False))
    assert result.pairs == []
    assert {frozenset(ids(g)) for g in result.unpaired} == {frozenset(A_IDS), frozenset(B_IDS), frozenset(CONTROL)}


def test_anti_phase_with_a_shared_feature_but_aligned_gradients_makes_no_pair():
    result = A.find_opposing_groups(*planted(b_opposes=False))
    assert result.pairs == []


def test_samples_dragged_along_without_the_feature_are_not_part_of_the_pair():
    result = A.find_opposing_groups(*planted(followers=True))
    (p,) = result.pairs
    assert {frozenset(ids(p.a)), frozenset(ids(p.b))} == {frozenset(A_IDS), frozenset(B_IDS)}
    assert set(FOLLOWERS) in [ids(g) for g in result.unpaired]


def test_a_catapult_that_moves_every_loss_does_not_swamp_the_window(monkeypatch):
    steps, losses, signals, features = planted()
    losses[30:] += np.random.default_rng(7).uniform(0, 30, N)  # one step where every loss jumps, by up to 100×
    (p,) = A.find_opposing_groups(steps, losses, signals, features).pairs
    assert {frozenset(ids(p.a)), frozenset(ids(p.b))} == {frozenset(A_IDS), frozenset(B_IDS)}
    monkeypatch.setattr(A, "standardised", lambda changes: changes)  # unscaled, the jump is all it sees
    assert not A.find_opposing_groups(steps, losses, signals, features).pairs


def test_with_labels_a_side_holds_none_of_the_other_sides_class():
    steps, losses, signals, features = planted()
    labels = np.full(N, 9)
    labels[A_IDS], labels[B_IDS] = 0, 1
    labels[A_IDS[:2]] = 1  # two members of A carry B's label, yet move and pull with A
    (p,) = A.find_opposing_groups(steps, losses, signals, features, labels).pairs
    assert {frozenset(ids(p.a)), frozenset(ids(p.b))} == {frozenset(A_IDS[2:]), frozenset(B_IDS)}
    (p,) = A.find_opposing_groups(steps, losses, signals, features).pairs  # without labels they stay
    assert {frozenset(ids(p.a)), frozenset(ids(p.b))} == {frozenset(A_IDS), frozenset(B_IDS)}


def test_recruit_adds_free_feature_holders_that_move_and_pull_with_a_side():
    steps, losses, signals, features = planted()
    changes = A.standardised(A.loss_changes(steps, losses))
    everyone = np.arange(N)
    stable = np.ones(N, dtype=bool)
    stable[np.r_[A_IDS, B_IDS, CONTROL]] = False
    space = A.FeatureSpace("input", features["input"], stable)
    shared = space.shared(A_IDS, B_IDS)
    gram = signals.gram(everyone)
    si, sj = A.recruit(A_IDS[:6], B_IDS, space, shared, everyone, changes, gram, np.zeros(N, dtype=bool))
    assert si.tolist() == A_IDS.tolist() and sj.tolist() == B_IDS.tolist()  # A's other six come back
    features["input"][A_IDS[6:], FEATURE] -= 10.0  # without the feature they stay out
    space = A.FeatureSpace("input", features["input"], stable)
    si, _ = A.recruit(A_IDS[:6], B_IDS, space, shared, everyone, changes, gram, np.zeros(N, dtype=bool))
    assert si.tolist() == A_IDS[:6].tolist()
    # the control moves with A and, given the feature, would still not pull A's way
    features["input"][CONTROL, FEATURE] += 10.0
    space = A.FeatureSpace("input", features["input"], stable)
    si, _ = A.recruit(A_IDS[:6], B_IDS, space, shared, everyone, changes, gram, np.zeros(N, dtype=bool))
    assert not set(si.tolist()) & set(CONTROL.tolist())


def test_each_group_reports_the_dimension_that_sets_it_apart():
    steps, losses, signals, features = planted()
    features["input"][CONTROL, 2] -= 8.0  # the control has a feature of its own, a low value
    result = A.find_opposing_groups(steps, losses, signals, features)
    (control,) = result.unpaired
    assert (control.feature.index, control.feature.smd < -5, control.feature.share) == (2, True, 1.0)
    assert result.pairs[0].a.feature.index == FEATURE


def test_a_stricter_threshold_rejects_what_a_looser_one_accepts():
    args = planted()
    assert A.find_opposing_groups(*args, feature_share=1.0).pairs
    features = args[3]
    features["input"][A_IDS[:4], FEATURE] -= 10.0  # a third of A now lacks the feature
    assert A.find_opposing_groups(*args, feature_share=0.5).pairs
    assert not A.find_opposing_groups(*args, feature_share=0.8).pairs
    assert not A.find_opposing_groups(*args, gradient_cosine=-1.0).pairs


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------
def test_inputs_of_different_lengths_are_refused_by_name():
    steps, losses, signals, features = planted()
    with pytest.raises(ValueError, match=f"input: got 10 samples, expected {N}"):
        A.find_opposing_groups(steps, losses, signals, {"input": features["input"][:10]})
    with pytest.raises(ValueError, match="labels: got 3 samples"):
        A.find_opposing_groups(steps, losses, signals, features, np.zeros(3, dtype=int))


def test_loss_changes_span_exactly_one_step():
    steps = np.array([5, 6, 7, 20, 21])
    losses = np.arange(10.0).reshape(5, 2) ** 2
    changes = A.loss_changes(steps, losses)
    np.testing.assert_array_equal(changes, [losses[1] - losses[0], losses[2] - losses[1], losses[4] - losses[3]])
    with pytest.raises(ValueError, match="expected \\(steps, samples\\)"):
        A.loss_changes(steps, losses[:3])


def test_unstable_takes_robust_outliers_most_unstable_first():
    scores = np.r_[np.random.default_rng(0).uniform(0.9, 1.1, 500), [5.0, 3.0, 9.0]]
    np.testing.assert_array_equal(A.unstable(scores), [502, 500, 501])
    np.testing.assert_array_equal(A.unstable(scores, limit=2), [502, 500])
    assert len(A.unstable(np.ones(10))) == 0


def test_factored_gradients_match_per_sample_gradients_from_autograd():
    """∂ℓᵢ/∂(W, b) of an output layer at two steps, averaged: the Gram of the factored form equals
    the Gram of explicit per-sample gradients, one backward pass per sample and step."""
    torch.manual_seed(0)
    n, k = 40, 2
    heads = [torch.nn.Linear(D, C).double() for _ in range(k)]
    hs = [torch.randn(n, D, dtype=torch.float64) for _ in range(k)]
    y = torch.randint(0, C, (n,))
    grads, errors = [], []
    for head, h in zip(heads, hs):
        per = []
        for i in range(n):
            gw, gb = torch.autograd.grad(torch.nn.functional.cross_entropy(head(h[i:i + 1]), y[i:i + 1]),
                                         (head.weight, head.bias))
            per.append(torch.cat([gw.reshape(-1), gb]))
        grads.append(torch.stack(per))
        logits = head(h).detach().requires_grad_(True)
        (e,) = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, y, reduction="sum"), logits)
        errors.append(e)
    mean = sum(grads) / k
    signals = A.GradientSignals(torch.stack(errors).numpy(), torch.stack(hs).numpy())
    idx = np.arange(5, 35)
    np.testing.assert_allclose(signals.gram(idx), (mean[idx] @ mean[idx].T).numpy(), rtol=1e-10, atol=1e-12)
    a, b = np.arange(0, 10), np.arange(10, 30)
    ma, mb = mean[idx][a].mean(0), mean[idx][b].mean(0)
    expected = float(ma @ mb / (ma.norm() * mb.norm()))
    assert A.mean_cosine(signals.gram(idx), a, b) == pytest.approx(expected, abs=1e-12)


def test_comoving_clusters_follow_the_sign_structure():
    rng = np.random.default_rng(1)
    s = (-1.0) ** np.arange(50)
    changes = np.c_[s[:, None] + 0.1 * rng.normal(size=(50, 6)), -s[:, None] + 0.1 * rng.normal(size=(50, 5)),
                    rng.normal(size=(50, 3)), np.zeros((50, 1))]
    clusters = sorted(A.comoving(changes), key=len, reverse=True)
    assert [c.tolist() for c in clusters[:2]] == [list(range(6)), list(range(6, 11))]
    assert 14 not in np.concatenate(clusters)  # a sample whose loss never moved joins nothing


def test_split_by_direction_separates_samples_that_pull_different_ways():
    rng = np.random.default_rng(2)
    g = np.r_[np.tile([1.0, 0, 0], (8, 1)), np.tile([0, 1.0, 0], (8, 1))] + 0.1 * rng.normal(size=(16, 3))
    parts = A.split_by_direction(g @ g.T, np.arange(16), min_size=3)
    assert sorted(p.tolist() for p in parts) == [list(range(8)), list(range(8, 16))]
    g2 = np.tile([1.0, 0, 0], (16, 1)) + 0.3 * rng.normal(size=(16, 3))  # one direction, noisy
    assert len(A.split_by_direction(g2 @ g2.T, np.arange(16), min_size=3)) == 1


def test_feature_names_read_like_the_data():
    f = A.Feature("input", 9, 3.0, 1.0)
    assert A.feature_name(f, (1, 8, 8)) == "input pixel (row 1, column 1)"
    assert A.feature_name(f, (3, 2, 4)) == "input pixel (channel 1, row 0, column 1)"
    assert A.feature_name(f, (4, 4)) == "input pixel (row 2, column 1)"
    assert A.feature_name(f, (20,)) == "input feature 9"
    assert A.feature_name(A.Feature("embedding", 3, 2.0, 0.7), (20,)) == "embedding unit 3"


def test_move_at_measures_each_side_against_its_median_before_the_step():
    steps = np.arange(101, 201)
    a, b = np.full(100, 0.2), np.full(100, 0.3)
    a[::2] = 0.25  # an oscillation: the median sits between its two levels
    a[60], b[60] = 0.9, 0.1  # the pair moves at step 161
    move = A.move_at(steps, a, b, 161)
    assert move.step == 161 and move.before == pytest.approx((0.225, 0.3))
    assert move.change == pytest.approx((0.675, -0.2)) and move.size == pytest.approx(0.675)
    assert A.move_at(steps, a, b, 161, lookback=2).before == pytest.approx((0.225, 0.3))
    assert A.move_at(steps[::3], a[::3], b[::3], 162).step == 161  # the nearest recorded step before
    assert A.move_at(steps, a, b, 500) is None and A.move_at(steps, a, b, 101) is None
