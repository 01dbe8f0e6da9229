"""What a plot is asked to draw: the runs (``Trace``), how (``PlotOptions``), and the axis transforms."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..reduce import log10_or_nan
from ..rundata import RunData

STEP_KINDS = ("line", "band", "heatmap")
ROW_KINDS = ("histogram", "curve", "reliability", "scatter", "table", "image_grid")


@dataclass(frozen=True)
class PlotOptions:
    """How one plot draws its data; ``smoothing`` None follows the window-wide slider."""

    smoothing: float | None = None
    log_x: bool = False
    log_y: bool | None = None  # None: the view's own ``log_y`` option
    x_mode: str = "step"  # or "wall_time"


@dataclass
class Trace:
    """One run as drawn in a plot: its data, its colour and its legend label."""

    data: RunData
    color: str
    label: str


def effective(view: dict, opts: PlotOptions, global_smoothing: float = 0.0) -> PlotOptions:
    """Options with the defaults resolved (view's log_y, the global smoothing)."""
    log_y = bool(view.get("options", {}).get("log_y", False)) if opts.log_y is None else opts.log_y
    smoothing = global_smoothing if opts.smoothing is None else opts.smoothing
    return replace(opts, log_y=log_y, smoothing=smoothing)


def x_transform(x: np.ndarray, log_x: bool) -> np.ndarray:
    if not log_x:
        return x
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, np.log10(np.where(x > 0, x, 1.0)), np.nan)


def y_transform(y: np.ndarray, log_y: bool, hidden: list[int]) -> np.ndarray:
    if not log_y:
        return y
    out, bad = log10_or_nan(y)
    hidden.append(bad)
    return out
