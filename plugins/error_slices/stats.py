"""The statistics every slice is judged by: Fisher's exact test of a slice against the rest,
Holm's correction over every candidate examined, Wilson intervals, and a deviance to rank by."""
from __future__ import annotations

import numpy as np
from scipy import special

Z_95 = 1.959963984540054
SCREEN_MARGIN = 3.0  # a normal approximation must put p below this many times the level to earn an exact p


def fisher_greater(errors, size, total_errors: int, total: int, level: float | None = None,
                   sure_below: float | None = None) -> np.ndarray:
    """One-sided p-values of Fisher's exact test that a slice of ``size`` rows holding ``errors``
    errors fails more often than the rest of ``total`` rows holding ``total_errors`` in all.

    Under the null (errors independent of slice membership) the slice's error count is
    hypergeometric and p = P(X >= errors): exact, so it holds for a slice of ten rows as for ten
    thousand. Two shortcuts keep a search over 10^4 candidates fast without changing a decision:

    - with a ``level``, candidates that the normal approximation puts above ``SCREEN_MARGIN * level``
      get p = 1. Their exact p is above ``level`` (the hypergeometric's right tail is heavier than
      the normal's wherever errors are the minority, and the margin covers the rest).
    - with ``sure_below``, candidates whose Chernoff–Hoeffding bound exp(-n KL(e/n, E/N)) (valid for
      sampling without replacement) is already below it get the bound itself: a p-value that errs
      only on the safe side, for slices far beyond any threshold.
    """
    e, n = np.asarray(errors, np.int64), np.asarray(size, np.int64)
    p = np.ones(e.shape)
    if total_errors == 0 or total_errors == total:
        return p
    todo = n > 0
    if level is not None:
        todo &= might_reach(e, n, total_errors, total, level)
    todo = np.flatnonzero(todo)
    if sure_below is not None and len(todo):
        bound = chernoff_bound(e[todo], n[todo], total_errors / total)
        sure = bound <= sure_below
        p[todo[sure]] = bound[sure]
        todo = todo[~sure]
    if len(todo):
        p[todo] = hypergeom_upper_tail(e[todo], n[todo], total_errors, total)
    return p


def hypergeom_upper_tail(errors, size, total_errors: int, total: int, max_terms: int = 2 ** 21) -> np.ndarray:
    """P(X >= errors) for X the errors among ``size`` rows drawn without replacement from ``total``
    rows of which ``total_errors`` fail: the pmf summed over the tail in log space, in blocks of at
    most ``max_terms`` terms. (scipy.stats' ``hypergeom.sf`` agrees to 1e-9; importing scipy.stats
    took half a second of every search worker's start.)"""
    k, n = np.asarray(errors, np.int64), np.asarray(size, np.int64)
    lo = np.maximum(k, np.maximum(0, n + total_errors - total))  # the tail within the support
    hi = np.minimum(n, total_errors)
    p = np.zeros(k.shape)
    some = np.flatnonzero(lo <= hi)
    if not len(some):
        return p
    width = int((hi[some] - lo[some]).max()) + 1
    block = max(1, max_terms // width)
    offsets = np.arange(width)
    for at in range(0, len(some), block):
        rows = some[at:at + block]
        x = lo[rows, None] + offsets
        past = x > hi[rows, None]  # beyond the tail's end: no terms
        x = np.minimum(x, hi[rows, None])
        m = n[rows, None]
        log_pmf = _log_choose(total_errors, x) + _log_choose(total - total_errors, m - x) - _log_choose(total, m)
        log_pmf[past] = -np.inf
        top = log_pmf.max(axis=1, keepdims=True)
        p[rows] = np.exp(top[:, 0]) * np.exp(log_pmf - top).sum(axis=1)
    return np.minimum(p, 1.0)


def _log_choose(a, b) -> np.ndarray:
    """log C(a, b) through the beta function, which keeps its precision where two log-gammas of
    large numbers would cancel."""
    return -np.log1p(a) - special.betaln(np.add(b, 1), np.subtract(a, b) + 1)


def might_reach(errors, size, total_errors: int, total: int, level: float) -> np.ndarray:
    """Which candidates the normal approximation does not rule out of p <= ``level`` (see
    ``fisher_greater``): those with z at least the normal quantile of ``SCREEN_MARGIN * level``."""
    e, n = np.asarray(errors, float), np.asarray(size, float)
    rate = total_errors / total
    var = n * rate * (1 - rate) * (total - n) / max(total - 1, 1)  # hypergeometric variance
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (e - n * rate) / np.sqrt(var)
    return (var > 0) & (z >= special.ndtri(1 - min(0.5, SCREEN_MARGIN * level)))


def chernoff_bound(errors, size, rate: float) -> np.ndarray:
    """exp(-n KL(e/n || rate)) where e/n > rate, else 1: an upper bound on P(X >= e) for X binomial
    or hypergeometric with mean n * rate (Hoeffding 1963)."""
    e, n = np.asarray(errors, float), np.asarray(size, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(e / n, 0, 1)
        kl = special.xlogy(q, q / rate) + special.xlogy(1 - q, (1 - q) / (1 - rate))
    return np.where((n > 0) & (q > rate), np.exp(-n * kl), 1.0)


def holm(p, m: int | None = None, alpha: float = 0.05) -> tuple[np.ndarray, float]:
    """Holm's step-down test over ``m`` hypotheses examined in all (``m >= len(p)``: candidates never
    given a p-value count as hypotheses with p = 1, which only makes it stricter). Returns which
    p-values it rejects and the threshold the last rejected one met (0 when none is rejected).

    Holm controls the chance of *any* false slice at ``alpha``, whatever the dependence between
    candidates; overlapping candidates are strongly dependent, which makes it stricter still, so
    data without slices yield none in well over 1 - alpha of cases."""
    p = np.asarray(p, float)
    m = len(p) if m is None else m
    if m < len(p):
        raise ValueError(f"m: got {m}, expected at least the {len(p)} p-values given")
    order = np.argsort(p, kind="stable")
    thresholds = alpha / (m - np.arange(len(p)))
    failed = np.flatnonzero(p[order] > thresholds)
    n_rejected = int(failed[0]) if len(failed) else len(p)
    keep = np.zeros(len(p), bool)
    keep[order[:n_rejected]] = True
    return keep, float(thresholds[n_rejected - 1]) if n_rejected else 0.0


def wilson_interval(successes, trials, z: float = Z_95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial proportion: sensible at 0 % and 100 %, unlike the
    normal interval, which matters for small slices that fail on every member."""
    k, n = np.asarray(successes, float), np.asarray(trials, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        phat = k / n
        centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * np.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n))
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def excess_deviance(errors, size, total_errors, total) -> np.ndarray:
    """The likelihood-ratio statistic G of "slice and rest fail at different rates" against "at one
    rate", signed: positive where the slice fails more. It grows with both how much worse a slice
    is and how many rows show it, so it orders candidates by the strength of their evidence."""
    e, n = np.asarray(errors, float), np.asarray(size, float)
    e_rest, n_rest = total_errors - e, total - n

    def loglik(k, m):
        """k log(k/m) + (m - k) log(1 - k/m), 0 log 0 being 0 (and 0 for m = 0)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            p = k / np.maximum(m, 1)
            return special.xlogy(k, p) + special.xlogy(m - k, 1 - p)

    g = 2 * (loglik(e, n) + loglik(e_rest, n_rest) - loglik(float(total_errors), float(total)))
    with np.errstate(divide="ignore", invalid="ignore"):
        worse = e / np.maximum(n, 1) > e_rest / np.maximum(n_rest, 1)
    return np.where(worse, g, -g)
