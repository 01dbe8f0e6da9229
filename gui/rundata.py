"""One run's series held in memory for drawing, fed by the file poller (live) or read at once.

Qt-free: the live widgets, the static renderer and the report all draw from a ``RunData``. The
GUI thread only appends the rows a worker read; smoothing and wall-time mapping are cached and
extended with the new rows only, so a frame never recomputes a million-point series.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .reduce import Ema, Grow, value_at

WALL = "wall_time"
NONE_FOUND = "nothing recorded at this step (the analysis found none)"  # a row that holds nothing, as shown


@dataclass
class _Series:
    steps: Grow
    values: Grow | list  # a list for JSON series (parsed objects)
    smoothed: dict = field(default_factory=dict)  # (column, weight) -> (Ema, Grow)

    def __len__(self) -> int:
        return len(self.steps)


class RunData:
    """Series of one run by name: ``steps(name)``, ``values(name)``, smoothed and wall-time views."""

    def __init__(self, label: str = "", path: str = ""):
        self.label = label
        self.path = path
        self.status = "unknown"
        self.views: dict[str, list[dict]] = {}
        self.titles: dict[str, str] = {}
        self.events: list[dict] = []
        self.config: dict = {}
        self.meta: dict = {}
        self._series: dict[str, _Series] = {}
        self._wall_cache: dict[str, tuple[int, np.ndarray]] = {}
        self.version = 0  # bumped on every change; widgets redraw when it moves

    # -- feeding ----------------------------------------------------------------------------
    def extend(self, name: str, steps: np.ndarray, values) -> None:
        if len(steps) == 0:
            return
        s = self._series.get(name)
        if s is None:
            vals = list(values) if isinstance(values, list) else Grow(np.asarray(values))
            self._series[name] = _Series(Grow(np.asarray(steps, dtype=np.int64)), vals)
        else:
            s.steps.append(steps)
            if isinstance(s.values, list):
                s.values.extend(values)
            else:
                s.values.append(values)
        self.version += 1

    @classmethod
    def from_reader(cls, run, names=None) -> "RunData":
        """Everything (or only ``names``, plus wall time) read at once from an open RunReader."""
        data = cls(label=_label_of(run), path=str(run.path))
        data.update_meta(run)
        wanted = run.names() if names is None else [n for n in {*names, WALL} if n in run.names()]
        for name in wanted:
            data.extend(name, *run.series(name))
        return data

    def emptied(self) -> "RunData":
        """A RunData with this one's description (label, status, views, config) and no rows."""
        out = RunData(self.label, self.path)
        out.status, out.views, out.titles, out.events = self.status, self.views, self.titles, self.events
        out.config, out.meta = self.config, self.meta
        return out

    def update_meta(self, run) -> None:
        self.status = run.status
        self.views = run.views()
        self.titles = run.plugin_titles()
        self.events = run.events()
        self.config = run.config
        self.meta = run.meta
        self.version += 1

    # -- reading ----------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self._series)

    def has(self, name: str) -> bool:
        return name in self._series and len(self._series[name]) > 0

    def length(self, name: str) -> int:
        return len(self._series[name]) if name in self._series else 0

    def steps(self, name: str) -> np.ndarray:
        s = self._series.get(name)
        return s.steps.array if s is not None else np.zeros(0, np.int64)

    def values(self, name: str):
        s = self._series.get(name)
        if s is None:
            return np.zeros(0)
        return s.values if isinstance(s.values, list) else s.values.array

    def column(self, name: str, col: int | None) -> np.ndarray:
        v = self.values(name)
        return v if col is None else v[:, col]

    def smoothed(self, name: str, col: int | None, weight: float) -> np.ndarray:
        """The column smoothed with the debiased EMA, extended with new rows only."""
        if weight <= 0:
            return self.column(name, col)
        s = self._series[name]
        ema, out = s.smoothed.get((col, weight), (None, None))
        if ema is None:
            ema = Ema(weight)
            out = Grow(ema.extend(self.column(name, col)))
            s.smoothed[(col, weight)] = (ema, out)
        elif len(out) < len(s):
            out.append(ema.extend(self.column(name, col)[len(out):]))
        return out.array

    def x(self, name: str, mode: str = "step") -> np.ndarray:
        """x positions of a series: its steps, or seconds since the start (``mode="wall_time"``)."""
        steps = self.steps(name)
        if mode == "step" or not self.has(WALL):
            return steps.astype(float)
        n, cached = self._wall_cache.get(name, (-1, None))
        key = len(steps) + 7919 * self.length(WALL)
        if n != key:
            cached = np.interp(steps, self.steps(WALL), self.values(WALL))
            self._wall_cache[name] = (key, cached)
        return cached

    def step_of_x(self, x: float, mode: str = "step") -> int:
        """The step shown at x (inverse of ``x``)."""
        if mode == "step" or not self.has(WALL):
            return int(round(x))
        return int(round(np.interp(x, self.values(WALL), self.steps(WALL))))

    def row_at(self, name: str, step: int | None):
        """(step, row) at ``step`` or the last before it; the latest row when ``step`` is None."""
        steps = self.steps(name)
        if len(steps) == 0:
            return None, None
        if step is None:
            return int(steps[-1]), self.values(name)[-1]
        return value_at(steps, self.values(name), step)


def _label_of(run) -> str:
    try:
        return str(run.config["run"]["name"])
    except (KeyError, TypeError, ValueError):
        return run.path.stem
