"""Evaluations with planted error slices, as arrays: known answers for ``find_slices`` without
training a model (tests and benchmarks). ``engine.sources.slices`` plants slices a real model
learns to fail on; this plants them directly in what a model would output.

Rows of class k embed around a random class centre; the model predicts each row's own class
except on ``base_error`` of rows drawn uniformly (errors that form no slice). Planted, each with
``slice_error`` of its rows misclassified:

- ``region``: a sub-population of every class that embeds in one region of its own (say, blurred
  inputs), where the model guesses among the other classes;
- ``confusion``: rows of class 0 that embed between class 0 and class 1 and are predicted 1;
- ``conjunction``: rows with ``site = 3 and device = 2``, invisible in the embedding, so only the
  metadata can find them.

Metadata columns ``site`` (0–7), ``device`` (0–4), ``shift`` (0–2) and ``temperature`` (a number) are
drawn independently of everything else, apart from the planted conjunction.
"""
from __future__ import annotations

import numpy as np

N_CLASSES, DIM = 10, 32
SHARES = {"region": 0.02, "confusion": 0.015, "conjunction": 0.015}


def planted_evaluation(n: int, seed: int = 0, planted: bool = True, base_error: float = 0.05,
                       slice_error: float = 0.9) -> dict:
    """``embeddings`` (n, 32), ``labels``, ``probs`` (n, 10), ``meta`` and ``truth`` (planted slice
    name -> boolean mask; all False when ``planted`` is false)."""
    rng = np.random.default_rng([seed, 7])
    centres = rng.normal(0, 4.0, size=(N_CLASSES, DIM))
    labels = rng.integers(0, N_CLASSES, size=n)
    site, device = rng.integers(0, 8, size=n), rng.integers(0, 5, size=n)
    meta = {"site": site, "device": device, "shift": rng.integers(0, 3, size=n),
            "temperature": np.round(rng.normal(20, 3, size=n), 2)}
    emb = centres[labels] + rng.normal(size=(n, DIM))
    truth = {name: np.zeros(n, bool) for name in SHARES}
    if planted:
        kind = rng.choice(len(SHARES) + 1, size=n, p=[*SHARES.values(), 1 - sum(SHARES.values())])
        truth = {name: kind == i for i, name in enumerate(SHARES)}
        labels[truth["confusion"]] = 0
        free = ~truth["conjunction"] & (site == 3) & (device == 2)
        site[truth["conjunction"]], device[truth["conjunction"]] = 3, 2
        device[free] = (device[free] + 1) % 5  # the cell holds the planted slice only
        emb[truth["region"]] = rng.normal(0, 4.0, size=DIM) + rng.normal(size=(int(truth["region"].sum()), DIM))
        emb[truth["confusion"]] = (0.5 * centres[0] + 0.5 * centres[1]
                                   + rng.normal(size=(int(truth["confusion"].sum()), DIM)))
    predicted = labels.copy()
    wrong = rng.random(n) < base_error
    for name, mask in truth.items():
        wrong[mask] = rng.random(int(mask.sum())) < slice_error
    predicted[wrong] = (labels[wrong] + rng.integers(1, N_CLASSES, size=int(wrong.sum()))) % N_CLASSES
    if planted:
        predicted[truth["confusion"] & wrong] = 1
    logits = rng.normal(0, 0.5, size=(n, N_CLASSES))
    logits[np.arange(n), predicted] += 4.0
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return {"embeddings": emb.astype(np.float32), "labels": labels, "probs": probs / probs.sum(axis=1, keepdims=True),
            "meta": meta, "truth": truth}
