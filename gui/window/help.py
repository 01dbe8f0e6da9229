"""Help inside the app, offline: the README's usage and the run-file format read from the files
beside the code, and the keyboard shortcuts listed from the window's own actions."""
from __future__ import annotations

import html
from pathlib import Path

from PySide6 import QtGui, QtWidgets

ROOT = Path(__file__).resolve().parent.parent.parent
IMAGE_WIDTH = 640  # pixels: within the dialog's page
PAGES = (("Using TrainDx", ROOT / "README.md"), ("The run file", ROOT / "docs" / "run-file.md"))
MOUSE = (("Hover a plot", "move the step cursor in every plot"), ("Click a plot", "pin the cursor at that step"),
         ("Drag, wheel", "pan and zoom a plot (its ⋯ menu resets the zoom)"),
         ("Click a finding or event", "pin the cursor at its step"),
         ("Drop .h5 or .toml files", "open runs, or load a config into the form"))


def shortcuts_html(actions: list[QtGui.QAction]) -> str:
    """A table of every action with a shortcut, then what the mouse does."""
    fmt = QtGui.QKeySequence.SequenceFormat.NativeText
    rows = [(a.shortcut().toString(fmt), a.text().replace("&", ""), a.toolTip().split(" (")[0])
            for a in actions if not a.shortcut().isEmpty()]
    rows.sort(key=lambda r: r[1])
    keys = "".join(f"<tr><td><b>{html.escape(k)}</b></td><td>{html.escape(name)}</td><td>{html.escape(tip)}</td></tr>"
                   for k, name, tip in rows)
    mouse = "".join(f"<tr><td><b>{html.escape(k)}</b></td><td colspan='2'>{html.escape(what)}</td></tr>"
                    for k, what in MOUSE)
    return (f"<h2>Keyboard shortcuts</h2><table cellpadding='3'>{keys}</table>"
            f"<h2>Mouse</h2><table cellpadding='3'>{mouse}</table>")


class HelpDialog(QtWidgets.QDialog):
    """Tabs: the README, the run-file format, the shortcuts."""

    def __init__(self, actions: list[QtGui.QAction], parent=None):
        super().__init__(parent)
        self.setWindowTitle("TrainDx help")
        self.resize(820, 680)
        self.tabs = QtWidgets.QTabWidget()
        for title, path in PAGES:
            self.tabs.addTab(_markdown_page(path), title)
        shortcuts = QtWidgets.QTextBrowser()
        shortcuts.setHtml(shortcuts_html(actions))
        self.tabs.addTab(shortcuts, "Shortcuts")
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(self.tabs)
        lay.addWidget(buttons)

    def show_tab(self, title: str) -> None:
        self.tabs.setCurrentIndex(next(i for i in range(self.tabs.count()) if self.tabs.tabText(i) == title))
        self.show()
        self.raise_()


def _markdown_page(path: Path) -> QtWidgets.QTextBrowser:
    page = QtWidgets.QTextBrowser()
    page.setSearchPaths([str(path.parent), str(ROOT)])  # the README's screenshot, the docs' links
    try:
        page.setMarkdown(path.read_text(encoding="utf-8"))
    except OSError as exc:
        page.setPlainText(f"{path} could not be read ({exc.strerror}); it comes with TrainDx's source.")
    _fit_images(page.document(), IMAGE_WIDTH)
    return page


def _fit_images(doc: QtGui.QTextDocument, width: int) -> None:
    """Pictures (the README's screenshots) scaled to the page's width, keeping their shape."""
    cursor = QtGui.QTextCursor(doc)
    block = doc.begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            fragment = it.fragment()
            if fragment.charFormat().isImageFormat():
                image = fragment.charFormat().toImageFormat()
                image.setWidth(width)
                cursor.setPosition(fragment.position())
                cursor.setPosition(fragment.position() + fragment.length(), QtGui.QTextCursor.MoveMode.KeepAnchor)
                cursor.setCharFormat(image)
            it += 1
        block = block.next()
