"""Datasets: scikit-learn's bundled digits, the user's .npz arrays, or a Python factory.

All are held in memory as tensors with a stable integer id per sample (its index in the source), so
per-sample analyses can follow a sample across steps, and batches are cut by index without a
DataLoader (which costs more per step than the small models it would feed).
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import sources
from .errors import DataError


@dataclass
class Split:
    x: torch.Tensor  # float32, (N, *input_shape)
    y: torch.Tensor  # int64, (N,)
    ids: np.ndarray  # int64, (N,) stable sample ids
    metadata: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device) -> "Split":
        return Split(self.x.to(device), self.y.to(device), self.ids, self.metadata)


@dataclass
class DataBundle:
    train: Split
    val: Split
    n_classes: int
    class_names: list[str]
    input_shape: tuple[int, ...]
    source: str


def load_data(source: str, val_fraction: float, seed: int, base_dir: Path,
              options: dict[str, Any] | None = None) -> DataBundle:
    """``options``: the [data] table, whose extra keys a built-in synthetic source reads."""
    kind, _, rest = source.partition(":")
    if kind == "digits":
        arrays = _digits()
    elif source in sources.names():
        arrays = sources.load(source, options or {})
    elif kind == "npz":
        arrays = _npz(base_dir / rest if not Path(rest).is_absolute() else Path(rest))
    elif kind == "python":
        arrays = _python_factory(base_dir, rest)
    else:  # validated by RunConfig already
        raise DataError(f"data.source: unknown source {source!r}")
    return _bundle(arrays, val_fraction, seed, source)


def _digits() -> dict[str, Any]:
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8) in [0, 1]
    return {"x": x, "y": d.target.astype(np.int64), "class_names": [str(i) for i in range(10)]}


def _npz(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"data.source: file {path} not found")
    with np.load(path, allow_pickle=False) as z:
        if "x" not in z or "y" not in z:
            raise DataError(f"{path}: expected arrays 'x' and 'y', found {sorted(z.files)}")
        out = {"x": z["x"], "y": z["y"]}
        if ("x_val" in z) != ("y_val" in z):
            raise DataError(f"{path}: 'x_val' and 'y_val' come together; found only one of them")
        if "x_val" in z:
            out["x_val"], out["y_val"] = z["x_val"], z["y_val"]
        if "class_names" in z:
            out["class_names"] = [str(s) for s in z["class_names"]]
        out["meta"] = {k[5:]: z[k] for k in z.files if k.startswith("meta_") and not k.startswith("meta_val_")}
        out["meta_val"] = {k[9:]: z[k] for k in z.files if k.startswith("meta_val_")}
    out["origin"] = str(path)
    return out


def _python_factory(base_dir: Path, spec: str) -> dict[str, Any]:
    """``FILE.py:FUNCTION`` returning a torch Dataset, a (train, val) pair, or a dict with keys
    train, val (optional), class_names (optional)."""
    fn = load_python_object(base_dir, spec, "data.source")
    result = fn()
    if isinstance(result, dict):
        train, val, names = result["train"], result.get("val"), result.get("class_names")
    elif isinstance(result, tuple):
        train, val = result
        names = None
    else:
        train, val, names = result, None, None
    out = dict(zip(("x", "y"), _materialise(train, "train")))
    if val is not None:
        out["x_val"], out["y_val"] = _materialise(val, "val")
    if names is not None:
        out["class_names"] = [str(s) for s in names]
    out["origin"] = spec
    return out


def load_python_object(base_dir: Path, spec: str, key: str):
    file, _, name = spec.partition(":")
    path = (base_dir / file) if not Path(file).is_absolute() else Path(file)
    if not path.is_file():
        raise DataError(f"{key}: file {path} not found")
    module_spec = importlib.util.spec_from_file_location(f"traindx_user_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, name):
        raise DataError(f"{key}: {path} has no {name!r}")
    return getattr(module, name)


def _materialise(dataset, which: str) -> tuple[np.ndarray, np.ndarray]:
    if len(dataset) == 0:
        raise DataError(f"data.source: the factory's {which} dataset is empty")
    x, y = stack_samples(dataset, range(len(dataset)))
    return x.numpy(), y.numpy()


def stack_samples(dataset, indices) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples ``dataset[i]`` (each ``(x, y, ...)``) as one float32 input tensor and int64 labels."""
    xs, ys = [], []
    for i in indices:
        x, y = dataset[int(i)][:2]
        xs.append(torch.as_tensor(np.asarray(x, dtype=np.float32)))
        ys.append(int(y))
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64)


