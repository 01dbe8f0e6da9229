"""Scrolling the form must never change a setting: combo boxes and spin boxes take the mouse wheel
only once they have the focus (a click or Tab); before that the wheel scrolls the form."""
from __future__ import annotations

from PySide6 import QtCore, QtWidgets

GUARDED = (QtWidgets.QComboBox, QtWidgets.QAbstractSpinBox)


class WheelGuard(QtCore.QObject):
    """An event filter: a wheel event on an unfocused guarded widget goes on to its parent."""

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QtCore.QEvent.Type.Wheel and not obj.hasFocus():
            event.ignore()  # an ignored wheel event propagates to the parent: the scroll area
            return True
        return False

    def guard(self, root: QtWidgets.QWidget) -> None:
        """Guard every combo and spin box under ``root`` (again after widgets were added)."""
        for w in (w for kind in GUARDED for w in root.findChildren(kind)):
            w.setFocusPolicy(QtCore.Qt.FocusPolicy.StrongFocus)  # the wheel alone must not focus it
            w.installEventFilter(self)
