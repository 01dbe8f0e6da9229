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

CLASS_SLACK = 16  # unused class indices allowed beyond twice the labels present, without n_classes


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
    """``options``: the [data] table, whose extra keys a built-in synthetic source reads (and whose
    ``n_classes``, if set, fixes the class count)."""
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
    return _bundle(arrays, val_fraction, seed, source, (options or {}).get("n_classes"))


def _digits() -> dict[str, Any]:
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8) in [0, 1]
    return {"x": x, "y": d.target.astype(np.int64), "class_names": [str(i) for i in range(10)]}


def _npz(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"data.source: file {path} not found")
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as exc:  # not a zip of .npy arrays: numpy tries it as a pickle and says so
        raise DataError(f"{path}: not an .npz archive of arrays ({exc})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: a single array (.npy); expected an .npz archive with arrays x and y")
    with z:
        if "x" not in z or "y" not in z:
            raise DataError(f"{path}: expected arrays 'x' and 'y', found {sorted(z.files)}")
        if ("x_val" in z) != ("y_val" in z):
            raise DataError(f"{path}: 'x_val' and 'y_val' come together; found only one of them")
        out = {k: _member(z, k, path) for k in ("x", "y", "x_val", "y_val") if k in z}
        if "class_names" in z:
            out["class_names"] = [str(s) for s in _member(z, "class_names", path)]
        out["meta"] = {k[5:]: _member(z, k, path) for k in z.files
                       if k.startswith("meta_") and not k.startswith("meta_val_")}
        out["meta_val"] = {k[9:]: _member(z, k, path) for k in z.files if k.startswith("meta_val_")}
    out["origin"] = str(path)
    return out


def _member(z, key: str, path: Path) -> np.ndarray:
    try:
        return z[key]
    except Exception as exc:  # an object array (a pickle) or a damaged member
        raise DataError(f"{path}: array {key!r} cannot be read ({exc})") from None


def _python_factory(base_dir: Path, spec: str) -> dict[str, Any]:
    """``FILE.py:FUNCTION`` returning a torch Dataset, a (train, val) pair, or a dict with keys
    train, val (optional), class_names (optional)."""
    fn = load_python_object(base_dir, spec, "data.source")
    result = fn()
    expected = ("a torch Dataset of (x, y) pairs, a (train, val) pair of them, or a dict with train, "
                "val and class_names")
    if isinstance(result, dict):
        if "train" not in result:
            raise DataError(f"data.source: {spec} returned a dict without 'train' (keys: "
                            f"{', '.join(map(str, result))}); expected {expected}")
        train, val, names = result["train"], result.get("val"), result.get("class_names")
    elif isinstance(result, tuple) and len(result) == 2 and all(map(_is_dataset, result)):
        train, val = result
        names = None
    else:
        train, val, names = result, None, None
    for which, dataset in (("train", train), ("val", val)):
        if dataset is not None and not _is_dataset(dataset):
            raise DataError(f"data.source: {spec} returned {_describe(dataset)} as its {which} data; "
                            f"expected {expected}")
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


def _is_dataset(obj) -> bool:
    """Indexable with a length, each item ``(x, y, ...)`` (the first item is looked at)."""
    if not (hasattr(obj, "__len__") and hasattr(obj, "__getitem__")) or isinstance(obj, (str, bytes, dict)):
        return False
    try:
        return len(obj) == 0 or (isinstance(obj[0], (tuple, list)) and len(obj[0]) >= 2)
    except Exception:
        return False


def _describe(obj) -> str:
    """What a factory returned instead of a dataset, for the message."""
    try:
        return f"a {type(obj).__name__} whose item 0 is {obj[0]!r:.40}, not an (x, y) pair"
    except Exception:  # not indexable at all
        return f"a {type(obj).__name__}"


def _materialise(dataset, which: str) -> tuple[np.ndarray, np.ndarray]:
    if len(dataset) == 0:
        raise DataError(f"data.source: the factory's {which} dataset is empty")
    try:
        x, y = stack_samples(dataset, range(len(dataset)))
    except (TypeError, ValueError) as exc:  # e.g. a text label
        raise DataError(f"data.source: the factory's {which} samples must be (x, y) with y an integer class "
                        f"index ({exc})") from None
    return x.numpy(), y.numpy()