def _check(x: np.ndarray, y: np.ndarray, where: str, n_classes: int | None) -> None:
    if x.ndim < 2:
        raise DataError(f"{where}: x must have shape (N, features...), got {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{where}: x has {len(x)} samples but y has shape {y.shape}; expected ({len(x)},)")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise DataError(f"{where}: labels y must be integers 0..C-1")
    if len(y) and y.min() < 0:
        raise DataError(f"{where}: label {int(y.min())} is negative; expected 0..C-1")
    if n_classes is not None and len(y) and y.max() >= n_classes:
        raise DataError(f"{where}: label {int(y.max())} out of range for {n_classes} class names")
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        raise DataError(f"{where}: {int(bad.sum())} inputs contain NaN or inf (first at sample {int(np.argmax(bad))})")


def _bundle(a: dict[str, Any], val_fraction: float, seed: int, source: str) -> DataBundle:
    where = a.get("origin", source)
    x = np.asarray(a["x"], dtype=np.float32)
    y = np.asarray(a["y"])
    names = a.get("class_names")
    _check(x, y, where, len(names) if names else None)
    meta = a.get("meta", {})
    for k, col in meta.items():
        if len(col) != len(x):
            raise DataError(f"{where}: metadata column meta_{k} has {len(col)} rows; expected {len(x)}")
    n = len(x)
    y = y.astype(np.int64)
    if "x_val" in a:
        xv = np.asarray(a["x_val"], dtype=np.float32)
        yv = np.asarray(a["y_val"])
        _check(xv, yv, f"{where} (validation)", len(names) if names else None)
        if xv.shape[1:] != x.shape[1:]:
            raise DataError(f"{where}: x_val rows have shape {xv.shape[1:]}; expected {x.shape[1:]} like x")
        meta_val = a.get("meta_val", {})
        train_idx, val_idx = np.arange(n), np.arange(n, n + len(xv))
        x_all, y_all = np.concatenate([x, xv]), np.concatenate([y, yv.astype(np.int64)])
        meta_all = {k: np.concatenate([meta[k], meta_val[k]]) for k in meta if k in meta_val}
    else:
        perm = np.random.default_rng(seed).permutation(n)
        n_val = int(math.floor(n * val_fraction))
        val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        x_all, y_all, meta_all = x, y, meta
    if x_all.ndim == 3:  # (N, H, W) images get a channel axis
        x_all = x_all[:, None]
    n_classes = len(names) if names else int(y_all.max()) + 1
    names = names or [str(i) for i in range(n_classes)]

    def split(idx: np.ndarray) -> Split:
        return Split(torch.from_numpy(np.ascontiguousarray(x_all[idx])), torch.from_numpy(y_all[idx]),
                     idx.astype(np.int64), {k: np.asarray(v)[idx] for k, v in meta_all.items()})

    return DataBundle(split(train_idx), split(val_idx), n_classes, names, tuple(x_all.shape[1:]), source)


class BatchOrder:
    """Which samples each step trains on: a fresh permutation per epoch, drawn from (seed, epoch),
    so any step's batch is known from the step number alone — resuming needs no sampler state."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, min(batch_size, n), seed
        self.per_epoch = math.ceil(n / self.batch_size)
        self._epoch, self._perm = -1, None

    def indices(self, step: int) -> torch.Tensor:
        """Indices for optimizer step ``step`` (1-based)."""
        epoch, k = divmod(step - 1, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return self._perm[k * self.batch_size:(k + 1) * self.batch_size]
