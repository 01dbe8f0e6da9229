"""Can a classifier's confidence be trusted? Reliability bins, the ECE family, proper scores and
temperature scaling, on plain arrays (numpy, scipy; torch tensors are accepted as input).

Every function that takes model outputs says which kind it takes: probabilities by default, logits
with ``from_logits=True``. Nothing is guessed from the values; probabilities that do not look like
probabilities are an error that says so.

**Bin rule** (one rule for every binned quantity here). A binning has edges
``e_0 <= e_1 <= ... <= e_n``. A confidence ``c`` belongs to bin ``k`` when ``e_k <= c < e_{k+1}``;
the last bin is closed, ``e_{n-1} <= c <= e_n``. Comparisons are exact, made in the dtype of the
confidences against edges that are the floats nearest to their real values in that same dtype. So an
interior edge such as 0.3 (10 bins) opens the bin ``[0.3, 0.4)`` in float32 and float64 alike, even
though float64(0.3) < 3/10 < float32(0.3); and a confidence of exactly 1.0 is in the last bin.

- ``binning="uniform"``: ``e_k = k / n`` (equal width, Guo et al. 2017).
- ``binning="quantile"``: equal mass. With the confidences sorted, ``s_0 <= ... <= s_{N-1}``, the
  interior edges are ``e_k = s_{ceil(k N / n)}``, ``e_0 = s_0`` and ``e_n = s_{N-1}``. Distinct
  confidences then fill the bins with ``floor(N/n)`` or ``ceil(N/n)`` samples each; equal ones always
  share a bin, so ties can leave a bin empty.

Empty bins have NaN confidence, accuracy and interval and a count of 0; they carry no weight.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

BINNINGS = ("uniform", "quantile")
NORMS = ("l1", "l2", "max")
ROW_COLUMNS = ("lower", "upper", "confidence", "accuracy", "count", "ci_low", "ci_high")
MAX_BINS = 10_000  # far below 2**28, where rounding k / n to float32 via float64 stays exact
ROW_SUM_TOLERANCE = 1e-3
_FIT_CHUNK_ROWS = 16_384  # rows per pass of the temperature fit: a chunk fits in L2 cache


# ---------------------------------------------------------------------------------------------
# Input checks: every error names the argument, the value and what was expected
# ---------------------------------------------------------------------------------------------
def _as_array(x, name: str) -> np.ndarray:
    """numpy view of an array-like or a (CPU or device) torch tensor."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            x = x.float()
        x = x.numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: could not read {type(x).__name__} as an array ({exc})") from None


def _check_choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name}: got {value!r}, expected one of {', '.join(map(repr, choices))}")


def _check_n_bins(n_bins) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or not 1 <= n_bins <= MAX_BINS:
        raise ValueError(f"n_bins: got {n_bins!r}, expected an integer in [1, {MAX_BINS}]")
    return int(n_bins)


def _float_matrix(x, name: str) -> np.ndarray:
    a = _as_array(x, name)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 2:
        raise ValueError(f"{name}: got shape {a.shape}, expected (N, C) with N >= 1 samples and C >= 2 classes")
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{name}: got dtype {a.dtype}, expected real numbers")
    if a.dtype.kind != "f":
        a = a.astype(np.float64)
    if not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f"{name}: got {a[tuple(bad)]} at row {bad[0]}, column {bad[1]}; expected finite values")
    return a


def _check_probs(p: np.ndarray) -> np.ndarray:
    lo, hi = p.min(), p.max()
    if lo < 0 or hi > 1:
        raise ValueError(f"probs: got values in [{lo:.4g}, {hi:.4g}], expected probabilities in [0, 1] "
                         "(pass from_logits=True for logits)")
    sums = p.sum(axis=1, dtype=np.float64)
    worst = int(np.argmax(np.abs(sums - 1)))
    if abs(sums[worst] - 1) > ROW_SUM_TOLERANCE:
        raise ValueError(f"probs: row {worst} sums to {sums[worst]:.6g}, expected rows summing to 1 "
                         f"within {ROW_SUM_TOLERANCE:g} (pass from_logits=True for logits)")
    return p


def _check_labels(labels, n: int, n_classes: int) -> np.ndarray:
    y = _as_array(labels, "labels")
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"labels: got shape {y.shape}, expected ({n},), one label per row of probs/logits")
    if y.dtype.kind not in "iu":
        raise TypeError(f"labels: got dtype {y.dtype}, expected integer class indices")
    lo, hi = y.min(), y.max()
    if lo < 0 or hi >= n_classes:
        raise ValueError(f"labels: got values in [{lo}, {hi}], expected class indices in [0, {n_classes - 1}]")
    return y.astype(np.intp, copy=False)


