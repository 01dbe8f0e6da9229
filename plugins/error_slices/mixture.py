"""Slices found in the embedding: an error-aware Gaussian mixture (Domino's model) fitted on one half
of the rows, whose regions are then tested on the other half.

The mixture (Eyuboglu et al. 2022, "Domino") models each row's PCA-reduced embedding z, its label
y and its predicted probabilities p̂ as drawn from one of K components:

    log P(i | s) = log N(z_i; μ_s, diag σ²_s) + w · log π_s[y_i] + w · Σ_c p̂_ic log τ_s[c]

so that components gather rows that sit together *and* share a label and a prediction: an error
slice ("true 2, predicted 3") gets a component of its own even where its embeddings lie close to
correctly predicted rows. Components start from the confusion matrix (each large cell (y, ŷ)
seeds one) and from dense groups of misclassified rows far from every cell (leader clustering),
so both a concentrated confusion and a region that fails across classes have a component from the
first iteration instead of waiting for a random start to wander there. The fit is deterministic.

A component is a candidate slice through *where it puts rows*, never through their errors: the
region of embedding space it wins (z alone), and that region within one class (z and y). The
predictions are left out of membership on purpose: a row's error is a function of its label and
prediction, so a membership that used both would select errors and make any test of the region's
error rate meaningless. Candidates are chosen on the fitting half only (components whose members
there fail more than the rest), and tested on the other half, so the test sees rows the selection
never saw: that is what keeps data without slices from yielding any. Membership by where rows sit
also keeps label noise out of every slice: a mislabelled row sits among the rows of its true class,
so noise spread evenly over the classes makes no region fail more than another.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

VARIANCE_ADDED = 1e-3  # times each dimension's overall variance, added to every component's (as sklearn's
# reg_covar): no component collapses on a point
SMOOTHING = 0.1  # pseudo-count of every class in a component's label and prediction distributions
TOLERANCE = 1e-4  # stop when the mean log-likelihood per row improves by less
MAX_STRAY_ERRORS = 4000  # misclassified rows outside the seeding cells weighed for seeds at most


def principal_components(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores (N, k), components (k, D), mean (D,)): the top-k principal directions of ``x``, from
    the covariance's eigenvectors; each sign fixed so its largest loading is positive, so the same
    data always give the same picture."""
    mean = x.mean(axis=0, dtype=np.float64)
    centred = x - mean.astype(x.dtype)
    cov = (centred.T @ centred).astype(np.float64) / max(len(x) - 1, 1)
    top = np.linalg.eigh(cov)[1][:, ::-1][:, :k].T.copy()
    top *= np.sign(top[np.arange(len(top)), np.abs(top).argmax(axis=1)])[:, None]
    return (centred @ top.T.astype(x.dtype)).astype(np.float64), top, mean


@dataclass
class Mixture:
    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, d)
    variances: np.ndarray  # (K, d)
    label_probs: np.ndarray  # (K, C) π
    pred_probs: np.ndarray  # (K, C) τ
    confusion_weight: float

    def log_density(self, z: np.ndarray) -> np.ndarray:
        """log w_s + log N(z; μ_s, σ²_s) for every row and component, (N, K)."""
        weights, offset = self._gaussian_terms()
        return np.hstack([z, z * z]) @ weights.T + offset

    def _gaussian_terms(self) -> tuple[np.ndarray, np.ndarray]:
        """(W (K, 2d), b (K,)) with log w_s + log N(z; μ_s, σ²_s) = [z, z²] · W_s + b_s: the
        quadratic expanded, so one product weighs every row against every component."""
        inv = 1.0 / self.variances
        offset = np.log(self.weights) - 0.5 * ((self.means ** 2 * inv).sum(axis=1) + np.log(self.variances).sum(axis=1)
                                               + self.means.shape[1] * np.log(2 * np.pi))
        return np.hstack([self.means * inv, -0.5 * inv]), offset

    def joint_terms(self) -> tuple[np.ndarray, np.ndarray]:
        """(W (K, 2d + 2C), b) with log P(i, s) = [z, z², onehot(y), p̂]_i · W_s + b_s (the
        module's model): the E-step is one matrix product."""
        gaussian, offset = self._gaussian_terms()
        w = self.confusion_weight
        return np.hstack([gaussian, w * np.log(self.label_probs), w * np.log(self.pred_probs)]), offset

    def region(self, z: np.ndarray) -> np.ndarray:
        """The component whose region each row's embedding falls in."""
        return self.log_density(z).argmax(axis=1)


