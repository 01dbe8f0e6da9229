"""Slices described by metadata: conjunctions of up to three predicates ``column = value``.

Every conjunction with enough support is counted at once: for each set of columns one
``bincount`` over the combined value codes gives every cell's size and error count, so the search
is exhaustive (SliceLine enumerates the same lattice but prunes it by a score bound; here nothing is
pruned by its errors). Only support limits the search, and support depends on the metadata alone,
never on the errors: leaving out cells below it is a choice made before looking at any error, so
the candidates to correct for are exactly the cells examined.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

MAX_LEVELS = 12  # a numeric column with more distinct values than this is cut into quantile bins
N_BINS = 4
DENSE_CELLS_PER_ROW = 4  # count cells with bincount while there are at most this many per row


@dataclass(frozen=True)
class Predicates:
    """Metadata as integer codes: ``codes[a, i]`` is row i's value of column a, -1 where that value
    is too rare to be part of any slice (held by fewer than ``min_count`` rows); ``labels[a][code]``
    says the predicate in words."""

    names: tuple[str, ...]
    codes: np.ndarray  # (A, N) int32: one contiguous row per column
    labels: tuple[tuple[str, ...], ...]
    min_count: int = 1

    @property
    def cardinalities(self) -> np.ndarray:
        return np.array([len(lab) for lab in self.labels], np.int64)

    def mask(self, columns, values) -> np.ndarray:
        """Rows where every predicate ``(columns[j], values[j])`` holds (-1 columns are unused)."""
        m = np.ones(self.codes.shape[1], bool)
        for a, v in zip(columns, values):
            if a >= 0:
                m &= self.codes[a] == v
        return m

    def words(self, columns, values) -> list[str]:
        return [self.labels[a][v] for a, v in zip(columns, values) if a >= 0]


def _encode_column(name: str, col: np.ndarray, min_count: int) -> tuple[np.ndarray, list[str]]:
    if col.dtype.kind in "fiu":
        missing = ~np.isfinite(col) if col.dtype.kind == "f" else np.zeros(len(col), bool)
        finite = col[~missing]
        if len(np.unique(finite)) > MAX_LEVELS:
            edges = np.unique(np.quantile(finite, np.linspace(0, 1, N_BINS + 1)[1:-1]))
            codes = np.searchsorted(edges, np.where(missing, 0, col), side="right").astype(np.int32)
            labels = _bin_labels(name, edges)
            if missing.any():
                codes[missing], labels = len(labels), labels + [f"{name} missing"]
            return _drop_rare(codes, labels, min_count)
    values, codes = np.unique(np.asarray(col).astype(str) if col.dtype.kind in "OUS" else col, return_inverse=True)
    labels = [f"{name} = {_fmt(v)}" for v in values]
    return _drop_rare(codes.astype(np.int32).ravel(), labels, min_count)


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "missing" if np.isnan(v) else f"{v:g}"
    return str(v.item() if isinstance(v, np.generic) else v)


def _bin_labels(name: str, edges: np.ndarray) -> list[str]:
    e = [f"{x:.3g}" for x in edges]
    return ([f"{name} < {e[0]}"] + [f"{e[i]} ≤ {name} < {e[i + 1]}" for i in range(len(e) - 1)]
            + [f"{name} ≥ {e[-1]}"])


def _drop_rare(codes: np.ndarray, labels: list[str], min_count: int) -> tuple[np.ndarray, list[str]]:
    """Values held by fewer than ``min_count`` rows can be in no slice: code them -1."""
    counts = np.bincount(codes, minlength=len(labels))
    kept = np.flatnonzero(counts >= min_count)
    remap = np.full(len(labels), -1, np.int32)
    remap[kept] = np.arange(len(kept), dtype=np.int32)
    return remap[codes], [labels[k] for k in kept]


def encode(meta: dict[str, np.ndarray], n_rows: int, min_count: int) -> Predicates:
    """Metadata columns (numbers, booleans or strings, one value per row) as predicate codes. They
    depend on the metadata alone, so a caller that searches the same rows again (an evaluation
    after another) can encode them once."""
    names, codes, labels = [], [], []
    for name, col in meta.items():
        col = np.asarray(col)
        if col.shape != (n_rows,):
            raise ValueError(f"meta[{name!r}]: got shape {col.shape}, expected ({n_rows},), one value per row")
        c, lab = _encode_column(str(name), col, min_count)
        if lab:
            names.append(str(name)), codes.append(c), labels.append(tuple(lab))
    stacked = np.stack(codes) if codes else np.zeros((0, n_rows), np.int32)
    return Predicates(tuple(names), stacked, tuple(labels), min_count)


@dataclass(frozen=True)
class Conjunctions:
    """Every supported conjunction: its columns and value codes (-1 padded), size and errors."""

    columns: np.ndarray  # (M, L) int
    values: np.ndarray  # (M, L) int
    size: np.ndarray  # (M,)
    errors: np.ndarray  # (M,)

    def __len__(self) -> int:
        return len(self.size)

    def level(self) -> np.ndarray:
        return (self.columns >= 0).sum(axis=1)


def search(pred: Predicates, errors: np.ndarray, min_count: int, max_predicates: int = 3) -> Conjunctions:
    """Size and errors of every conjunction of up to ``max_predicates`` predicates on distinct
    columns that holds for at least ``min_count`` rows.

    A set of columns is counted by one ``bincount`` of its combined code, built from the code of
    the same set without its last column; a rare value (code -1) becomes a cell of its own that is
    dropped, so no row mask is ever made."""
    cards = pred.cardinalities + 1  # the extra value: too rare to be in a slice
    coded = [np.where(c < 0, k - 1, c).astype(np.int64) for c, k in zip(pred.codes, cards)]
    weights = errors.astype(np.float64)
    cols, vals, sizes, errs = [], [], [], []
    combined: dict[tuple[int, ...], np.ndarray] = {(): np.zeros(len(errors), np.int64)}
    for level in range(1, min(max_predicates, len(cards)) + 1):
        for combo in combinations(range(len(cards)), level):
            code = combined[combo[:-1]] * cards[combo[-1]] + coded[combo[-1]]
            if level < max_predicates:
                combined[combo] = code
            shape = tuple(cards[list(combo)])
            n_cells = int(np.prod(shape))
            if n_cells <= DENSE_CELLS_PER_ROW * len(code):
                size = np.bincount(code, minlength=n_cells)
                cells = np.flatnonzero(size >= min_count)
                size, e = size[cells], np.bincount(code, weights=weights, minlength=n_cells)[cells]
            else:
                cells, inverse = np.unique(code, return_inverse=True)
                size, e = np.bincount(inverse), np.bincount(inverse, weights=weights)
                keep = size >= min_count
                cells, size, e = cells[keep], size[keep], e[keep]
            values = np.stack(np.unravel_index(cells, shape), axis=1)
            supported = (values < np.array(shape) - 1).all(axis=1)  # no rare value among its predicates
            if not supported.any():
                continue
            pad = max_predicates - level
            vals.append(np.pad(values[supported], ((0, 0), (0, pad)), constant_values=-1))
            cols.append(np.pad(np.tile(combo, (int(supported.sum()), 1)), ((0, 0), (0, pad)), constant_values=-1))
            sizes.append(size[supported]), errs.append(np.rint(e[supported]).astype(np.int64))
        for combo in [c for c in combined if len(c) == level - 1 and c]:
            del combined[combo]  # a level's codes are needed by the next level only
    if not sizes:
        empty = np.zeros((0, max_predicates), np.int64)
        return Conjunctions(empty, empty, np.zeros(0, np.int64), np.zeros(0, np.int64))
    return Conjunctions(np.concatenate(cols), np.concatenate(vals), np.concatenate(sizes), np.concatenate(errs))
