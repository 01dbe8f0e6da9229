"""Where, coherently, does a classifier fail, and how would one describe that subset?

``find_slices(embeddings, labels, probs, meta)`` returns the significant error slices, best first,
or an empty list when nothing is significant. Two searches feed one test:

- **embedding path** (``mixture``): an error-aware Gaussian mixture over PCA-reduced embeddings,
  labels and predictions (Domino's model) is fitted on a random half of the rows; the regions of
  embedding space its components win, whole and within each class, are the candidates, chosen on
  that half and tested on the other. A split rather than a permutation correction: a mixture fit
  examines a continuum of regions that no count could honestly correct for, while a test on rows
  the fit never saw is exact whatever the fit did, and costs one fit instead of hundreds.
- **attribute path** (``attributes``), when metadata columns exist: every conjunction of up to three
  predicates ``column = value`` (numbers cut into quantile bins) with enough support, counted
  exhaustively and tested on all rows.

Every candidate gets a one-sided Fisher exact test against the rest of the rows it is tested on,
and Holm's correction at ``alpha`` runs over *all* candidates of both paths together, so the chance
of reporting any slice where there is none is at most ``alpha``. A slice is not reported separately
when other reported slices explain it: a parent ``site = 4`` whose excess error lies all in its
child ``site = 4 and device = 1``, a child no worse than its parent, or an embedding region that
repeats a metadata slice (see ``_explains``). Reported slices are ranked by how much worse than the
rest they surely are: the lower end of their error rate's 95 % interval minus the rest's error rate.

numpy and scipy only (torch tensors are taken too): usable from a notebook with no engine, and quick
to start in the child process the plugin searches in (``worker``).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

from . import attributes, mixture
from .stats import excess_deviance, fisher_greater, holm, might_reach, wilson_interval

PURE_CLASS = 0.9  # a slice is "true k" when this share of its rows has label k
CONFUSION_SHARE = 0.5  # ... and "predicted j" when this share of its errors was predicted j
ENRICHED_SHARE, ENRICHED_LIFT = 0.5, 2.0  # a predicate describes a slice holding it this often and this much more
MAX_FIT_ROWS = 20_000  # rows the mixture is fitted on at most: enough for slices of 1 % support
MAX_KEPT_CHECKED = 200  # significant candidates weighed for redundancy, strongest first (a bound on the cost)


@dataclass(frozen=True)
class Slice:
    """One error slice: who is in it, how badly it fails, how sure that is, and what it is."""

    ids: np.ndarray  # member ids (``ids`` given to find_slices, else row numbers)
    rows: np.ndarray  # member row numbers in the inputs
    size: int
    errors: int
    error_rate: float
    ci: tuple[float, float]  # Wilson 95 % interval of error_rate
    rest_error_rate: float  # error rate of every row outside the slice
    overall_error_rate: float
    p_value: float  # one-sided Fisher exact test against the rest (on held-out rows for the embedding path)
    source: str  # "metadata" or "embedding"
    predicates: tuple[str, ...]  # the conjunction, for a metadata slice
    confusion: tuple[tuple[str, str, int], ...]  # (true, predicted, count), most common among its errors
    enrichment: tuple[tuple[str, float, float], ...]  # (predicate, share in slice, share overall)
    representatives: np.ndarray  # ids of the members that show it best
    description: str

    @property
    def lift(self) -> float:
        """How many times the overall error rate the slice fails at."""
        return self.error_rate / self.overall_error_rate if self.overall_error_rate > 0 else math.inf

    @property
    def summary(self) -> str:
        return f"{self.description}: {percent(self.error_rate)} error, {percent(self.overall_error_rate)} overall"

    def to_dict(self) -> dict:
        """Plain JSON types only."""
        return {"ids": self.ids.tolist(), "description": self.description, "summary": self.summary,
                "source": self.source, "size": self.size, "errors": self.errors,
                "error_rate": self.error_rate, "ci": list(self.ci), "rest_error_rate": self.rest_error_rate,
                "overall_error_rate": self.overall_error_rate, "lift": self.lift, "p_value": self.p_value,
                "predicates": list(self.predicates),
                "confusion": [list(c) for c in self.confusion],
                "enrichment": [list(e) for e in self.enrichment],
                "representatives": self.representatives.tolist()}


def percent(x: float) -> str:
    """0.923 -> "92%"; small shares keep a decimal so they never read as 0%."""
    return f"{stated_percent(x):g}%"


def stated_percent(x: float) -> float:
    """The share in percent as ``percent`` prints it: a finding's value must be the number its
    sentence states."""
    v = 100 * x
    return round(v, 1) if 0 < v < 9.95 else float(round(v))


# ---------------------------------------------------------------------------------------------
# Input checks: each error names the argument, what it got and what was expected
# ---------------------------------------------------------------------------------------------
def _array(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, on any device
        x = x.detach().float().cpu().numpy() if x.dtype.is_floating_point else x.detach().cpu().numpy()
    return np.asarray(x)


def _checked(embeddings, labels, probs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings, labels, probs) as arrays; embeddings (N, 0) when not given."""
    y, p = _array(labels, "labels"), _array(probs, "probs")
    if p.ndim != 2 or len(p) < 2 or p.shape[1] < 2:
        raise ValueError(f"probs: got shape {p.shape}, expected (N, C) with N >= 2 rows and C >= 2 classes")
    n = len(p)
    z = np.zeros((n, 0), np.float32) if embeddings is None else _array(embeddings, "embeddings")
    if z.ndim != 2 or len(z) != n:
        raise ValueError(f"embeddings: got shape {z.shape}, expected ({n}, D), one row per row of probs")
    if y.shape != (n,) or y.dtype.kind not in "iu":
        raise ValueError(f"labels: got shape {y.shape} and dtype {y.dtype}, expected ({n},) integers")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"labels: got values in [{y.min()}, {y.max()}], expected classes in [0, {p.shape[1] - 1}]")
    for name, a in (("embeddings", z), ("probs", p)):
        if a.dtype.kind not in "fiu" or not np.isfinite(a).all():
            raise ValueError(f"{name}: expected finite real numbers")
    if p.min() < 0 or abs(p.sum(axis=1) - 1).max() > 1e-3:
        raise ValueError("probs: expected rows of probabilities summing to 1 (apply a softmax to logits)")
    return z.astype(np.float32 if z.dtype.itemsize <= 4 else np.float64), y.astype(np.intp), p.astype(np.float64)