def stack_samples(dataset, indices) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples ``dataset[i]`` (each ``(x, y, ...)``) as one float32 input tensor and int64 labels."""
    xs, ys = [], []
    for i in indices:
        x, y = dataset[int(i)][:2]
        xs.append(torch.as_tensor(np.asarray(x, dtype=np.float32)))
        ys.append(int(y))
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64)


def _inputs(a: dict[str, Any], key: str, where: str, allow_empty: bool = False) -> np.ndarray:
    try:
        x = np.asarray(a[key], dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: array {key!r} cannot be read as numbers ({exc})") from None
    if x.ndim < 2:
        raise DataError(f"{where}: array {key!r} must have shape (N, features...), got {x.shape}")
    if len(x) == 0 and not allow_empty:
        raise DataError(f"{where}: array {key!r} is empty (0 samples)")
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        raise DataError(f"{where}: {int(bad.sum())} inputs contain NaN or inf (first at sample {int(np.argmax(bad))})")
    return x


def _labels(a: dict[str, Any], key: str, n: int, where: str) -> np.ndarray:
    y = np.asarray(a[key])
    if y.ndim != 1 or len(y) != n:
        x_key = key.replace("y", "x", 1)
        raise DataError(f"{where}: {x_key} has {n} samples but {key} has shape {y.shape}; expected ({n},)")
    if y.dtype.kind not in "biuf":
        raise DataError(f"{where}: labels {key} are {y.dtype} values such as {y[0].item()!r}; expected integers "
                        "0..C-1 (map them to integers and give their names as class_names)")
    if y.dtype.kind == "f" and (not np.all(np.isfinite(y)) or np.any(y != np.round(y))):
        raise DataError(f"{where}: labels {key} must be integers 0..C-1")
    if len(y) and y.min() < 0:
        raise DataError(f"{where}: label {int(y.min())} is negative; expected 0..C-1")
    return y.astype(np.int64)


def _metadata(columns: dict[str, np.ndarray], prefix: str, n: int, against: str, where: str) -> None:
    for k, col in columns.items():
        if len(col) != n:
            raise DataError(f"{where}: metadata column {prefix}{k} has {len(col)} rows; expected {n} like {against}")


def _class_count(labels: dict[str, np.ndarray], names: list[str] | None, n_classes: int | None, where: str) -> int:
    """From class_names or data.n_classes where given; else the largest label + 1, unless that is far
    more than the labels present (one stray label of 10⁹ would make a model with 10⁹ outputs)."""
    if names and n_classes and len(names) != n_classes:
        raise DataError(f"{where}: {len(names)} class_names, but data.n_classes = {n_classes}")
    declared = len(names) if names else n_classes
    labels = {k: y for k, y in labels.items() if len(y)}  # an empty validation split has none
    key, top = max(((k, int(y.max())) for k, y in labels.items()), key=lambda kv: kv[1])
    row = int(np.argmax(labels[key] == top))
    if declared:
        if top >= declared:
            given = f"{len(names)} class_names" if names else f"data.n_classes = {declared}"
            raise DataError(f"{where}: label {top} (row {row} of {key}) out of range for {given}")
        return declared
    present = len(np.unique(np.concatenate(list(labels.values()))))
    if top + 1 > max(2 * present, present + CLASS_SLACK):
        raise DataError(f"{where}: label {top} (row {row} of {key}) implies {top + 1:,} classes, but only "
                        f"{present} different labels occur; set data.n_classes = {top + 1} (or give "
                        "class_names) if that many classes are meant")
    return top + 1


def _bundle(a: dict[str, Any], val_fraction: float, seed: int, source: str,
            n_classes: int | None = None) -> DataBundle:
    where = a.get("origin", source)
    x = _inputs(a, "x", where)
    y = _labels(a, "y", len(x), where)
    names = a.get("class_names")
    meta = a.get("meta", {})
    _metadata(meta, "meta_", len(x), "x", where)
    n = len(x)
    labels = {"y": y}
    if "x_val" in a:
        xv = _inputs(a, "x_val", where, allow_empty=True)
        labels["y_val"] = yv = _labels(a, "y_val", len(xv), where)
        if xv.shape[1:] != x.shape[1:]:
            raise DataError(f"{where}: x_val rows have shape {xv.shape[1:]}; expected {x.shape[1:]} like x")
        meta_val = a.get("meta_val", {})
        _metadata(meta_val, "meta_val_", len(xv), "x_val", where)
        train_idx, val_idx = np.arange(n), np.arange(n, n + len(xv))
        x_all, y_all = np.concatenate([x, xv]), np.concatenate([y, yv])
        meta_all = {k: np.concatenate([meta[k], meta_val[k]]) for k in meta if k in meta_val}
    else:
        perm = np.random.default_rng(seed).permutation(n)
        n_val = int(math.floor(n * val_fraction))
        val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        x_all, y_all, meta_all = x, y, meta
    if x_all.ndim == 3:  # (N, H, W) images get a channel axis
        x_all = x_all[:, None]
    n_classes = _class_count(labels, names, n_classes, where)
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
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2 ** 64)  # any int64 seed
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return self._perm[k * self.batch_size:(k + 1) * self.batch_size]
