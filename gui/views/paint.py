"""One entry point for every view kind: ``paint(canvas, view, traces, opts, cursor)``."""
from __future__ import annotations

from .canvas import TableCanvas
from .options import STEP_KINDS, PlotOptions, Trace
from .reliability import paint_reliability
from .rows import paint_curve, paint_histogram, paint_image_grid, paint_scatter, paint_table
from .steps import paint_band, paint_heatmap, paint_line, place_cursor

PAINTERS = {"line": paint_line, "band": paint_band, "heatmap": paint_heatmap, "histogram": paint_histogram,
            "curve": paint_curve, "reliability": paint_reliability, "scatter": paint_scatter,
            "table": paint_table, "image_grid": paint_image_grid}


def paint(canvas, view: dict, traces: list[Trace], opts: PlotOptions, cursor: int | None) -> str:
    """Draw ``view`` on ``canvas``; returns a short note (e.g. the step a row view shows)."""
    painter = PAINTERS.get(view["kind"])
    if painter is None:
        return f"unknown view kind {view['kind']!r}"
    if isinstance(canvas, TableCanvas):
        return painter(canvas, view, traces, opts, cursor)
    canvas.begin()
    note = painter(canvas, view, traces, opts, cursor) if traces else "no data yet"
    canvas.end()
    if view["kind"] in STEP_KINDS:
        canvas.set_log_axes(opts.log_x, bool(opts.log_y) and view["kind"] != "heatmap")
        canvas.set_label("bottom", "wall time (s)" if opts.x_mode == "wall_time" else "step")
        canvas.set_label("left", view.get("options", {}).get("y_label"))
        place_cursor(canvas, traces, opts, cursor)
    else:
        canvas.set_log_axes(opts.log_x, bool(opts.log_y))
        canvas.set_label("bottom", view.get("options", {}).get("x_label"))
    return note
