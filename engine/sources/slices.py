"""``synthetic-slices``: 8×8 images with error slices planted where a real model comes to fail, and
uniform label noise that forms none, for known-answer checks of slice discovery.

Each class is a smooth random pattern; a sample is its class's pattern plus pixel noise, so a small
network learns the classes almost perfectly and its remaining errors are the planted ones:

- **rare**: the devices ``device = 1`` at ``site = 4`` (``rare_share`` of all samples) store their
  images as negatives, and that site's annotation tool shifted every label by five classes in
  training. A model learns "negative of class c is c + 5", so on the (correctly labelled)
  validation split it fails the whole conjunction. The metadata describe this slice; the images
  show it too. (A shift of five never gives the stamped slice's confusion, 2 → 3, so each planted
  slice has answers of its own.)
- **stamped**: in training, annotators labelled every class-2 image that carries a stamp (a bright
  corner) as a 3, and many real 3s carry the stamp too. The model takes the stamp as the cue for 3,
  so in validation the stamped 2s (``stamped_share`` of class 2) are predicted 3. No metadata
  column records the stamp: only the embeddings, labels and predictions show this slice.
- **noise**: ``label_noise`` of all labels, in both splits, are replaced by a uniformly drawn other
  class. Those errors are spread evenly over inputs and metadata: they form no slice.

``planted = false`` draws the same data without the rare and the stamped slices (noise and
metadata stay): nothing in it is a slice. The data depend only on these options and ``seed``.
Metadata: ``site`` (0–5), ``device`` (0–3), ``operator`` (0–4) and ``exposure`` (a number) are all
drawn independently of the class; only the planted conjunction ties two of them to the errors.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from engine.config import Field

N_CLASSES, SIDE = 10, 8
SITES, DEVICES, OPERATORS = 6, 4, 5
RARE_SITE, RARE_DEVICE = 4, 1
RARE_SHIFT = 5
STAMPED_CLASS, STAMP_CLASS = 2, 3  # stamped 2s were labelled 3 in training
STAMP_ON_REAL = 0.5  # share of real 3s with the stamp, in both splits
PIXEL_NOISE = 0.12

OPTIONS: dict[str, Field] = {
    "n_train": Field(8000, int, "training samples", min=100),
    "n_val": Field(2000, int, "validation samples", min=100),
    "planted": Field(True, bool, "plant the rare and the stamped slice (false: nothing to find)"),
    "rare_share": Field(0.02, float, "share of samples at site 4 with device 1 (the rare slice)",
                        min=0.0, max=0.2),
    "stamped_share": Field(0.3, float, "share of class 2 carrying the stamp (the stamped slice)",
                           min=0.0, max=0.9),
    "label_noise": Field(0.05, float, "share of labels replaced by another class, uniformly", min=0.0,
                         max=0.5),
    "seed": Field(0, int, "seed of the generated data (the run's own seed splits and trains)", min=0),
}


def load(options: dict[str, Any]) -> dict[str, Any]:
    o = {k: options.get(k, f.default) for k, f in OPTIONS.items()}
    rng = np.random.default_rng([o["seed"], 13])
    prototypes = _prototypes(rng)
    train = _split(rng, prototypes, o["n_train"], o, training=True)
    val = _split(rng, prototypes, o["n_val"], o, training=False)
    return {"x": train["x"], "y": train["y"], "meta": train["meta"],
            "x_val": val["x"], "y_val": val["y"], "meta_val": val["meta"],
            "class_names": [str(c) for c in range(N_CLASSES)], "origin": "synthetic-slices"}


def planted_masks(options: dict[str, Any]) -> dict[str, np.ndarray]:
    """The validation split's planted slices as boolean masks over its rows (the known answers):
    ``rare``, ``stamped`` and ``noise`` (the rows whose label was replaced)."""
    o = {k: options.get(k, f.default) for k, f in OPTIONS.items()}
    rng = np.random.default_rng([o["seed"], 13])
    prototypes = _prototypes(rng)
    _split(rng, prototypes, o["n_train"], o, training=True)
    return _split(rng, prototypes, o["n_val"], o, training=False)["planted"]


def _prototypes(rng: np.random.Generator) -> np.ndarray:
    """One smooth pattern per class: a few Gaussian bumps, scaled to [0, 1]."""
    r, c = np.mgrid[0:SIDE, 0:SIDE]
    out = np.zeros((N_CLASSES, SIDE, SIDE))
    for k in range(N_CLASSES):
        for _ in range(3):
            cy, cx = rng.uniform(0, SIDE - 1, size=2)
            width = rng.uniform(1.0, 2.2)
            out[k] += np.exp(-((r - cy) ** 2 + (c - cx) ** 2) / (2 * width ** 2))
        out[k] /= out[k].max()
    return out


def _split(rng: np.random.Generator, prototypes: np.ndarray, n: int, o: dict, training: bool) -> dict:
    true = rng.integers(0, N_CLASSES, size=n)
    site = rng.integers(0, SITES, size=n)
    device = rng.integers(0, DEVICES, size=n)
    operator = rng.integers(0, OPERATORS, size=n)
    exposure = np.round(rng.uniform(0.8, 1.2, size=n), 3)
    rare = np.zeros(n, bool)
    stamped = np.zeros(n, bool)
    if o["planted"]:
        rare = rng.random(n) < o["rare_share"]
        site[rare], device[rare] = RARE_SITE, RARE_DEVICE
        other = ~rare & (site == RARE_SITE) & (device == RARE_DEVICE)  # the cell holds the slice only
        device[other] = (RARE_DEVICE + 1 + rng.integers(0, DEVICES - 1, size=int(other.sum()))) % DEVICES
        stamped = (true == STAMPED_CLASS) & (rng.random(n) < o["stamped_share"]) & ~rare
    stamp = stamped | ((true == STAMP_CLASS) & (rng.random(n) < STAMP_ON_REAL) & ~rare)
    x = prototypes[true] * exposure[:, None, None] + rng.normal(0, PIXEL_NOISE, size=(n, SIDE, SIDE))
    x[rare] = 1.0 - x[rare]
    x[stamp, :2, :2] = 1.5
    y = true.copy()
    if training:
        y[rare] = (true[rare] + RARE_SHIFT) % N_CLASSES
        y[stamped] = STAMP_CLASS
    noisy = rng.random(n) < o["label_noise"]
    y[noisy] = (y[noisy] + rng.integers(1, N_CLASSES, size=int(noisy.sum()))) % N_CLASSES
    meta = {"site": site, "device": device, "operator": operator, "exposure": exposure}
    return {"x": x.astype(np.float32)[:, None], "y": y.astype(np.int64), "meta": meta,
            "planted": {"rare": rare, "stamped": stamped, "noise": noisy}}
