"""A Python model's own options (``[model]`` keys beside ``name``), edited as ``key = value`` rows:
the engine passes them to the user's callable as keyword arguments, so the form cannot know them."""
from __future__ import annotations

from typing import Any

from PySide6 import QtCore, QtWidgets

from engine.config import parse_value

from .values import toml_text

RESERVED = ("name", "quantize")  # [model] keys with a meaning of their own


class OptionRows(QtWidgets.QWidget):
    """Rows of key = value (TOML values: 48, "relu", [64, 64]) and a button to add one."""

    changed = QtCore.Signal()

    def __init__(self, section: str, parent=None):
        super().__init__(parent)
        self.section = section
        self.rows: list[tuple[QtWidgets.QLineEdit, QtWidgets.QLineEdit, QtWidgets.QWidget]] = []
        self.lay = QtWidgets.QVBoxLayout(self)
        self.lay.setContentsMargins(0, 0, 0, 0)
        self.lay.setSpacing(2)
        note = QtWidgets.QLabel("Options passed to the Python model (key = value, in TOML syntax):")
        note.setWordWrap(True)
        note.setStyleSheet("color: palette(placeholder-text); font-size: 8pt;")
        self.lay.addWidget(note)
        self.add_button = QtWidgets.QToolButton(text="+ option")
        self.add_button.setToolTip("Add a keyword argument for the model's callable")
        self.add_button.clicked.connect(lambda: self.add_row())
        self.error = QtWidgets.QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #d9534f; font-size: 8pt;")
        self.error.hide()
        self.lay.addWidget(self.error)
        self.lay.addWidget(self.add_button, 0, QtCore.Qt.AlignmentFlag.AlignLeft)

    def add_row(self, key: str = "", value: str = "") -> None:
        row = QtWidgets.QWidget()
        h = QtWidgets.QHBoxLayout(row)
        h.setContentsMargins(0, 0, 0, 0)
        k, v = QtWidgets.QLineEdit(key), QtWidgets.QLineEdit(value)
        k.setPlaceholderText("key")
        k.setObjectName(f"{self.section}.option.key")
        v.setPlaceholderText("value")
        v.setObjectName(f"{self.section}.option.value")
        remove = QtWidgets.QToolButton(text="✕")
        remove.setToolTip("Remove this option")
        h.addWidget(k, 2)
        h.addWidget(QtWidgets.QLabel("="))
        h.addWidget(v, 3)
        h.addWidget(remove)
        entry = (k, v, row)
        remove.clicked.connect(lambda: self._remove(entry))
        for edit in (k, v):
            edit.textChanged.connect(self.changed)
        self.rows.append(entry)
        self.lay.insertWidget(self.lay.count() - 2, row)  # above the error line and the button
        self.changed.emit()

    def _remove(self, entry) -> None:
        self.rows.remove(entry)
        entry[2].deleteLater()
        self.changed.emit()

    def values(self) -> dict[str, Any]:
        """The rows with a key and a value (a repeated key: the last row wins, as in a dict)."""
        return {k.text().strip(): parse_value(v.text()) for k, v, _ in self.rows
                if k.text().strip() and v.text().strip()}

    def set_values(self, options: dict[str, Any]) -> None:
        for entry in list(self.rows):
            self.rows.remove(entry)
            entry[2].deleteLater()
        for key, value in options.items():
            self.add_row(key, toml_text(value))

    def problems(self) -> str | None:
        """What is wrong with the rows, one line naming the key (None when nothing is)."""
        seen = set()
        for k, v, _ in self.rows:
            key, text = k.text().strip(), v.text().strip()
            full = f"{self.section}.{key}"
            if not key and text:
                return f"{self.section}: got a value ({text}) without a key, expected key = value"
            if key and not text:
                return f"{full}: got no value, expected one in TOML syntax (e.g. 48, \"relu\", [64, 64])"
            if key and (not key.isidentifier() or key in RESERVED):
                return f"{full}: got the key {key!r}, expected a keyword argument name of the model's callable"
            if key in seen:
                return f"{full}: set twice, expected each option once"
            seen.add(key)
        return None

    def show_error(self, message: str | None) -> None:
        self.error.setText(message or "")
        self.error.setVisible(bool(message))