# ---------------------------------------------------------------------------------------------
# The search
# ---------------------------------------------------------------------------------------------
@dataclass
class _Candidate:
    """A candidate slice once it passed the test: its members and where it came from."""

    mask: np.ndarray
    p_value: float
    source: str
    predicates: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Tested:
    """One path's candidates, as counts on the rows each is tested on, and a way to get each one's
    members (built only for the few that turn out significant)."""

    size: np.ndarray
    errors: np.ndarray
    total: int
    total_errors: int
    source: str
    members: Callable[[int], np.ndarray]
    words: Callable[[int], tuple[str, ...]] = lambda i: ()

    def might_reach(self, level: float) -> np.ndarray:
        return might_reach(self.errors, self.size, self.total_errors, self.total, level)

    def p_values(self, level: float, sure_below: float) -> np.ndarray:
        return fisher_greater(self.errors, self.size, self.total_errors, self.total, level=level,
                              sure_below=sure_below)

    def exact_p(self, rows: np.ndarray) -> np.ndarray:
        return fisher_greater(self.errors[rows], self.size[rows], self.total_errors, self.total)


@dataclass(frozen=True)
class SliceSearch:
    """What a search found, how many candidates it examined (and corrected for), and each row's
    place on the first two principal axes of the embedding (to draw the slices on)."""

    slices: list[Slice]
    examined: int
    coords: np.ndarray  # (N, 2)


def find_slices(embeddings, labels, probs, meta: dict | None = None, **settings) -> list[Slice]:
    """Significant error slices, best first; ``[]`` when none is. The settings are ``search``'s."""
    return search(embeddings, labels, probs, meta, **settings).slices


def smallest_slice(n: int, min_size: int = 10, min_support: float = 0.005) -> int:
    """The fewest rows a slice of ``n`` rows may have: ``min_size``, or ``min_support`` of them."""
    return max(int(min_size), math.ceil(min_support * n))


