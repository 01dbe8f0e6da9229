"""The report's blocks laid out on A4 or Letter pages with Qt's own PDF writer: no extra dependency.

The painter works at 96 dpi (pyqtgraph's text and layout come out wrong at print resolutions);
plots arrive drawn by the GUI's renderer, as SVG that goes into the PDF as vectors or, for plots
too dense for vectors, as a PNG of more pixels than the layout's. Pagination is ours,
so a heading never ends a page, a figure is never split, and a long table breaks between rows with
its header repeated.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PySide6 import QtCore, QtGui, QtSvg

from .report_html import ASSETS, Block, Figure, Html, Table, table_html

DPI = 96
MARGIN_MM = 15.0
GAP = 6  # pixels between blocks
FOOTER = 18  # pixels kept free at the bottom of each page for the page number
FIGURE_ASPECT = 0.38  # height / width of a plot on paper: three plots and their captions fit a page
PAGE_SIZES = {"a4": QtGui.QPageSize.PageSizeId.A4, "letter": QtGui.QPageSize.PageSizeId.Letter}


@dataclass
class Picture:
    """A drawn plot: ``fmt`` "svg" (vectors) or "png" (any resolution; it is scaled to its box)."""

    fmt: str
    data: bytes


class Pages:
    """A painter on a PDF writer that knows where the next block goes and starts pages as needed."""

    def __init__(self, path: Path, page: str, title: str):
        if page not in PAGE_SIZES:
            raise ValueError(f"page: got {page!r}, expected one of {sorted(PAGE_SIZES)}")
        self.writer = QtGui.QPdfWriter(str(path))
        self.writer.setPageSize(QtGui.QPageSize(PAGE_SIZES[page]))
        self.writer.setPageMargins(QtCore.QMarginsF(*[MARGIN_MM] * 4), QtGui.QPageLayout.Unit.Millimeter)
        self.writer.setResolution(DPI)
        self.writer.setTitle(title)
        self.writer.setCreator("TrainDx")
        area = self.writer.pageLayout().paintRectPixels(DPI)
        self.width, self.height = area.width(), area.height() - FOOTER
        self.css = (ASSETS / "print.css").read_text(encoding="utf-8")
        self.painter = QtGui.QPainter(self.writer)
        self.y = 0.0
        self.number = 1

    # -- measuring ------------------------------------------------------------------------------
    def document(self, body: str) -> QtGui.QTextDocument:
        doc = QtGui.QTextDocument()
        doc.documentLayout().setPaintDevice(self.writer)
        doc.setDefaultStyleSheet(self.css)
        doc.setDocumentMargin(0)
        doc.setTextWidth(self.width)
        doc.setHtml(body)
        return doc

    def space(self) -> float:
        return self.height - self.y

    # -- drawing --------------------------------------------------------------------------------
    def new_page(self) -> None:
        self.footer()
        self.writer.newPage()
        self.number += 1
        self.y = 0.0

    def ensure(self, height: float) -> None:
        """A new page unless ``height`` fits below; a block taller than a page starts at the top."""
        if self.y > 0 and height > self.space():
            self.new_page()

    def draw_document(self, doc: QtGui.QTextDocument) -> None:
        self.painter.save()
        self.painter.translate(0, self.y)
        doc.drawContents(self.painter)
        self.painter.restore()
        self.y += doc.size().height() + GAP

    def draw_picture(self, picture: Picture, height: float) -> None:
        box = QtCore.QRectF(0, self.y, self.width, height)
        if picture.fmt == "svg":
            QtSvg.QSvgRenderer(QtCore.QByteArray(picture.data)).render(self.painter, box)
        elif picture.fmt == "png":
            self.painter.drawImage(box, QtGui.QImage.fromData(picture.data, "PNG"))
        else:
            raise ValueError(f"picture format: got {picture.fmt!r}, expected 'svg' or 'png'")
        self.y += height

    def footer(self) -> None:
        self.painter.save()
        self.painter.setPen(QtGui.QColor("#6b7280"))
        font = self.painter.font()
        font.setPointSizeF(7.5)
        self.painter.setFont(font)
        self.painter.drawText(QtCore.QRectF(0, self.height + 4, self.width, FOOTER - 4),
                              int(QtCore.Qt.AlignmentFlag.AlignRight), f"page {self.number}")
        self.painter.restore()

    def finish(self) -> int:
        self.footer()
        self.painter.end()
        return self.number


# ---------------------------------------------------------------------------------------------
# Blocks on pages
# ---------------------------------------------------------------------------------------------
def write_pdf(parts: list[Block], path: Path, page: str, title: str,
              picture_for: Callable[[Figure, int, int], Picture]) -> int:
    """Lay ``parts`` out on pages and write the PDF; returns the number of pages."""
    pages = Pages(path, page, title)
    for i, block in enumerate(parts):
        pages.ensure(_lead_height(pages, parts, i))
        if isinstance(block, Html):
            _draw_html(pages, block)
        elif isinstance(block, Table):
            _draw_table(pages, block)
        else:
            _draw_figure(pages, block, picture_for)
    return pages.finish()


def _lead_height(pages: Pages, parts: list[Block], i: int) -> float:
    """Height that must fit on this page before block ``i`` starts: the block itself, or for a chain
    of headings the headings plus the start of what they introduce."""
    total = 0.0
    for block in parts[i:]:
        if isinstance(block, Table):
            return total + _table_height(pages, block, 1)
        total += _height(pages, block) + GAP
        if not (isinstance(block, Html) and block.keep_with_next):
            return total
    return total


def _height(pages: Pages, block: Block) -> float:
    if isinstance(block, Html):
        return min(pages.document(block.html).size().height(), pages.height)
    return _figure_height(pages, block)


def _draw_html(pages: Pages, block: Html) -> None:
    doc = pages.document(block.html)
    if doc.size().height() <= pages.space():
        pages.draw_document(doc)
        return
    doc.setPageSize(QtCore.QSizeF(pages.width, pages.height))  # Qt moves lines across page breaks
    for k in range(doc.pageCount()):
        if k:
            pages.new_page()
        pages.painter.save()
        pages.painter.translate(0, -k * pages.height)
        doc.drawContents(pages.painter, QtCore.QRectF(0, k * pages.height, pages.width, pages.height))
        pages.painter.restore()
    pages.y = doc.size().height() - (doc.pageCount() - 1) * pages.height + GAP


def _table_doc(pages: Pages, t: Table, rows: list[str]) -> QtGui.QTextDocument:
    return pages.document(table_html(Table(t.head, rows, t.css_class)))


def _table_height(pages: Pages, t: Table, n: int) -> float:
    return _table_doc(pages, t, t.rows[:n]).size().height()


def _draw_table(pages: Pages, t: Table) -> None:
    """Rows in page-sized chunks, each found by bisection on the laid-out height, header repeated."""
    start = 0
    while True:
        lo, hi = 0, len(t.rows) - start  # most rows that fit is in [lo, hi]
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if _table_doc(pages, t, t.rows[start:start + mid]).size().height() <= pages.space():
                lo = mid
            else:
                hi = mid - 1
        if lo == 0 and start < len(t.rows) and pages.y > 0:
            pages.new_page()
            continue
        n = max(lo, 1) if start < len(t.rows) else 0  # a row taller than a page is drawn clipped
        pages.draw_document(_table_doc(pages, t, t.rows[start:start + n]))
        start += n
        if start >= len(t.rows):
            return
        pages.new_page()


def _figure_height(pages: Pages, f: Figure) -> float:
    return round(pages.width * FIGURE_ASPECT) + pages.document(_caption(f)).size().height()


def _caption(f: Figure) -> str:
    return f'<p class="caption">{f.caption}</p>'


def _draw_figure(pages: Pages, f: Figure, picture_for: Callable[[Figure, int, int], Picture]) -> None:
    height = round(pages.width * FIGURE_ASPECT)
    pages.draw_picture(picture_for(f, pages.width, height), height)
    pages.y += 2
    pages.draw_document(pages.document(_caption(f)))
