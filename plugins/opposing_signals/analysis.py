"""Outliers with opposing signals (Rosenfeld & Risteski): which training samples pull the network in
opposite directions, over what, and did they move when the loss spiked? On plain arrays (numpy,
scipy; torch for the gradient products), usable from a notebook without the engine.

The method, on a window of per-sample losses recorded at consecutive steps:

1. **Candidates**: samples whose loss is unstable, by the paper's recipe (Σ|Δloss| over the window,
   each step's changes in units of that step's median, so the first descent or a catapult does not
   swamp the rest), kept where that is a robust outlier (``CANDIDATE_Z`` MADs above the median). On
   its own this is not enough: a hard sample swings with the edge-of-stability oscillation too.
2. **Groups**: candidates whose loss changes move together (average-linkage clusters of their
   Δloss traces: the sign structure of an oscillation), split again wherever the members pull in
   different directions (their per-sample gradients, bisected while the halves' mean gradients
   point apart).
3. **Pairs**: two groups whose mean gradients oppose, whose mean losses move in anti-phase, and
   whose members share a feature, an input or embedding dimension, that the stable rest of the
   data lacks (most members of each side far beyond the rest: further from its median than
   twice its 99th percentile, or its 1st). Gradient opposition and anti-phase alone are common at
   the edge of stability; the shared feature is what makes them *outliers with opposing signals*.
   Each side is then the members that have the feature, joined by other unstable samples that
   have it and move and pull with that side; given labels, a side holds none of the other side's
   main class. Members without the feature (dragged along) stay a group of their own, and groups
   without a partner are reported unpaired.

Per-sample gradients are those of the output layer, ``∂ℓᵢ/∂W = eᵢ ⊗ hᵢ`` with
``eᵢ = ∂ℓᵢ/∂logits`` and ``hᵢ`` the layer's input (with a 1 for the bias), averaged over a few
consecutive steps so that both phases of a period-2 oscillation count. They are kept in that
factored form: every inner product needed is ``(eᵢ·eⱼ)(hᵢ·hⱼ)``, so memory grows with classes plus
width, not their product.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

CANDIDATE_Z = 3.0  # robust z-score of Σ|Δloss| above which a sample is unstable
MAX_CANDIDATES = 512  # the most unstable samples grouped at once (the work grows with its square),
MAX_CANDIDATE_SHARE = 0.1  # and at most this share of them: outliers are few, noise is not
COMOVE_CORRELATION = 0.5  # average correlation of loss changes inside a group
ALIGNED_COSINE = 0.5  # a group is split while its halves' mean gradients have a cosine below this
OUTER_QUANTILE = 0.99  # "beyond the rest": further from the rest's median than FENCE times its
FENCE = 2.0  # 99th percentile (or its 1st); for a normal dimension 4.7 standard deviations


# ---------------------------------------------------------------------------------------------
# Loss histories
# ---------------------------------------------------------------------------------------------
def loss_changes(steps: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """Δloss between rows recorded at consecutive steps, (M, n); rows further apart (between two
    bursts of recording) give none, so a change always spans exactly one optimizer step."""
    steps = np.asarray(steps)
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 2 or len(steps) != len(losses):
        raise ValueError(f"losses: got shape {losses.shape} for {len(steps)} steps; expected (steps, samples)")
    consecutive = np.flatnonzero(np.diff(steps) == 1)
    return losses[consecutive + 1] - losses[consecutive]


def standardised(changes: np.ndarray) -> np.ndarray:
    """Each step's changes in units of that step's median absolute change across the samples, so
    that no phase of training (the first fast descent, a catapult where every loss jumps) outweighs
    the rest of the window."""
    scale = np.median(np.abs(changes), axis=1, keepdims=True)
    return changes / np.where(scale > 0, scale, 1.0)


def instability(changes: np.ndarray) -> np.ndarray:
    """Σ|Δloss| over the window, per sample (Rosenfeld & Risteski's selection score)."""
    return np.abs(changes).sum(axis=0)


def robust_z(scores: np.ndarray) -> np.ndarray:
    """(score − median) in units of 1.4826·MAD; all zeros where the scores do not vary."""
    med = np.median(scores)
    mad = 1.4826 * np.median(np.abs(scores - med))
    return (scores - med) / mad if mad > 0 else np.zeros_like(scores)


def unstable(scores: np.ndarray, z: float = CANDIDATE_Z, limit: int | None = None) -> np.ndarray:
    """Positions of the samples whose score is a robust outlier, the most unstable first: at most
    ``limit`` (default: ``MAX_CANDIDATE_SHARE`` of them, and no more than ``MAX_CANDIDATES``)."""
    if limit is None:
        limit = min(MAX_CANDIDATES, max(1, int(MAX_CANDIDATE_SHARE * len(scores))))
    zs = robust_z(scores)
    order = np.argsort(-zs, kind="stable")[:limit]
    return order[zs[order] > z]


# ---------------------------------------------------------------------------------------------
# Per-sample gradients of the output layer, factored
# ---------------------------------------------------------------------------------------------
@dataclass
class GradientSignals:
    """Output-layer gradients of each sample's loss at K consecutive steps: ``errors`` (K, n, C) is
    ∂ℓᵢ/∂logits, ``inputs`` (K, n, D) the output layer's input (a bias column is added here).
    Arrays or tensors; the products run in torch, in float64, on the thread count torch was given
    (numpy's BLAS threads stalled for milliseconds per product beside a training process)."""

    errors: torch.Tensor
    inputs: torch.Tensor

    def __post_init__(self):
        self.errors = torch.as_tensor(self.errors).detach().cpu().double()
        inputs = torch.as_tensor(self.inputs).detach().cpu().double()
        if self.errors.ndim != 3 or inputs.ndim != 3 or self.errors.shape[:2] != inputs.shape[:2]:
            raise ValueError(f"errors {tuple(self.errors.shape)} and inputs {tuple(inputs.shape)}: expected "
                             "(K, n, C) and (K, n, D) for the same K steps and n samples")
        self.inputs = torch.cat([inputs, torch.ones(*inputs.shape[:2], 1, dtype=inputs.dtype)], dim=2)

    def gram(self, idx: np.ndarray) -> np.ndarray:
        """Inner products of the step-averaged gradients of the samples ``idx``, (len, len)."""
        at = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        e, h = self.errors[:, at], self.inputs[:, at]
        k = len(e)
        out = sum((e[s] @ e[t].T) * (h[s] @ h[t].T) for s in range(k) for t in range(k)) / k ** 2
        return out.numpy()


def mean_cosine(gram: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Cosine between the mean gradients of the sets ``a`` and ``b`` (positions in ``gram``)."""
    den = math.sqrt(max(gram[np.ix_(a, a)].sum(), 0.0) * max(gram[np.ix_(b, b)].sum(), 0.0))
    return float(gram[np.ix_(a, b)].sum()) / den if den > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# Groups
# ---------------------------------------------------------------------------------------------
def correlations(traces: np.ndarray) -> np.ndarray:
    """Pearson correlations between the columns of ``traces`` (T, m), (m, m); 0 for a constant
    column (torch: one product, on the thread count torch was given)."""
    x = torch.as_tensor(np.asarray(traces, dtype=np.float64).T)
    x = x - x.mean(dim=1, keepdim=True)
    norm = x.norm(dim=1, keepdim=True)
    x = torch.where(norm > 0, x / norm.clamp_min(1e-300), 0.0)
    return (x @ x.T).clamp(-1, 1).numpy()


def comoving(changes: np.ndarray, min_correlation: float = COMOVE_CORRELATION) -> list[np.ndarray]:
    """Clusters of columns of ``changes`` whose traces correlate, on average, at least this much."""
    moving = np.flatnonzero(changes.std(axis=0) > 0)
    if len(moving) < 2:
        return [moving] if len(moving) else []
    tree = linkage(squareform(1 - correlations(changes[:, moving]), checks=False), "average")
    labels = fcluster(tree, 1 - min_correlation, "distance")
    return [moving[labels == c] for c in np.unique(labels)]


def split_by_direction(gram: np.ndarray, idx: np.ndarray, min_size: int,
                       aligned: float = ALIGNED_COSINE) -> list[np.ndarray]:
    """``idx`` bisected by gradient direction (average linkage on cosine distance) for as long as
    the two halves' mean gradients have a cosine below ``aligned``: members that move together but
    pull different ways are different groups."""
    if len(idx) < 2 * min_size:
        return [idx]
    sub = gram[np.ix_(idx, idx)]
    norm = np.sqrt(np.clip(np.diag(sub), 1e-300, None))
    distance = 1 - np.clip(sub / np.outer(norm, norm), -1, 1)
    halves = fcluster(linkage(squareform(distance, checks=False), "average"), 2, "maxclust")
    a, b = np.flatnonzero(halves == 1), np.flatnonzero(halves == 2)
    if len(a) == 0 or len(b) == 0 or mean_cosine(sub, a, b) >= aligned:
        return [idx]
    return [*split_by_direction(gram, idx[a], min_size, aligned),
            *split_by_direction(gram, idx[b], min_size, aligned)]


@dataclass(frozen=True)
class Feature:
    """One input or embedding dimension that sets samples apart from the rest of the data."""

    space: str  # "input" or "embedding"
    index: int  # flat index into that space
    smd: float  # standardised mean difference from the rest, in the rest's standard deviations
    share: float  # share of the members far beyond the rest (see FeatureSpace.beyond)


@dataclass
class Group:
    """Unstable samples that move together and pull the same way."""

    members: np.ndarray  # positions in the arrays given (sorted)
    instability: float  # members' mean Σ|Δloss| over the window, in units of each step's median
    swing: float  # Σ|Δ(group-mean loss)| over the window
    feature: Feature | None  # the dimension with the largest standardised mean difference
    losses: np.ndarray = field(repr=False)  # the members' mean loss at each recorded step
    changes: np.ndarray = field(repr=False)  # the members' mean standardised change, step by step

    @property
    def size(self) -> int:
        return len(self.members)


@dataclass
class Pair:
    """Two groups with opposing signals: gradients opposed, losses in anti-phase, a shared feature."""

    a: Group
    b: Group
    grad_cos: float  # cosine between the two groups' mean gradients
    loss_corr: float  # correlation of the two groups' mean loss changes
    feature: Feature  # shared: smd and share are the smaller of the two sides'

    @property
    def swing(self) -> float:
        return self.a.swing + self.b.swing


@dataclass
class Analysis:
    pairs: list[Pair]  # strongest swing first
    unpaired: list[Group]
    candidates: np.ndarray  # positions of the unstable samples
    scores: np.ndarray  # Σ|Δloss| of every sample


class FeatureSpace:
    """Where the stable rest of the data lies on each dimension of one feature space (inputs or
    embeddings), against which unstable groups are described."""

    def __init__(self, name: str, values: np.ndarray, rest: np.ndarray):
        self.name = name
        self.values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
        others = self.values[rest] if rest.any() else self.values
        self.mean = others.mean(axis=0)
        # a dimension the rest never varies on is measured against a hundredth of its overall spread
        self.std = np.maximum(others.std(axis=0), np.maximum(1e-2 * self.values.std(axis=0), 1e-12))
        low, median, high = np.quantile(others, (1 - OUTER_QUANTILE, 0.5, OUTER_QUANTILE), axis=0)
        self.high, self.low = median + FENCE * (high - median), median - FENCE * (median - low)

    def smd(self, members: np.ndarray) -> np.ndarray:
        return (self.values[members].mean(axis=0) - self.mean) / self.std

    def beyond(self, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(members, dims) masks: beyond the rest's upper fence, and beyond its lower one."""
        v = self.values[members]
        return v > self.high, v < self.low

    def distinguishing(self, members: np.ndarray) -> Feature:
        d = self.smd(members)
        j = int(np.argmax(np.abs(d)))
        above, below = self.beyond(members)
        return Feature(self.name, j, float(d[j]), float((above if d[j] > 0 else below)[:, j].mean()))

    def shared(self, a: np.ndarray, b: np.ndarray) -> Feature:
        """The dimension most members of both sides have beyond the rest, on the same side of it;
        its ``smd`` is the smaller of the two sides' (negative: the feature is a low value)."""
        (above_a, below_a), (above_b, below_b) = self.beyond(a), self.beyond(b)
        up = np.minimum(above_a.mean(axis=0), above_b.mean(axis=0))
        down = np.minimum(below_a.mean(axis=0), below_b.mean(axis=0))
        share = np.maximum(up, down)
        j = int(np.argmax(share))
        sign = 1 if up[j] >= down[j] else -1
        d = min(abs(self.smd(a)[j]), abs(self.smd(b)[j])) * sign
        return Feature(self.name, j, float(d), float(share[j]))

    def holds(self, members: np.ndarray, feature: Feature) -> np.ndarray:
        """Which members lie beyond the rest on the feature's dimension, on its side."""
        above, below = self.beyond(members)
        return (above if feature.smd > 0 else below)[:, feature.index]


def find_opposing_groups(steps: np.ndarray, losses: np.ndarray, signals: GradientSignals,
                         features: dict[str, np.ndarray], labels: np.ndarray | None = None, *, min_group: int = 5,
                         gradient_cosine: float = -0.5, loss_correlation: float = -0.5,
                         feature_share: float = 0.5) -> Analysis:
    """Pairs of opposing-signal groups, and unpaired unstable groups, among n samples (with their
    ``labels``, if given: a side then holds none of the other side's main class).

    ``steps`` (T,) and ``losses`` (T, n): per-sample losses at recorded steps (changes are taken
    only between consecutive steps). ``signals``: output-layer gradients of the same n samples.
    ``features``: name → (n, ...) arrays to look for the distinguishing feature in ("input",
    "embedding"). Two groups pair when their mean gradients have a cosine below
    ``gradient_cosine``, their mean loss changes a correlation below ``loss_correlation``, and at
    least ``feature_share`` of each side's members lie far beyond the stable samples (``FENCE``
    times as far from their median as their 99th percentile, or their 1st) on one common
    dimension. Each side of a pair is then the members that have that feature, joined by other
    unstable samples that have it and move and pull with that side (``recruit``); the rest of a
    paired group (samples dragged along without the feature) stays a group of its own.
    """
    losses = np.asarray(losses, dtype=np.float64)
    raw = loss_changes(steps, losses)
    changes = standardised(raw)
    n = changes.shape[1]
    for name, values in [*features.items(), *([("labels", labels)] if labels is not None else []),
                         ("signals", signals.errors[0])]:
        if len(values) != n:
            raise ValueError(f"{name}: got {len(values)} samples, expected {n} like the losses")
    scores = instability(changes)
    candidates = unstable(scores) if len(changes) >= 2 else np.zeros(0, dtype=np.int64)
    gram = signals.gram(candidates)
    parts = [part for cluster in comoving(changes[:, candidates])
             for part in split_by_direction(gram, cluster, min_group) if len(part) >= min_group]
    stable = np.ones(n, dtype=bool)
    stable[candidates] = False
    spaces = {name: FeatureSpace(name, values, stable) for name, values in features.items()}

    def group(part: np.ndarray) -> Group:
        members = np.sort(candidates[part])
        best = max((s.distinguishing(members) for s in spaces.values()), key=lambda f: abs(f.smd), default=None)
        return Group(members, float(scores[members].mean()), float(np.abs(raw[:, members].mean(axis=1)).sum()),
                     best, losses[:, members].mean(axis=1), changes[:, members].mean(axis=1))

    cosines, corr = between_groups(parts, gram, changes[:, candidates])
    found = []  # (gradient cosine, i, j, part of i, part of j, shared feature)
    for i, j in zip(*np.nonzero(np.triu((cosines < gradient_cosine) & (corr < loss_correlation), 1))):
        pi, pj = parts[i], parts[j]
        shared = max((s.shared(candidates[pi], candidates[pj]) for s in spaces.values()),
                     key=lambda f: f.share, default=None)
        if shared is not None and shared.share >= feature_share:
            space = spaces[shared.space]
            found.append((cosines[i, j], i, j, pi[space.holds(candidates[pi], shared)],
                          pj[space.holds(candidates[pj], shared)], shared))
    pairs, used, taken = [], set(), np.zeros(len(candidates), dtype=bool)
    for _, i, j, si, sj, shared in sorted(found, key=lambda f: f[0]):  # the most opposed first
        if i in used or j in used:
            continue
        si, sj = recruit(si[~taken[si]], sj[~taken[sj]], spaces[shared.space], shared, candidates, changes,
                         gram, taken)
        if labels is not None:
            si, sj = apart_by_label(si, sj, labels[candidates])
        if min(len(si), len(sj)) < min_group:
            continue
        used.update((i, j))
        taken[si] = taken[sj] = True
        a, b = group(si), group(sj)
        pairs.append(Pair(a, b, mean_cosine(gram, si, sj), float(correlations(np.c_[a.changes, b.changes])[0, 1]),
                          shared))
    pairs.sort(key=lambda p: -p.swing)
    rests = [part[~taken[part]] for part in parts]  # groups without the members pairs took
    unpaired = sorted((group(r) for r in rests if len(r) >= min_group), key=lambda g: -g.swing)
    return Analysis(pairs, unpaired, candidates, scores)


def between_groups(parts: list[np.ndarray], gram: np.ndarray,
                   changes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every two groups (positions in ``gram`` and columns of ``changes``): the cosine between
    their mean gradients and the correlation of their mean loss changes, (g, g) each."""
    member = torch.zeros(len(changes.T), len(parts), dtype=torch.float64)
    for k, part in enumerate(parts):
        member[torch.from_numpy(part), k] = 1.0 / len(part)
    block = (member.T @ torch.from_numpy(gram) @ member).numpy()
    norm = np.sqrt(np.clip(np.diag(block), 1e-300, None))
    return block / np.outer(norm, norm), correlations((torch.from_numpy(changes) @ member).numpy())


def apart_by_label(si: np.ndarray, sj: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sides without the members that carry the other side's main class (and not their own):
    the sides oppose because their labels differ, so such a member, however it moves, is neither."""
    main_i, main_j = (int(np.bincount(labels[side]).argmax()) for side in (si, sj))
    if main_i == main_j:
        return si, sj
    return si[labels[si] != main_j], sj[labels[sj] != main_i]


def recruit(si: np.ndarray, sj: np.ndarray, space: FeatureSpace, shared: Feature, candidates: np.ndarray,
            changes: np.ndarray, gram: np.ndarray, taken: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sides of a pair, joined by the other free candidates that have the shared feature, move
    with one side (loss changes correlated with its mean at least ``COMOVE_CORRELATION``, and more
    than with the other's) and pull its way (gradient cosine with its mean at least
    ``ALIGNED_COSINE``): members the clustering left in other groups or alone."""
    pool = np.setdiff1d(np.flatnonzero(~taken), np.r_[si, sj])
    pool = pool[space.holds(candidates[pool], shared)]
    if len(pool) == 0:
        return si, sj
    means = [changes[:, candidates[side]].mean(axis=1) for side in (si, sj)]
    corr = correlations(np.c_[means[0], means[1], changes[:, candidates[pool]]])[:2, 2:]
    own = np.sqrt(np.clip(np.diag(gram)[pool], 1e-300, None))
    out = []
    for k, side in enumerate((si, sj)):
        total = math.sqrt(max(gram[np.ix_(side, side)].sum(), 1e-300))
        pull = gram[np.ix_(pool, side)].sum(axis=1) / (own * total)  # cosine with the side's mean
        joins = (corr[k] >= COMOVE_CORRELATION) & (corr[k] > corr[1 - k]) & (pull >= ALIGNED_COSINE)
        out.append(np.sort(np.r_[side, pool[joins]]))
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------
# Describing and following pairs
# ---------------------------------------------------------------------------------------------
def feature_name(feature: Feature, input_shape: tuple) -> str:
    """A dimension as a person reads it: "input pixel (row 0, column 1)", "embedding unit 12"."""
    if feature.space != "input":
        return f"{feature.space} unit {feature.index}"
    shape = tuple(input_shape)
    if len(shape) == 3:
        c, r, col = np.unravel_index(feature.index, shape)
        where = f"row {r}, column {col}" if shape[0] == 1 else f"channel {c}, row {r}, column {col}"
        return f"input pixel ({where})"
    if len(shape) == 2:
        r, col = np.unravel_index(feature.index, shape)
        return f"input pixel (row {r}, column {col})"
    return f"input feature {feature.index}"


@dataclass(frozen=True)
class Move:
    """How far a pair's two group-mean losses moved at one step, from their median before it."""

    step: int  # the recorded step the change is read at (the nearest at or before the asked step)
    before: tuple[float, float]  # each side's median over the recorded steps before it
    at: tuple[float, float]  # each side's mean loss at the step

    @property
    def change(self) -> tuple[float, float]:
        return self.at[0] - self.before[0], self.at[1] - self.before[1]

    @property
    def size(self) -> float:
        """The larger of the two sides' absolute changes."""
        return max(abs(c) for c in self.change)


def move_at(steps, loss_a, loss_b, step: int, lookback: int = 50, tolerance: int = 1) -> Move | None:
    """A pair's move at ``step`` from its sides' mean losses at the recorded ``steps``: read at the
    last recorded step at or before ``step`` (at most ``tolerance`` steps back), against each side's
    median over up to ``lookback`` recorded steps before it. None without such steps."""
    steps = np.asarray(steps)
    i = int(np.searchsorted(steps, step, side="right")) - 1
    if i < 1 or step - steps[i] > tolerance:
        return None
    sides = np.c_[np.asarray(loss_a, dtype=np.float64), np.asarray(loss_b, dtype=np.float64)]
    base = np.median(sides[max(0, i - lookback):i], axis=0)
    return Move(int(steps[i]), (float(base[0]), float(base[1])), (float(sides[i, 0]), float(sides[i, 1])))
