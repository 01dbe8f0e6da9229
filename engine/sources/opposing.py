"""``synthetic-opposing``: 8×8 images with a planted pair of opposing-signal groups (Rosenfeld &
Risteski, "Outliers with Opposing Signals Have an Outsized Effect on Neural Network Optimization").

Ten classes, each a fixed pattern of Gaussian blobs plus pixel noise. Two planted groups, one in
class 0 and one in class 1, carry only a faint copy of their class pattern and share one large
extra feature, a bright 2×2 patch in the top-left corner: the feature says "0 or 1" loudly and
nothing about which, so the two groups pull the network's use of it in opposite directions. A
control group, twice as large, in class 2, is just as hard but shares nothing: each of its members
looks like a sample of some other class (3–9, drawn at random) yet is labelled 2.

Every sample's group is in the metadata column ``group`` ("a", "b", "control" or "none"); sample ids
are row indices, so the planted ids are known wherever the run file goes. Full-batch gradient
descent on the square loss shows the effect (assets/examples/opposing-signals.toml).
"""
from __future__ import annotations

import numpy as np

from ..config import Field

SIDE = 8
CLASSES = 10
SIGNAL = 3.0  # norm of a class pattern in an ordinary sample
NOISE = 0.5  # pixel noise, standard deviation
FAINT = 0.3  # share of the class pattern left in the planted groups' samples
BLOBS = 3  # Gaussian blobs per class pattern
GROUP_A, GROUP_B, CONTROL = 0, 1, 2  # the classes of the planted groups and of the control

OPTIONS = {
    "n_samples": Field(1000, int, "samples in all, training and validation together", min=100),
    "group_share": Field(0.03, float, "share of the samples in each of the two planted groups; the "
                         "control group is twice as large (0: nothing planted)", min=0.0, max=0.05),
    "feature_size": Field(50.0, float, f"norm of the feature both groups share (a class pattern's norm "
                          f"is {SIGNAL:g})", min=0.0),
    "seed": Field(0, int, "seed of the generator: the data set itself (run.seed still sets the split, "
                  "the initialisation and the batch order)", min=0),
}


def class_patterns(rng: np.random.Generator) -> np.ndarray:
    """(CLASSES, SIDE, SIDE) blob patterns of unit norm."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    out = np.zeros((CLASSES, SIDE, SIDE))
    for c in range(CLASSES):
        for _ in range(BLOBS):
            cy, cx = rng.uniform(1, SIDE - 2, 2)
            out[c] += rng.choice([-1.0, 1.0]) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0)
    return out / np.linalg.norm(out.reshape(CLASSES, -1), axis=1)[:, None, None]


def load(options: dict) -> dict:
    n, share = options["n_samples"], options["group_share"]
    rng = np.random.default_rng(options["seed"])
    patterns = class_patterns(rng)
    y = rng.permutation(np.arange(n) % CLASSES)
    group = np.full(n, "none", dtype=object)
    size = int(round(share * n))
    look = y.copy()  # whose pattern each sample shows
    strength = np.full(n, SIGNAL)
    if size:
        a = rng.choice(np.flatnonzero(y == GROUP_A), size, replace=False)
        b = rng.choice(np.flatnonzero(y == GROUP_B), size, replace=False)
        control = rng.choice(np.flatnonzero(y == CONTROL), 2 * size, replace=False)
        group[a], group[b], group[control] = "a", "b", "control"
        strength[a] = strength[b] = FAINT * SIGNAL
        look[control] = rng.integers(CONTROL + 1, CLASSES, len(control))
    x = strength[:, None, None] * patterns[look] + rng.normal(scale=NOISE, size=(n, SIDE, SIDE))
    shared = (group == "a") | (group == "b")
    x[shared, :2, :2] += options["feature_size"] / 2  # a 2×2 patch whose norm is feature_size
    return {"x": x.astype(np.float32), "y": y.astype(np.int64), "class_names": [str(c) for c in range(CLASSES)],
            "meta": {"group": group.astype(str)}, "origin": "synthetic-opposing"}