def _check_confidence(confidence) -> np.ndarray:
    c = _as_array(confidence, "confidence")
    if c.ndim != 1 or c.shape[0] < 1 or c.dtype.kind != "f":
        raise ValueError(f"confidence: got shape {c.shape} and dtype {c.dtype}, expected a non-empty 1-D float array")
    if not (np.isfinite(c).all() and c.min() >= 0 and c.max() <= 1):
        raise ValueError(f"confidence: got values in [{np.nanmin(c):.4g}, {np.nanmax(c):.4g}] or non-finite, "
                         "expected values in [0, 1]")
    return c


def _check_correct(correct, shape: tuple) -> np.ndarray:
    hit = _as_array(correct, "correct")
    if hit.shape != shape:
        raise ValueError(f"correct: got shape {hit.shape}, expected {shape}, one flag per confidence")
    if hit.dtype != bool:
        if not np.isin(hit, (0, 1)).all():
            raise ValueError("correct: got values other than 0 and 1, expected booleans")
        hit = hit.astype(bool)
    return hit


@dataclass(frozen=True)
class _Checked:
    """Validated model outputs: probabilities in their own dtype, labels, and log p(true label)."""

    probs: np.ndarray
    labels: np.ndarray
    log_p_true: np.ndarray


def _row_max(a: np.ndarray) -> np.ndarray:
    """Per-row maximum, one column at a time: faster than ``max(axis=1)`` for the few classes usual here."""
    m = a[:, 0].copy()
    for j in range(1, a.shape[1]):
        np.maximum(m, a[:, j], out=m)
    return m


