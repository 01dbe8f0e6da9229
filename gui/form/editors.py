"""One config key in the form: its input widget and, under it, the engine's message when the value
is wrong. Each editor keeps the ``Field`` it was made from, so it is validated by that declaration."""
from __future__ import annotations

from typing import Any

from PySide6 import QtCore, QtWidgets

from engine.config import Field
from engine.errors import ConfigError

from .values import parse_text, show_value


class Editor(QtWidgets.QWidget):
    """One config key: an input widget plus the engine's message under it when the value is wrong."""

    changed = QtCore.Signal()

    def __init__(self, key: str, field: Field, parent=None):
        super().__init__(parent)
        self.key, self.field = key, field
        self.kind, self.default, self.optional = field.kind, field.default, field.optional
        self.choices = tuple(c for c in (field.choices or ()) if not str(c).endswith(":"))
        self.prefixes = tuple(c for c in (field.choices or ()) if str(c).endswith(":"))
        lay = QtWidgets.QGridLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setHorizontalSpacing(4)
        lay.setVerticalSpacing(1)
        self.input = self._make_input()
        self.input.setToolTip(field.help)
        self.input.setObjectName(key)
        lay.addWidget(self.input, 0, 0)
        self.browse = None
        if any(p in ("npz:", "python:") for p in self.prefixes):
            self.browse = QtWidgets.QToolButton(text="…")
            self.browse.setToolTip("Choose a file (.npz arrays or a Python file)")
            self.browse.clicked.connect(self._choose_file)
            lay.addWidget(self.browse, 0, 1)
        self.error = QtWidgets.QLabel()
        self.error.setWordWrap(True)
        self.error.setObjectName("error")
        self.error.setStyleSheet("color: #d9534f; font-size: 8pt;")
        self.error.hide()
        lay.addWidget(self.error, 1, 0, 1, 2)
        self.set(field.default)

    def _make_input(self) -> QtWidgets.QWidget:
        if self.kind is bool:
            w = QtWidgets.QCheckBox()
            w.toggled.connect(self.changed)
            return w
        if self.choices:
            w = QtWidgets.QComboBox()
            w.addItems([str(c) for c in self.choices])
            w.setEditable(bool(self.prefixes))
            w.currentTextChanged.connect(self.changed)
            if self.prefixes:
                w.lineEdit().setPlaceholderText(" or ".join(f"{p}PATH" for p in self.prefixes))
            return w
        w = QtWidgets.QLineEdit()
        if self.optional:
            w.setPlaceholderText("(not set)")
        w.textChanged.connect(self.changed)
        return w

    def get(self) -> Any:
        w = self.input
        if isinstance(w, QtWidgets.QCheckBox):
            return w.isChecked()
        if isinstance(w, QtWidgets.QComboBox):
            return w.currentText().strip()
        return parse_text(w.text(), self.kind, self.field.item_kind)

    def set(self, value: Any) -> None:
        w = self.input
        if isinstance(w, QtWidgets.QCheckBox):
            w.setChecked(bool(value))
        elif isinstance(w, QtWidgets.QComboBox):
            text = str(value)
            if w.findText(text) < 0 and w.isEditable():
                w.setEditText(text)
            else:
                w.setCurrentIndex(max(0, w.findText(text)))
        else:
            w.setText(show_value(value))

    def own_error(self) -> str | None:
        """The declaration's message for the value shown, if it is wrong."""
        value = self.get()
        if value is None:
            return None
        try:
            self.field.validate(self.key, value)
        except ConfigError as exc:
            return str(exc)
        return None

    def show_error(self, message: str | None) -> None:
        self.error.setText(message or "")
        self.error.setVisible(bool(message))
        self.input.setProperty("invalid", bool(message))
        self.input.setStyleSheet("border: 1px solid #d9534f;" if message else "")

    def _choose_file(self) -> None:
        path, chosen = QtWidgets.QFileDialog.getOpenFileName(
            self, "Choose a file", "", "NumPy arrays (*.npz);;Python file (*.py);;All files (*)")
        if not path:
            return
        if path.endswith(".py"):
            name, ok = QtWidgets.QInputDialog.getText(self, "Python file", "Name of the function or class in it:",
                                                      text="make_data" if self.key == "data.source" else "Net")
            if not ok:
                return
            self.set(f"python:{path}:{name}")
        else:
            self.set(f"npz:{path}")


class EditorGroup(QtCore.QObject):
    """Editors for a table of declared fields (``{name: Field}``) as rows of a form layout, keyed
    ``prefix.name`` and labelled ``label_prefix + name``; rows of several groups can share one
    layout (so their labels line up) and be shown or hidden together."""

    changed = QtCore.Signal()

    def __init__(self, prefix: str, fields: dict[str, Field], form: QtWidgets.QFormLayout, label_prefix: str = ""):
        super().__init__(form)
        self.form = form
        self.editors: dict[str, Editor] = {}
        for name, f in fields.items():
            ed = Editor(f"{prefix}.{name}", f)
            ed.changed.connect(self.changed)
            self.editors[name] = ed
            label = QtWidgets.QLabel(label_prefix + name)
            label.setToolTip(f.help)
            form.addRow(label, ed)

    def values(self) -> dict[str, Any]:
        return {k: v for k, ed in self.editors.items() if (v := ed.get()) is not None}

    def set_values(self, table: dict) -> None:
        """Every field from ``table``, or its default where the table has none."""
        for k, ed in self.editors.items():
            ed.set(table.get(k, ed.default))

    def by_key(self) -> dict[str, Editor]:
        return {ed.key: ed for ed in self.editors.values()}

    def set_visible(self, on: bool) -> None:
        for ed in self.editors.values():
            self.form.setRowVisible(ed, on)


def form_layout(parent: QtWidgets.QWidget | None = None) -> QtWidgets.QFormLayout:
    form = QtWidgets.QFormLayout(parent)
    form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    return form
