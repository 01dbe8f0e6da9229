"""A slice's identity across evaluations, and how its error changed between two of them.

Slices found at different evaluations are the same slice when their members overlap (Jaccard
index at least ``MIN_JACCARD``): each keeps a track number for the whole run, and its latest members
are followed at every later evaluation, found significant again or not, so its error over training
is known from the moment it was first found. ``error_change`` compares two evaluations' tracked
errors; findings use it, and so can any reader of a run file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

MIN_JACCARD = 0.5
MAX_TRACKS = 32  # tracks kept at most; the one reported longest ago goes first


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|a ∩ b| / |a ∪ b| of two id arrays."""
    inter = len(np.intersect1d(a, b, assume_unique=True))
    union = len(a) + len(b) - inter
    return inter / union if union else 0.0


def match(previous: Sequence[np.ndarray], current: Sequence[np.ndarray],
          min_jaccard: float = MIN_JACCARD) -> list[int | None]:
    """For each current slice, the index of the previous slice it continues, or None: pairs are
    taken by decreasing overlap, each previous slice continued at most once."""
    pairs = sorted(((jaccard(p, c), i, j) for i, p in enumerate(previous) for j, c in enumerate(current)),
                   reverse=True)
    out: list[int | None] = [None] * len(current)
    used: set[int] = set()
    for overlap, i, j in pairs:
        if overlap < min_jaccard:
            break
        if i not in used and out[j] is None:
            out[j] = i
            used.add(i)
    return out


@dataclass
class Track:
    number: int
    ids: np.ndarray  # the latest members, sorted
    description: str
    last_step: int


class SliceTracker:
    """Track numbers for the slices of successive evaluations, and ``n_slots`` line slots for the
    plots: a new slice takes a free slot, or the slot of the slot-holder reported longest ago."""

    def __init__(self, n_slots: int):
        self.tracks: list[Track] = []
        self.slots: list[int | None] = [None] * n_slots
        self.next_number = 1

    def update(self, step: int, members: Sequence[np.ndarray], descriptions: Sequence[str]) -> list[int]:
        """Track numbers of this evaluation's slices (given best first)."""
        members = [np.unique(np.asarray(m, np.int64)) for m in members]
        continued = match([t.ids for t in self.tracks], members)
        numbers = []
        for ids, text, i in zip(members, descriptions, continued):
            if i is None:
                self.tracks.append(Track(self.next_number, ids, text, step))
                self.next_number += 1
                track = self.tracks[-1]
            else:
                track = self.tracks[i]
                track.ids, track.description, track.last_step = ids, text, step
            numbers.append(track.number)
        self.tracks = sorted(self.tracks, key=lambda t: -t.last_step)[:MAX_TRACKS]
        self._assign_slots(numbers)
        return numbers

    def _assign_slots(self, current: list[int]) -> None:
        last = {t.number: t.last_step for t in self.tracks}
        for number in current:
            if number in self.slots:
                continue
            free = [k for k, n in enumerate(self.slots) if n is None or n not in last]
            if not free:
                free = [k for k, n in enumerate(self.slots) if n not in current]
                free.sort(key=lambda k: last[self.slots[k]])
            if free:
                self.slots[free[0]] = number

    def track(self, number: int) -> Track | None:
        return next((t for t in self.tracks if t.number == number), None)

    def rows(self, ids: np.ndarray) -> dict[int, np.ndarray]:
        """Where each track's members are among an evaluation's ``ids`` (those present)."""
        order = np.argsort(ids)
        out = {}
        for t in self.tracks:
            pos = order[np.minimum(np.searchsorted(ids, t.ids, sorter=order), len(ids) - 1)]
            out[t.number] = pos[ids[pos] == t.ids]
        return out

    def errors(self, ids: np.ndarray, errors: np.ndarray,
               rows: dict[int, np.ndarray] | None = None) -> dict[int, tuple[float, int]]:
        """(error rate, members present) of every track at an evaluation with these ids and errors
        (``rows``: ``self.rows(ids)``, if already at hand)."""
        return {number: (float(errors[at].mean()) if len(at) else float("nan"), len(at))
                for number, at in (self.rows(ids) if rows is None else rows).items()}

    # -- checkpoints: numbers, strings and lists only ---------------------------------------------
    def state_dict(self) -> dict:
        return {"next_number": self.next_number, "slots": [-1 if n is None else n for n in self.slots],
                "tracks": [{"number": t.number, "ids": t.ids.tolist(), "description": t.description,
                            "last_step": t.last_step} for t in self.tracks]}

    def load_state_dict(self, state: dict) -> None:
        self.next_number = int(state["next_number"])
        self.slots = [None if n < 0 else int(n) for n in state["slots"]]
        self.tracks = [Track(int(t["number"]), np.asarray(t["ids"], np.int64), str(t["description"]),
                             int(t["last_step"])) for t in state["tracks"]]


@dataclass(frozen=True)
class ErrorChange:
    track: int
    before: float
    after: float

    @property
    def change(self) -> float:
        return self.after - self.before


def error_change(before: Mapping[int, float], after: Mapping[int, float]) -> list[ErrorChange]:
    """How the error rate of each slice tracked at both evaluations changed, largest change first.
    ``before`` and ``after`` map track numbers to error rates (e.g. ``tracked_errors`` of two rows of
    the ``error_slices/slices`` series); tracks missing from either, or NaN there, are left out."""
    out = [ErrorChange(int(k), float(before[k]), float(after[k])) for k in after
           if k in before and np.isfinite(before[k]) and np.isfinite(after[k])]
    return sorted(out, key=lambda c: (-abs(c.change), c.track))