def _softmax(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 probabilities and log p(true label), in place on one (N, C) buffer and one exp pass."""
    p = logits.astype(np.float64)
    p -= _row_max(p)[:, None]
    log_p_true = p[np.arange(p.shape[0]), labels]
    np.exp(p, out=p)
    s = p @ np.ones(p.shape[1])
    p *= (1 / s)[:, None]
    return p, log_p_true - np.log(s)


def _checked(scores, labels, from_logits: bool) -> _Checked:
    if not isinstance(from_logits, bool):
        raise TypeError(f"from_logits: got {from_logits!r}, expected True (logits) or False (probabilities)")
    a = _float_matrix(scores, "logits" if from_logits else "probs")
    y = _check_labels(labels, a.shape[0], a.shape[1])
    if from_logits:
        probs, log_p_true = _softmax(a, y)
        return _Checked(probs, y, log_p_true)
    p = _check_probs(a)
    with np.errstate(divide="ignore"):
        return _Checked(p, y, np.log(p[np.arange(p.shape[0]), y].astype(np.float64)))


# ---------------------------------------------------------------------------------------------
# Binning
# ---------------------------------------------------------------------------------------------
def uniform_edges(n_bins: int, dtype=np.float64) -> np.ndarray:
    """``k / n_bins`` for k = 0..n_bins, each the nearest float of ``dtype``.

    float64 division of small integers is correctly rounded, and rounding that once more to a
    narrower float gives the nearest one as long as n_bins < 2**28 (k/n cannot sit on a midpoint).
    """
    return (np.arange(n_bins + 1, dtype=np.float64) / n_bins).astype(dtype)


def _uniform_index(conf: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin of each confidence under the module's rule: floor(c * n), decided exactly near edges.

    floor(c * n) can only be wrong where c * n lies within rounding (of the product, or of an
    edge to the dtype; each at most n * eps / 2) of an integer. Those few confidences, and 1.0,
    are binned by exact comparison with the edges instead.
    """
    edges = uniform_edges(n_bins, conf.dtype)
    t = conf * n_bins
    idx = t.astype(np.intp)  # truncation is floor, as conf >= 0
    t -= idx  # fractional part
    margin = 4 * n_bins * np.finfo(conf.dtype).eps
    near_edge = np.flatnonzero((t < margin) | (t > 1 - margin))
    idx[near_edge] = np.searchsorted(edges[1:-1], conf[near_edge], side="right")
    return idx, edges


def _quantile_index(conf: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    n = conf.shape[0]
    ranks = np.minimum((np.arange(1, n_bins) * n + n_bins - 1) // n_bins, n - 1)  # ceil(k N / n)
    order_stats = np.partition(conf, np.unique(np.r_[0, ranks, n - 1]))
    inner = order_stats[ranks]
    edges = np.r_[order_stats[0], inner, order_stats[n - 1]].astype(conf.dtype)
    return np.searchsorted(inner, conf, side="right"), edges


def _bin_index(conf: np.ndarray, n_bins: int, binning: str) -> tuple[np.ndarray, np.ndarray]:
    if binning == "uniform":
        return _uniform_index(conf, n_bins)
    return _quantile_index(conf, n_bins)


def bin_index(confidence, n_bins: int = 15, binning: str = "uniform") -> tuple[np.ndarray, np.ndarray]:
    """(bin of each confidence, the n_bins + 1 edges), under the rule in the module docstring."""
    _check_choice("binning", binning, BINNINGS)
    return _bin_index(_check_confidence(confidence), _check_n_bins(n_bins), binning)


# ---------------------------------------------------------------------------------------------
# Reliability bins and the errors computed from them
# ---------------------------------------------------------------------------------------------
def clopper_pearson(successes, trials, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Exact (conservative) two-sided interval for a binomial proportion; NaN where trials == 0."""
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: got {alpha!r}, expected a number in (0, 1)")
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(k > 0, stats.beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        high = np.where(k < n, stats.beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    empty = n == 0
    return np.where(empty, np.nan, low), np.where(empty, np.nan, high)


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin edges, mean confidence, accuracy, count and a Clopper-Pearson interval for accuracy."""

    lower: np.ndarray
    upper: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray

    @property
    def n_samples(self) -> int:
        return int(self.count.sum())

    def rows(self) -> np.ndarray:
        """(n_bins, 7) float64 table in ROW_COLUMNS order, the run file's reliability row."""
        return np.column_stack([getattr(self, c).astype(np.float64) for c in ROW_COLUMNS])

    def _filled(self):
        full = self.count > 0
        weight = self.count[full] / self.n_samples
        return full, weight, self.accuracy[full] - self.confidence[full]

    def calibration_error(self, norm: str = "l1") -> float:
        """ECE (l1), RMS calibration error (l2) or MCE (max) over the non-empty bins."""
        _check_choice("norm", norm, NORMS)
        _, weight, gap = self._filled()
        if norm == "l1":
            return float(weight @ np.abs(gap))
        if norm == "l2":
            return float(np.sqrt(weight @ gap**2))
        return float(np.abs(gap).max())

    def debiased_l2(self) -> float:
        """Kumar, Liang & Ma (2019): the squared plug-in error less each bin's sampling variance.

        The plug-in (acc - conf)^2 overstates the squared error by Var(acc) = a(1-a)/n per bin; the
        unbiased a(1-a)/(n-1) is subtracted. Bins of one sample contribute nothing. Returns the
        square root of the estimate, clipped at 0.
        """
        ok = self.count >= 2
        n, acc = self.count[ok], self.accuracy[ok]
        squared = (acc - self.confidence[ok]) ** 2 - acc * (1 - acc) / (n - 1)
        return float(np.sqrt(max((n / self.n_samples) @ squared, 0.0)))


def _reliability(conf: np.ndarray, hit: np.ndarray, n_bins: int, binning: str, alpha: float) -> ReliabilityBins:
    idx, edges = _bin_index(conf, n_bins, binning)
    count = np.bincount(idx, minlength=n_bins)
    hits = np.bincount(idx[hit], minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf, acc = conf_sum / count, hits / count
    ci_low, ci_high = clopper_pearson(hits, count, alpha)
    edges = edges.astype(np.float64)
    return ReliabilityBins(edges[:-1], edges[1:], mean_conf, acc, count, ci_low, ci_high)


def bin_confidences(confidence, correct, n_bins: int = 15, binning: str = "uniform",
                    alpha: float = 0.05) -> ReliabilityBins:
    """Reliability bins of any confidence/correctness pairs (a top label, one class, a binary model)."""
    c = _check_confidence(confidence)
    _check_choice("binning", binning, BINNINGS)
    return _reliability(c, _check_correct(correct, c.shape), _check_n_bins(n_bins), binning, alpha)


def _top_label(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = probs.argmax(axis=1)
    return probs[np.arange(probs.shape[0]), pred], pred == labels


def top_label(probs, labels, *, from_logits: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(max probability, whether its class is the label) per sample; ties go to the lower class."""
    d = _checked(probs, labels, from_logits)
    return _top_label(d.probs, d.labels)


def reliability_bins(probs, labels, n_bins: int = 15, binning: str = "uniform", *,
                     from_logits: bool = False, alpha: float = 0.05) -> ReliabilityBins:
    """Top-label reliability bins, the data of a reliability diagram."""
    _check_choice("binning", binning, BINNINGS)
    n_bins = _check_n_bins(n_bins)
    conf, hit = top_label(probs, labels, from_logits=from_logits)
    return _reliability(conf, hit, n_bins, binning, alpha)


def expected_calibration_error(probs, labels, n_bins: int = 15, norm: str = "l1", binning: str = "uniform", *,
                               from_logits: bool = False) -> float:
    """Top-label ECE (norm "l1"), RMS calibration error ("l2") or MCE ("max")."""
    _check_choice("norm", norm, NORMS)
    bins = reliability_bins(probs, labels, n_bins, binning, from_logits=from_logits)
    return bins.calibration_error(norm)


def adaptive_calibration_error(probs, labels, n_bins: int = 15, *, from_logits: bool = False) -> float:
    """ECE over equal-mass bins: every bin equally well estimated, and the crowded high-confidence
    region split finely instead of lumped into one or two wide bins."""
    return expected_calibration_error(probs, labels, n_bins, "l1", "quantile", from_logits=from_logits)


def debiased_l2_calibration_error(probs, labels, n_bins: int = 15, binning: str = "quantile", *,
                                  from_logits: bool = False) -> float:
    """Kumar et al.'s debiased top-label L2 calibration error; equal-mass bins by default, as they advise."""
    return reliability_bins(probs, labels, n_bins, binning, from_logits=from_logits).debiased_l2()


def _classwise(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> float:
    """Mean over classes of the ECE of p(class k) against 1[y = k], equal-width bins (Kull et al. 2019).

    Per bin, count * |accuracy - confidence| = |hits - sum of confidences|, so no means are needed.
    """
    n, n_classes = probs.shape
    idx, _ = _uniform_index(probs.reshape(-1), n_bins)
    key = idx.reshape(n, n_classes)
    key += np.arange(n_classes) * n_bins  # one block of bins per class
    conf_sum = np.bincount(key.reshape(-1), weights=probs.reshape(-1).astype(np.float64, copy=False),
                           minlength=n_classes * n_bins)
    hits = np.bincount(key[np.arange(n), labels], minlength=n_classes * n_bins)
    return float(np.abs(hits - conf_sum).sum() / (n * n_classes))


def classwise_calibration_error(probs, labels, n_bins: int = 15, *, from_logits: bool = False) -> float:
    """Class-wise ECE: is p(class k) calibrated for every class, not just for the top label?"""
    n_bins = _check_n_bins(n_bins)
    d = _checked(probs, labels, from_logits)
    return _classwise(d.probs, d.labels, n_bins)


def _brier(probs: np.ndarray, labels: np.ndarray) -> float:
    p = probs.astype(np.float64, copy=False)
    squares = np.einsum("ij,ij->i", p, p)
    return float(np.mean(squares - 2 * p[np.arange(p.shape[0]), labels] + 1))


def brier_score(probs, labels, *, from_logits: bool = False) -> float:
    """Multiclass Brier score, mean over samples of sum_k (p_k - 1[y = k])^2; in [0, 2]."""
    d = _checked(probs, labels, from_logits)
    return _brier(d.probs, d.labels)


def negative_log_likelihood(probs, labels, *, from_logits: bool = False) -> float:
    """Mean -log p(true label); infinite when a true label got probability 0."""
    return float(-np.mean(_checked(probs, labels, from_logits).log_p_true))


# ---------------------------------------------------------------------------------------------
# Everything at once, and temperature scaling
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CalibrationMetrics:
    """All calibration numbers of one set of predictions (top-label unless named otherwise)."""

    ece: float
    rms_ce: float
    mce: float
    ace: float
    classwise_ece: float
    debiased_l2: float
    brier: float
    nll: float
    accuracy: float
    mean_confidence: float

    @property
    def confidence_gap(self) -> float:
        """Mean confidence minus accuracy: > 0 overconfident, < 0 underconfident on average."""
        return self.mean_confidence - self.accuracy


def _metrics(d: _Checked, n_bins: int) -> CalibrationMetrics:
    conf, hit = _top_label(d.probs, d.labels)
    equal_width = _reliability(conf, hit, n_bins, "uniform", 0.05)
    equal_mass = _reliability(conf, hit, n_bins, "quantile", 0.05)
    return CalibrationMetrics(
        ece=equal_width.calibration_error("l1"),
        rms_ce=equal_width.calibration_error("l2"),
        mce=equal_width.calibration_error("max"),
        ace=equal_mass.calibration_error("l1"),
        classwise_ece=_classwise(d.probs, d.labels, n_bins),
        debiased_l2=equal_mass.debiased_l2(),
        brier=_brier(d.probs, d.labels),
        nll=float(-np.mean(d.log_p_true)),
        accuracy=float(hit.mean()),
        mean_confidence=float(conf.mean(dtype=np.float64)),
    )


def calibration_metrics(probs, labels, n_bins: int = 15, *, from_logits: bool = False) -> CalibrationMetrics:
    """ECE, RMS-CE and MCE (equal width), ACE and debiased L2 (equal mass), class-wise ECE, Brier, NLL."""
    n_bins = _check_n_bins(n_bins)
    return _metrics(_checked(probs, labels, from_logits), n_bins)


@dataclass(frozen=True)
class TemperatureFit:
    """The NLL-optimal temperature T (probabilities softmax(logits / T)) and the metrics after it."""

    temperature: float
    at_bound: bool  # the optimum lies at the search bound: T is a limit, not a minimiser
    after: CalibrationMetrics


def _nll_of_log_temperature(logits: np.ndarray, labels: np.ndarray):
    """NLL(u) for T = exp(u), evaluated in float32 with float64 means (the fit's hot loop).

    With d = z - max(z) per row, NLL = mean(log(1 + sum of the other exp(d / T))) - mean(d_y) / T.
    The max term, exp(0) = 1, is left out of the sum and added by log1p, so the tiny NLL of
    confidently right predictions keeps its relative precision instead of rounding to 0.
    """
    d = (logits - _row_max(logits)[:, None]).astype(np.float32, copy=False)  # shift before narrowing
    rows = np.arange(d.shape[0])
    mean_d_true = float(d[rows, labels].mean(dtype=np.float64))
    d[rows, d.argmax(axis=1)] = -np.inf
    buf = np.empty((min(_FIT_CHUNK_ROWS, d.shape[0]), d.shape[1]), dtype=np.float32)
    ones = np.ones(d.shape[1], dtype=np.float32)

    def nll(u: float) -> float:
        beta = np.float32(np.exp(-u))
        total = 0.0
        for start in range(0, d.shape[0], buf.shape[0]):  # chunks stay in cache across the passes
            chunk = buf[:min(buf.shape[0], d.shape[0] - start)]
            np.multiply(d[start:start + chunk.shape[0]], beta, out=chunk)
            np.exp(chunk, out=chunk)
            total += np.log1p((chunk @ ones).astype(np.float64)).sum()
        return total / d.shape[0] - float(beta) * mean_d_true

    return nll


def fit_temperature(logits, labels, n_bins: int = 15, bounds: tuple[float, float] = (0.01, 100.0)) -> TemperatureFit:
    """Temperature scaling (Guo et al. 2017) by a bounded 1-D minimisation of NLL over log T.

    NLL is convex in 1/T, hence unimodal in log T, so bounded Brent search finds the global
    minimum within ``bounds``; unlike LBFGS on T it cannot step to T <= 0 or stall. A bound that
    does at least as well as the search's answer wins, and is flagged: on separable data NLL only
    falls as T -> 0, and its flat, underflowed tail would otherwise stop the search anywhere.
    """
    n_bins = _check_n_bins(n_bins)
    lo, hi = bounds
    if not 0 < lo < hi:
        raise ValueError(f"bounds: got {bounds!r}, expected (low, high) with 0 < low < high")
    z = _float_matrix(logits, "logits")
    y = _check_labels(labels, z.shape[0], z.shape[1])
    u_lo, u_hi = np.log(lo), np.log(hi)
    nll = _nll_of_log_temperature(z, y)
    res = optimize.minimize_scalar(nll, bounds=(u_lo, u_hi), method="bounded", options={"xatol": 1e-4})
    u = min((u_lo, u_hi, res.x), key=nll)  # min keeps the first of equals: a bound
    at_bound = min(u - u_lo, u_hi - u) < 1e-3
    temperature = float(np.exp(u))
    return TemperatureFit(temperature, bool(at_bound), _metrics(_checked(z / temperature, y, True), n_bins))
