"""Legends: what each entry is called, and which corner of the plot the legend goes to."""
from __future__ import annotations

import numpy as np

MAX_LEGEND = 6
LEGEND_CORNERS = ((-4, 4), (4, 4), (-4, -4), (4, -4))  # offsets: top right, top left, bottom right, left


def short_name(view: dict, name: str) -> str:
    """A series' legend name: without its plugin prefix when every series of the view shares it."""
    prefixes = {n.split("/", 1)[0] for n in view["series"] if "/" in n}
    if len(prefixes) == 1 and all("/" in n for n in view["series"]) and len(view["series"]) > 1:
        return name.split("/", 1)[1]
    return name


def legend_label(view: dict, traces: list, t: int, name: str) -> str:
    """One run: the series' name. Several: the run's label, plus the series' when the view has several."""
    if len(traces) == 1:
        return name
    if len(view["series"]) == 1 and "[" not in name:
        return traces[t].label
    return f"{traces[t].label}: {name}"


def place_legend(plot, legend) -> None:
    """Move the legend to the corner where it hides the fewest drawn points (top right first)."""
    vb = plot.vb
    (x0, x1), (y0, y1) = vb.viewRange()
    size = legend.boundingRect()
    w, h = size.width() / max(vb.width(), 1.0), size.height() / max(vb.height(), 1.0)
    data = [item.getData() for item in plot.listDataItems()]
    data = [(x, y) for x, y in data if x is not None and len(x)]
    if not data:
        return
    fx = (np.concatenate([x for x, _ in data]) - x0) / ((x1 - x0) or 1.0)
    fy = (np.concatenate([y for _, y in data]) - y0) / ((y1 - y0) or 1.0)

    def hidden(offset) -> int:
        xs = fx >= 1 - w if offset[0] < 0 else fx <= w
        ys = fy >= 1 - h if offset[1] > 0 else fy <= h  # a positive y offset hangs from the top
        return int(np.count_nonzero(xs & ys & (fx >= 0) & (fx <= 1) & (fy >= 0) & (fy <= 1)))

    best = min(LEGEND_CORNERS, key=hidden)
    if tuple(legend.opts["offset"]) != best:
        legend.setOffset(best)
