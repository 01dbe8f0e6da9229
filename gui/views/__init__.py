"""Draws declared views (engine/plugin.py ``View``, as dicts): live in the window and as static images.

One set of painters per view family serves both: ``ViewWidget`` (live, linked step cursor,
smoothing, log axes, wall-time x, export) and ``render_view_image`` (offscreen PNG/SVG for reports).
A painter gets a canvas (a plot or a table), the view, the runs to draw (``Trace``), the plot
options and the cursor step; it asks the canvas for items by key, so a live redraw reuses them.

Modules: ``options`` (what and how to draw), ``style`` (colours, pens), ``canvas`` (drawing
surfaces), ``legend`` (entries and placement), ``steps`` / ``rows`` / ``reliability`` (painters),
``paint`` (the dispatch), ``export`` (CSV, images, offscreen rendering), ``widget`` (the live view).
"""
from .canvas import PlotCanvas
from .export import ensure_app, render_view_image
from .options import PlotOptions, Trace
from .style import PALETTE, THEMES
from .widget import ViewWidget

__all__ = ["PALETTE", "THEMES", "PlotCanvas", "PlotOptions", "Trace", "ViewWidget", "ensure_app",
           "render_view_image"]