def search(embeddings, labels, probs, meta: dict | attributes.Predicates | None = None, *, ids=None,
           class_names=None,
           alpha: float = 0.01, min_support: float = 0.005, min_size: int = 10, max_predicates: int = 3,
           n_components: int = 24, n_pca: int = 16, confusion_weight: float = 1.0,
           max_slices: int = 10, n_representatives: int = 8, seed: int = 0) -> SliceSearch:
    """The significant error slices, best first, with what the search examined.

    ``embeddings`` (N, D), ``labels`` (N,) and ``probs`` (N, C) are one evaluation's penultimate
    features, true classes and predicted probabilities; ``meta`` maps column names to (N,) columns,
    or is them encoded (``attributes.encode(meta, N, smallest_slice(N, min_size, min_support))``: a
    caller searching the same rows at every evaluation encodes them once).
    ``embeddings=None`` searches the metadata alone.
    A slice needs ``min_support`` of the rows and at least ``min_size``. ``alpha`` bounds the chance
    of reporting any slice that is not one, over every candidate examined (1 %: at 5 %, 3 of 80
    trained models with nothing planted showed a chance slice, too close to the 1 in 20 a user
    would call too many). ``confusion_weight``
    weighs the mixture's label and prediction terms against its embedding term. ``seed`` fixes the
    split and the fit.
    """
    z_raw, y, p = _checked(embeddings, labels, probs)
    n = len(y)
    ids = np.arange(n) if ids is None else _array(ids, "ids")
    if ids.shape != (n,):
        raise ValueError(f"ids: got shape {ids.shape}, expected ({n},), one id per row")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: got {alpha!r}, expected a probability in (0, 1)")
    names = [str(c) for c in class_names] if class_names is not None else [str(c) for c in range(p.shape[1])]
    errors = p.argmax(axis=1) != y
    min_count = smallest_slice(n, min_size, min_support)
    z = mixture.principal_components(z_raw, min(n_pca, z_raw.shape[1], n - 1))[0] if z_raw.shape[1] else \
        z_raw.astype(np.float64)
    if isinstance(meta, attributes.Predicates):
        if meta.codes.shape[1] != n or meta.min_count != min_count:
            raise ValueError(f"meta: encoded for {meta.codes.shape[1]} rows and slices of {meta.min_count}, "
                             f"expected {n} rows and slices of {min_count}")
        pred = meta
    else:
        pred = attributes.encode(meta or {}, n, min_count)

    paths = [_metadata_candidates(pred, errors, min_count, max_predicates)] if pred.names else []
    paths.append(_embedding_candidates(z, y, p, errors, min_count, n_components, confusion_weight, seed))
    tested = [t for t in paths if len(t.size)]  # a path without candidates has nothing to test
    m = sum(len(t.size) for t in tested)
    # Holm can reject only candidates that might reach p <= alpha; if there are r of them, no
    # rejection has a threshold above alpha / (m - r + 1), so p-values above it need not be exact
    reachable = sum(int(t.might_reach(alpha).sum()) for t in tested)
    p_values = [t.p_values(alpha / max(m - reachable + 1, 1), alpha / max(m, 1)) for t in tested]
    significant, cutoff = holm(np.concatenate([np.zeros(0), *p_values]), m, alpha)
    found, start = [], 0
    for t, pv in zip(tested, p_values):
        rows = np.flatnonzero(significant[start:start + len(pv)])
        found += [_Candidate(t.members(i), float(q), t.source, t.words(i)) for i, q in zip(rows, t.exact_p(rows))]
        start += len(pv)
    kept = _not_explained(found, errors, cutoff)
    slices = [_describe(c, z, y, p, errors, ids, names, pred, n_representatives) for c in kept]
    rank = [s.ci[0] - s.rest_error_rate for s in slices]
    best = [slices[i] for i in np.argsort(rank, kind="stable")[::-1][:max_slices]]
    coords = z[:, :2].copy() if z.shape[1] >= 2 else np.pad(z, ((0, 0), (0, 2 - z.shape[1])))
    return SliceSearch(best, m, coords)


def _metadata_candidates(pred: attributes.Predicates, errors: np.ndarray, min_count: int,
                         max_predicates: int) -> _Tested:
    """Conjunctions of predicates, each tested on all rows."""
    cells = attributes.search(pred, errors, min_count, max_predicates)
    return _Tested(cells.size, cells.errors, len(errors), int(errors.sum()), "metadata",
                   lambda i: pred.mask(cells.columns[i], cells.values[i]),
                   lambda i: tuple(pred.words(cells.columns[i], cells.values[i])))


