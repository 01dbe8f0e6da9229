"""One installed analysis in the form: enabled, its cadence, and its declared settings."""
from __future__ import annotations

from typing import Any

from PySide6 import QtCore, QtWidgets

from engine.config import Field

from .editors import Editor, EditorGroup, form_layout

EVERY_N, AT_EVAL = 0, 1  # the cadence choices


class PluginBox(QtWidgets.QGroupBox):
    """One plugin: enabled (the box's check), its cadence and its declared settings. ``listed``
    says whether the loaded file has a ``[plugins.NAME]`` table: a disabled but listed plugin stays
    in the config as ``enabled = false``, as the CLI keeps it."""

    changed = QtCore.Signal()

    def __init__(self, name: str, cls, parent=None):
        super().__init__(getattr(cls, "title", name) if cls else name, parent)
        self.name, self.cls = name, cls
        self.listed = False
        self.setCheckable(True)
        self.setObjectName(f"plugin:{name}")
        self.toggled.connect(self.changed)
        form = form_layout(self)
        if cls is None:
            return
        self.setToolTip(getattr(cls, "description", "") or "")
        self.cadence = QtWidgets.QComboBox()
        self.cadence.addItems(["every N steps", "each evaluation"])
        self.cadence.setToolTip("When the analysis runs: every N optimizer steps, or at each evaluation")
        self.every = Editor(f"plugins.{name}.every", Field(cls.default_every or 50, int, "steps between calls", min=1))
        self.cadence.currentIndexChanged.connect(lambda i: (self.every.setEnabled(i == EVERY_N), self.changed.emit()))
        self.every.changed.connect(self.changed)
        self._reset_cadence()
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.cadence)
        row.addWidget(self.every, 1)
        form.addRow("runs", row)
        self.settings_group = EditorGroup(f"plugins.{name}", {s.name: s for s in cls.settings}, form)
        self.settings_group.changed.connect(self.changed)

    def _reset_cadence(self) -> None:
        self.cadence.setCurrentIndex(AT_EVAL if self.cls.default_on == "eval" else EVERY_N)
        self.every.set(self.cls.default_every or 50)
        self.every.setEnabled(self.cadence.currentIndex() == EVERY_N)

    def table(self) -> dict:
        out: dict[str, Any] = {"enabled": self.isChecked()}
        if self.cls is None:
            return out
        if self.cadence.currentIndex() == AT_EVAL:
            out["on"] = "eval"
        else:
            out["every"] = self.every.get()
        out.update(self.settings_group.values())
        return out

    def set_table(self, table: dict | None) -> None:
        """The plugin as a ``[plugins.NAME]`` table sets it: what the table leaves out takes the
        plugin's default. None: not listed, so not ticked."""
        self.listed = table is not None
        table = table or {}
        self.setChecked(bool(table.get("enabled", True)) if self.listed else False)
        if self.cls is None:
            return
        self._reset_cadence()
        if table.get("on") == "eval":
            self.cadence.setCurrentIndex(AT_EVAL)
        elif table.get("every") is not None:
            self.cadence.setCurrentIndex(EVERY_N)
            self.every.set(table["every"])
        self.settings_group.set_values(table)

    def all_editors(self) -> dict[str, Editor]:
        if self.cls is None:
            return {}
        return {**self.settings_group.by_key(), self.every.key: self.every}


def load_plugin_classes(state=None) -> tuple[dict, dict]:
    """Installed plugins' classes by name, and the ones that failed to import with why (a task)."""
    from engine.plugin import discover, load_plugin_class
    classes, failures = {}, {}
    for name in sorted(discover()):
        try:
            classes[name] = load_plugin_class(name)
        except Exception as exc:  # a broken third-party plugin must not stop the GUI
            failures[name] = f"{type(exc).__name__}: {exc}"
    return classes, failures