def _start(z: np.ndarray, labels: np.ndarray, predicted: np.ndarray, n_classes: int, k: int, min_rows: int
           ) -> np.ndarray:
    """Initial component of each row, at most ``k``. Confusion cells (y, ŷ) of at least ``min_rows``
    rows seed one component each, largest first. Then misclassified rows that no cell explains
    (farther from every cell's centre than λ, the 99.9 % point of χ²_d times the cells' typical
    variance) seed one component per dense group: the row with the most such errors within λ of it,
    while it has ``min_rows``, takes them as its group, and so on (leader clustering with a minimum
    density). So a region where the model fails across many cells gets one start of its own, and
    errors scattered inside the cells or alone get none. The other rows join the nearest centre."""
    cell = labels * n_classes + predicted
    sizes = np.bincount(cell, minlength=n_classes * n_classes)
    cells = [c for c in np.argsort(-sizes, kind="stable")[:k] if sizes[c] >= min_rows]
    group_of = np.full(n_classes * n_classes, -1)
    group_of[cells] = np.arange(len(cells))
    start = group_of[cell]
    if cells:
        onehot = (start[:, None] == np.arange(len(cells))).astype(z.dtype)
        counts = onehot.sum(axis=0)[:, None]
        means = onehot.T @ z / counts
        spread = _median((onehot.T @ (z * z) / counts - means ** 2).mean(axis=1))
        centres = list(means)
    else:
        centres, spread = [], z.var(axis=0).mean()
    radius2 = special.chdtri(z.shape[1], 0.001) * spread  # the 99.9 % point of χ²_d, scaled
    stray = z[(labels != predicted) & (start < 0)][:MAX_STRAY_ERRORS]
    if centres and len(stray):
        stray = stray[_sq_dist(stray, np.array(centres)).min(axis=1) > radius2]
    near = _sq_dist(stray, stray) <= radius2
    free = np.ones(len(stray), bool)
    while len(centres) < k and free.any():
        density = (near & free).sum(axis=1) * free
        leader = int(density.argmax())
        if density[leader] < min_rows:
            break
        group = near[leader] & free
        centres.append(stray[group].mean(axis=0))
        free &= ~group
    if not centres:
        return np.zeros(len(z), np.intp)
    unassigned = start < 0
    start[unassigned] = _sq_dist(z[unassigned], np.array(centres)).argmin(axis=1)
    return start


def _median(v: np.ndarray) -> float:
    """``np.median`` of a short finite vector, bit for bit, without its general machinery (a third
    of the start's time at each evaluation of a training run)."""
    s = np.sort(v)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * a).sum(axis=1)[:, None] - 2 * a @ b.T + (b * b).sum(axis=1)[None]


