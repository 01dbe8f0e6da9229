"""Analysis report export: any run file (finished, stopped, diverged, crashed, live) as one
self-contained HTML page or a paginated PDF, with a JSON file of every number shown beside it.

``export_report`` is what the GUI's Export button and ``traindx report`` call. Plots are drawn by
``gui.views.export.rendered_view`` from the views the run file declares: the same painters as the
live plots, so a plugin needs no report-specific drawing code. Qt runs offscreen when there is no
display, so the command works on a headless server. Qt widgets draw the plots, so call
``export_report`` from the GUI thread (or a process without a GUI).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

from .reduce import MAX_WEIGHT
from .report_html import Figure, blocks, page
from .report_model import Report, gather, to_json

FORMATS = {".html": "html", ".htm": "html", ".pdf": "pdf"}
HTML_PLOT_SIZE = (720, 300)  # pixels at 96 dpi, about the shape of a PDF plot; small enough to embed
DENSE_MARKS = 1000  # a plot with more symbols than this goes into the PDF as a picture: as vectors
# each symbol costs some 130 bytes and a viewer's time to draw; a picture 0.2-0.6 MB, whatever the count
PRINT_SCALE = 3  # a dense plot's picture has 3 pixels per 96-dpi layout pixel: 288 dpi on paper
QUIET_QT_MESSAGES = ("This plugin does not support propagateSizeHints()",)


def export_report(run_path, out_path, *, smoothing: float = 0.6, json_path=None, page_size: str = "a4",
                  progress: Callable[[float, str], None] | None = None) -> Path:
    """Write the report of ``run_path`` to ``out_path`` (.html, .htm or .pdf) and the JSON of its
    numbers to ``json_path`` (default: ``out_path`` with suffix .json). Returns ``out_path``.

    ``smoothing`` is the debiased-EMA weight of the core curves; ``page_size`` "a4" or "letter" (PDF);
    ``progress(percent, text)`` is called as plots are drawn.
    """
    from engine import open_run

    out = Path(out_path)
    kind = FORMATS.get(out.suffix.lower())
    if kind is None:
        raise ValueError(f"out_path: got {str(out)!r}, expected a file name ending in .html, .htm or .pdf")
    json_out = Path(json_path) if json_path is not None else out.with_suffix(".json")
    if json_out.resolve() == out.resolve():
        raise ValueError(f"json_path: got {str(json_out)!r}, the same file as out_path")
    report_progress = progress or (lambda percent, text: None)
    with open_run(run_path) as run, quiet_qt():
        report = gather(run, smoothing)
        report_progress(5.0, "read the run file")
        draw = plot_drawer(run, report, report_progress)
        out.parent.mkdir(parents=True, exist_ok=True)
        if kind == "html":
            text = page(report, blocks(report), lambda f: draw(f, *HTML_PLOT_SIZE, screen_png))
            out.write_text(text, encoding="utf-8")
        else:
            from .report_pdf import write_pdf
            write_pdf(blocks(report), out, page_size, f"TrainDx report: {report.name}",
                      lambda f, w, h: draw(f, w, h, print_picture))
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(to_json(report), indent=1, ensure_ascii=False), encoding="utf-8")
    report_progress(100.0, f"wrote {out}")
    return out


def plot_drawer(run, report: Report, progress: Callable[[float, str], None]):
    """``draw(figure, width, height, picture) -> picture(frame, canvas)``: the figure's view drawn
    offscreen at width × height by the GUI's painters, over the run's series read once for all plots."""
    from .rundata import RunData
    from .views import ensure_app, export

    ensure_app()
    views = [p.view for s in report.sections for p in s.plots]
    names = {n for v in views for n in v["series"]} | {v["options"]["spikes"] for v in views
                                                       if v.get("options", {}).get("spikes")}  # their markers
    data = RunData.from_reader(run, names=names)
    total = max(1, sum(len(s.plots) for s in report.sections))
    done = [0]

    def draw(f: Figure, width: int, height: int, picture):
        with export.rendered_view(f.plot.view, data, None, width, height, f.plot.smoothing) as (frame, canvas):
            image = picture(frame, canvas)
        done[0] += 1
        progress(5.0 + 90.0 * done[0] / total, f"drew {f.plot.view['title']}")
        return image
    return draw


def screen_png(frame, canvas) -> bytes:
    """The plot as the window shows it: a PNG at 96 dpi (the HTML page)."""
    from .views.export import widget_image
    return widget_image(frame, "png")


def print_picture(frame, canvas):
    """The plot for paper: SVG vectors, or a PNG at PRINT_SCALE × 96 dpi where it holds more than
    DENSE_MARKS symbols. Symbols are drawn one by one as shapes (pyqtgraph's export mode): drawn
    from its pixmap atlas, an SVG embeds the whole atlas for each point, every point showing all
    the colours of the plot."""
    from .report_pdf import Picture
    from .views.export import export_mode, widget_image

    if drawn_marks(canvas) > DENSE_MARKS:
        with export_mode(frame):
            return Picture("png", raster_png(frame, PRINT_SCALE))
    return Picture("svg", widget_image(frame, "svg"))


def drawn_marks(canvas) -> int:
    """Symbols a plot draws: scatter points and line markers."""
    import pyqtgraph as pg
    from .views.export import graphics_items
    return sum(len(item.data) for item in graphics_items(canvas)
               if isinstance(item, pg.ScatterPlotItem) and item.isVisible())


def raster_png(frame, scale: int) -> bytes:
    """``frame`` drawn at ``scale`` pixels per layout pixel: the layout stays the 96-dpi one
    (pyqtgraph's text and layout come out wrong when laid out at print resolution)."""
    from PySide6 import QtCore, QtGui

    image = QtGui.QImage(frame.size() * scale, QtGui.QImage.Format.Format_RGB32)
    image.setDevicePixelRatio(scale)
    image.fill(frame.palette().window().color())
    frame.render(image)
    buf = QtCore.QBuffer()
    buf.open(QtCore.QIODevice.OpenModeFlag.WriteOnly)
    image.save(buf, "PNG")
    return bytes(buf.data())


@contextlib.contextmanager
def quiet_qt():
    """Drop the offscreen platform's harmless warnings while plots are drawn; pass on the rest."""
    from PySide6 import QtCore

    def handler(mode, context, message):
        if message not in QUIET_QT_MESSAGES:
            sys.stderr.write(message + "\n")

    previous = QtCore.qInstallMessageHandler(handler)
    try:
        yield
    finally:
        QtCore.qInstallMessageHandler(previous)


# ---------------------------------------------------------------------------------------------
# traindx report
# ---------------------------------------------------------------------------------------------
def add_command(parser) -> None:
    """Configure the ``traindx report`` subparser (registered under ``traindx.commands``)."""
    parser.description = ("Write an analysis report of a run file: findings, configuration and "
                          "environment, curves, one section per analysis, events.")
    parser.add_argument("run", help="the run file (.h5), finished, stopped, diverged, crashed or live")
    parser.add_argument("--out", required=True, help="the report: FILE.html (one self-contained file) or FILE.pdf")
    parser.add_argument("--json", help="where to write every number shown (default: the report's name with .json)")
    parser.add_argument("--page", choices=("a4", "letter"), default="a4", help="PDF page size (default a4)")
    parser.add_argument("--smoothing", type=_weight, default=0.6, metavar="W",
                        help=f"debiased-EMA weight of the core curves, in [0, {MAX_WEIGHT}] (default 0.6)")
    parser.set_defaults(func=run_command)


def _weight(text: str) -> float:
    import argparse
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= MAX_WEIGHT:
        raise argparse.ArgumentTypeError(f"got {text!r}, expected a number in [0, {MAX_WEIGHT}]")
    return value


def run_command(args) -> int:
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if not Path(args.run).is_file():
        print(f"traindx report: error: run file {args.run!r} does not exist", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        out = export_report(args.run, args.out, smoothing=args.smoothing, json_path=args.json,
                            page_size=args.page)
    except (ValueError, OSError) as exc:  # a bad --out, or not a run file
        print(f"traindx report: error: {exc}", file=sys.stderr)
        return 2
    json_out = Path(args.json) if args.json else out.with_suffix(".json")
    print(f"wrote {out} and {json_out} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m gui.report RUN.h5 --out FILE``: the same as ``traindx report``."""
    import argparse
    parser = argparse.ArgumentParser(prog="traindx report")
    add_command(parser)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
