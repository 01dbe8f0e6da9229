"""Recently opened run files and configs, remembered in the settings, newest first."""
from __future__ import annotations

from pathlib import Path

from PySide6 import QtCore, QtWidgets

MAX_RECENT = 10


class RecentFiles(QtCore.QObject):
    """Lists of paths kept under settings keys ("recent_runs", "recent_configs")."""

    changed = QtCore.Signal(str)  # the key

    def __init__(self, settings: QtCore.QSettings, parent=None):
        super().__init__(parent)
        self.settings = settings

    def paths(self, key: str) -> list[str]:
        value = self.settings.value(key, [])
        if isinstance(value, str):
            value = [value]
        return [v for v in (value or []) if v]

    def add(self, key: str, path) -> None:
        path = str(Path(path).resolve())
        items = [path] + [p for p in self.paths(key) if p != path]
        self.settings.setValue(key, items[:MAX_RECENT])
        self.changed.emit(key)


def fill_menu(menu: QtWidgets.QMenu, paths: list[str], slot) -> None:
    """One action per path, calling ``slot(path)``; the menu is disabled when there is none."""
    menu.clear()
    for p in paths:
        menu.addAction(p, lambda p=p: slot(p))
    menu.setEnabled(bool(paths))