def fit_mixture(z: np.ndarray, labels: np.ndarray, probs: np.ndarray, n_components: int,
                confusion_weight: float, min_rows: int = 1, max_iter: int = 100) -> Mixture:
    """EM for the error-aware mixture, started from the confusion matrix (see the module's text).

    ``min_rows`` is the fewest rows a component may hold: while any holds fewer, the smallest is
    dropped and its rows go to their next best. Too small to be a slice, such components would only
    split the regions that could be one. A confusion cell (or a cluster of errors) needs twice as
    many rows to seed a component."""
    n, d = z.shape
    n_classes = probs.shape[1]
    onehot = np.zeros((n, n_classes))
    onehot[np.arange(n), labels] = 1.0
    rows = np.hstack([z, z * z, onehot, probs])  # all the M-step sums and the E-step weighs, per row
    added = VARIANCE_ADDED * z.var(axis=0) + 1e-12
    resp = np.zeros((n, n_components))
    start = _start(z, labels, probs.argmax(axis=1), n_classes, n_components, 2 * min_rows)
    resp[np.arange(n), start] = 1.0
    resp = resp[:, resp.sum(axis=0) > 0]
    previous = -np.inf
    for _ in range(max_iter):
        weights, offset = _m_step(rows, d, resp, added, confusion_weight).joint_terms()
        joint = rows @ weights.T + offset
        top = joint.max(axis=1, keepdims=True)
        resp = np.exp(joint - top)
        norm = resp.sum(axis=1, keepdims=True)
        resp /= norm
        total = (top + np.log(norm)).ravel()
        mass = resp.sum(axis=0)
        if mass.min() < min_rows and len(mass) > 1:
            resp = np.delete(resp, mass.argmin(), axis=1)
            resp /= resp.sum(axis=1, keepdims=True)
            previous = -np.inf
            continue
        score = total.mean()
        if score - previous < TOLERANCE * abs(score):
            break
        previous = score
    return _m_step(rows, d, resp, added, confusion_weight)


def _m_step(rows: np.ndarray, d: int, resp: np.ndarray, added: np.ndarray, confusion_weight: float) -> Mixture:
    """The mixture that maximises the expected likelihood under ``resp``, from one product with
    ``rows`` = [z, z², onehot(y), p̂]."""
    mass = resp.sum(axis=0)
    sums = resp.T @ rows
    means = sums[:, :d] / mass[:, None]
    variances = np.maximum(sums[:, d:2 * d] / mass[:, None] - means ** 2, 0) + added
    c = (rows.shape[1] - 2 * d) // 2
    smoothed = (sums[:, 2 * d:] + SMOOTHING) / (mass[:, None] + c * SMOOTHING)
    return Mixture(mass / mass.sum(), means, variances, smoothed[:, :c], smoothed[:, c:], confusion_weight)


def region_candidates(mix: Mixture, z: np.ndarray, labels: np.ndarray, errors: np.ndarray,
                      fit_rows: np.ndarray, min_count: int) -> list[np.ndarray]:
    """Every component's region, and its part in each class, as boolean masks over all rows: those
    that hold ``min_count`` rows in all and whose rows in ``fit_rows`` (the half the mixture saw)
    fail more often than the rest of that half. Identical candidates are kept once."""
    region = mix.region(z)
    k, c = len(mix.weights), int(labels.max()) + 1
    in_fit = np.zeros(len(z), bool)
    in_fit[fit_rows] = True
    fit_rate = errors[in_fit].mean()
    # sizes and fit-half error counts of every region (column 0) and region-and-class (1 + class)
    code = region * (c + 1) + 1 + labels
    shape = (k, c + 1)
    size = np.bincount(code, minlength=k * (c + 1)).reshape(shape)
    fit_size = np.bincount(code[in_fit], minlength=k * (c + 1)).reshape(shape)
    fit_err = np.bincount(code[in_fit], weights=errors[in_fit], minlength=k * (c + 1)).reshape(shape)
    size[:, 0], fit_size[:, 0], fit_err[:, 0] = size.sum(axis=1), fit_size.sum(axis=1), fit_err.sum(axis=1)
    keep = (size >= min_count) & (fit_size > 0) & (fit_err > fit_rate * fit_size)
    keep[:, 1:] &= size[:, 1:] < size[:, :1]  # a region all of one class is kept once, as the region
    masks = []
    for s, j in zip(*np.nonzero(keep)):
        masks.append(region == s if j == 0 else (region == s) & (labels == j - 1))
    return masks
