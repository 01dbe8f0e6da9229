"""Light and dark themes that follow the system (Qt's colour scheme hint) unless the user picks one."""
from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets

from .views import THEMES

MODES = ("system", "light", "dark")


def resolve(mode: str) -> str:
    """'light' or 'dark' for a mode; 'system' asks Qt what the desktop uses."""
    if mode in ("light", "dark"):
        return mode
    app = QtWidgets.QApplication.instance()
    scheme = app.styleHints().colorScheme() if app is not None else QtCore.Qt.ColorScheme.Unknown
    return "dark" if scheme == QtCore.Qt.ColorScheme.Dark else "light"


def palette(name: str) -> QtGui.QPalette:
    c = THEMES[name]
    pal = QtGui.QPalette()
    role = QtGui.QPalette.ColorRole
    if name == "dark":
        colors = {role.Window: "#2b2d30", role.WindowText: c["fg"], role.Base: "#1e1f22",
                  role.AlternateBase: "#26282b", role.Text: c["fg"], role.Button: "#35373b",
                  role.ButtonText: c["fg"], role.Highlight: "#3d6fb4", role.HighlightedText: "#ffffff",
                  role.ToolTipBase: "#3c3f41", role.ToolTipText: "#e0e0e0", role.PlaceholderText: "#8a8a8a",
                  role.Link: "#6ea8fe", role.BrightText: "#ff6b6b"}
    else:
        colors = {role.Window: "#f3f3f3", role.WindowText: "#202020", role.Base: "#ffffff",
                  role.AlternateBase: "#f5f7fa", role.Text: "#202020", role.Button: "#eaeaea",
                  role.ButtonText: "#202020", role.Highlight: "#3d7bd9", role.HighlightedText: "#ffffff",
                  role.ToolTipBase: "#ffffe8", role.ToolTipText: "#202020", role.PlaceholderText: "#7a7a7a",
                  role.Link: "#1a5fb4", role.BrightText: "#c01c28"}
    for r, col in colors.items():
        pal.setColor(r, QtGui.QColor(col))
    pal.setColor(QtGui.QPalette.ColorGroup.Disabled, role.Text, QtGui.QColor("#808080"))
    pal.setColor(QtGui.QPalette.ColorGroup.Disabled, role.ButtonText, QtGui.QColor("#808080"))
    pal.setColor(QtGui.QPalette.ColorGroup.Disabled, role.WindowText, QtGui.QColor("#808080"))
    return pal


def apply(app: QtWidgets.QApplication, mode: str) -> str:
    """Style the application; returns the resolved theme name for the plots."""
    name = resolve(mode)
    app.setStyle("Fusion")
    app.setPalette(palette(name))
    for w in app.allWidgets():  # Qt resolves a style sheet's palette(...) once, when it is set: again now
        if w.styleSheet():
            w.setStyleSheet(w.styleSheet())
    return name