def _embedding_candidates(z: np.ndarray, y: np.ndarray, p: np.ndarray, errors: np.ndarray, min_count: int,
                          n_components: int, confusion_weight: float, seed: int) -> _Tested:
    """Regions of the error-aware mixture fitted on one half, tested on the other half."""
    fit_rows, test_rows = _halves(len(y), seed)
    masks = []
    if z.shape[1]:
        k = max(1, min(n_components, len(fit_rows) // max(min_count // 2, 1)))
        mix = mixture.fit_mixture(z[fit_rows], y[fit_rows], p[fit_rows], k, confusion_weight, max(min_count // 4, 1))
        masks = mixture.region_candidates(mix, z, y, errors, fit_rows, min_count)
    in_test = np.stack(masks)[:, test_rows] if masks else np.zeros((0, len(test_rows)), bool)
    return _Tested(in_test.sum(axis=1), (in_test & errors[test_rows]).sum(axis=1), len(test_rows),
                   int(errors[test_rows].sum()), "embedding", lambda i: masks[i])


@lru_cache(maxsize=16)
def _halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows the mixture is fitted on, rows its regions are tested on): a random half each, the
    first at most ``MAX_FIT_ROWS``. Fixed by ``n`` and ``seed``, so drawn once for all of a run's
    evaluations (read-only: they are shared)."""
    order = np.random.default_rng(seed).permutation(n)
    fit_rows, test_rows = np.sort(order[:n // 2]), np.sort(order[n // 2:])
    if len(fit_rows) > MAX_FIT_ROWS:
        fit_rows = np.sort(np.random.default_rng(seed + 1).choice(fit_rows, MAX_FIT_ROWS, replace=False))
    for rows in (fit_rows, test_rows):
        rows.setflags(write=False)
    return fit_rows, test_rows


def _explains(others: list[np.ndarray], a: np.ndarray, errors: np.ndarray, level: float) -> bool:
    """Do the slices ``others`` account for the excess error of slice ``a``? Rows are grouped by
    which of the others they belong to (none, the first only, the first and the second, ...); they
    do when in no group the rows of ``a`` fail significantly more than the group's other rows. So a
    parent is explained by a child holding all its excess error, a child no worse than its parent by
    the parent, and a near-duplicate by its twin (with whatever other slices its stray rows are in).

    ``level`` is the p-value that made a candidate significant in the search: a remainder must
    pass the same bar to count as a slice of its own. (At a plain 0.05 the best of thousands of
    overlapping candidates would keep a remainder whose only excess is the noise it was chosen for.)"""
    pattern = np.zeros(len(a), np.int64)
    for j, mask in enumerate(others):
        pattern |= mask.astype(np.int64) << j
    groups, group = np.unique(pattern, return_inverse=True)
    k = len(groups)
    size_in = np.bincount(group[a], minlength=k)
    size_out = np.bincount(group[~a], minlength=k)
    err_in = np.bincount(group[a], weights=errors[a], minlength=k).astype(np.int64)
    err_out = np.bincount(group[~a], weights=errors[~a], minlength=k).astype(np.int64)
    both = (size_in > 0) & (size_out > 0)
    worse = [fisher_greater([err_in[g]], [size_in[g]], err_in[g] + err_out[g], size_in[g] + size_out[g])[0] <= level
             for g in np.flatnonzero(both & (err_in * size_out > err_out * size_in))]
    return not any(worse)


def _not_explained(candidates: list[_Candidate], errors: np.ndarray, level: float) -> list[_Candidate]:
    """The candidates that the others kept do not explain, taken strongest evidence first (shorter
    descriptions first among equals); a kept one that a later one explains (with the rest) goes."""
    masks = np.stack([c.mask for c in candidates]) if candidates else np.zeros((0, len(errors)), bool)
    strength = excess_deviance((masks & errors).sum(axis=1), masks.sum(axis=1), int(errors.sum()), len(errors))
    order = sorted(range(len(candidates)), key=lambda i: (-strength[i], len(candidates[i].predicates)))
    kept: list[_Candidate] = []
    for i in order[:MAX_KEPT_CHECKED]:
        c = candidates[i]
        if _explains([k.mask for k in kept], c.mask, errors, level):
            continue
        kept.append(c)
        kept = [k for k in kept if k is c or not _explains([o.mask for o in kept if o is not k], k.mask, errors, level)]
    return kept


# ---------------------------------------------------------------------------------------------
# Describing a slice
# ---------------------------------------------------------------------------------------------
def _describe(c: _Candidate, z, y, p, errors, ids, names, pred, n_representatives) -> Slice:
    rows = np.flatnonzero(c.mask)
    size, errs = len(rows), int(errors[rows].sum())
    rest = ~c.mask
    lo, hi = wilson_interval(errs, size)
    predicted = p.argmax(axis=1)
    confusion = tuple((names[t], names[q], k) for (t, q), k in
                      Counter(zip(y[rows][errors[rows]].tolist(), predicted[rows][errors[rows]].tolist())).most_common(3))
    enrichment = _enrichment(pred, c.mask)
    return Slice(ids=ids[rows], rows=rows, size=size, errors=errs, error_rate=errs / size,
                 ci=(float(lo), float(hi)), rest_error_rate=float(errors[rest].mean()) if rest.any() else 0.0,
                 overall_error_rate=float(errors.mean()), p_value=c.p_value, source=c.source,
                 predicates=c.predicates, confusion=confusion, enrichment=enrichment,
                 representatives=ids[_representatives(z, rows, errors, n_representatives)],
                 description=_words(c, y[rows], errors[rows], predicted[rows], names, enrichment))


def _enrichment(pred: attributes.Predicates, mask: np.ndarray) -> tuple[tuple[str, float, float], ...]:
    """Predicates that most slice rows hold and that are much more common in the slice than overall."""
    out = []
    for a, labels in enumerate(pred.labels):
        inside = np.bincount(pred.codes[a, mask][pred.codes[a, mask] >= 0], minlength=len(labels)) / mask.sum()
        overall = np.bincount(pred.codes[a][pred.codes[a] >= 0], minlength=len(labels)) / len(mask)
        for v in np.flatnonzero((inside >= ENRICHED_SHARE) & (inside >= ENRICHED_LIFT * overall)):
            out.append((labels[v], float(inside[v]), float(overall[v])))
    return tuple(sorted(out, key=lambda e: -e[1] / e[2]))


def _words(c: _Candidate, y, errors, predicted, names, enrichment) -> str:
    """"site = 4 and device = 1", "true 2, predicted 3", "true 2, predicted 3; mostly site = 4", or for
    a region that neither its classes nor the metadata describe, "mixed classes in one region of the
    embedding"."""
    labels = np.bincount(y, minlength=len(names))
    parts = []
    if labels.max() >= PURE_CLASS * len(y):
        parts.append(f"true {names[int(labels.argmax())]}")
    if errors.any():
        wrong = np.bincount(predicted[errors], minlength=len(names))
        if wrong.max() >= CONFUSION_SHARE * errors.sum():
            parts.append(f"predicted {names[int(wrong.argmax())]}")
    confusion = ", ".join(parts)
    if c.predicates:
        return " and ".join(c.predicates) + (f" ({confusion})" if confusion else "")
    mostly = " and ".join(e[0] for e in enrichment[:2])
    text = confusion or "mixed classes in one region of the embedding"
    return f"{text}; mostly {mostly}" if mostly else text


def _representatives(z: np.ndarray, rows: np.ndarray, errors: np.ndarray, k: int) -> np.ndarray:
    """Up to ``k`` members nearest the centre of the slice's errors in the embedding: failing members
    first, as they show what fails."""
    failing = errors[rows]
    centre = z[rows[failing]].mean(axis=0) if failing.any() else z[rows].mean(axis=0)
    dist = ((z[rows] - centre) ** 2).sum(axis=1)
    order = np.lexsort((dist, ~failing))
    return rows[order[:k]]


def errors_by_value(meta: dict | attributes.Predicates, errors) -> list[tuple[str, int, float]]:
    """(predicate, rows, error rate) of every value of every metadata column (numbers cut into
    quantile bins as in the search), worst first: the metadata at a glance, slice or not. ``meta``
    may be encoded already, with every value kept (``attributes.encode(meta, N, 1)``)."""
    errors = np.asarray(errors, bool)
    if isinstance(meta, attributes.Predicates):
        if meta.codes.shape[1] != len(errors) or meta.min_count != 1:
            raise ValueError(f"meta: encoded for {meta.codes.shape[1]} rows keeping values of {meta.min_count} "
                             f"rows or more, expected {len(errors)} rows and every value kept (1)")
        pred = meta
    else:
        pred = attributes.encode(meta, len(errors), 1)
    out = []
    for a, labels in enumerate(pred.labels):
        size = np.bincount(pred.codes[a], minlength=len(labels))
        wrong = np.bincount(pred.codes[a], weights=errors, minlength=len(labels))
        out += [(labels[v], int(size[v]), float(wrong[v] / size[v])) for v in np.flatnonzero(size)]
    return sorted(out, key=lambda r: (-r[2], r[0]))
