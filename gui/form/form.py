"""The run-setup form, generated from the engine's declarations (``SECTIONS``, ``MODEL_OPTIONS``,
``QUANTIZE_OPTIONS``, the built-in data sources' ``OPTIONS``) and from each installed plugin's
``settings``; a new option, source or plugin needs no GUI code.

Validation is the engine's: each field goes through its ``Field``/``Setting.validate`` and the
whole through ``RunConfig.from_dict``; a ``ConfigError`` is shown under the field its ``key`` names.
A loaded file fills the form exactly as ``RunConfig.from_toml`` reads it: what the file leaves out
takes its default, so the GUI and ``traindx run`` train the same run from the same file.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from PySide6 import QtCore, QtWidgets

from engine import sources
from engine.config import MODEL_OPTIONS, QUANTIZE_OPTIONS, SECTIONS, RunConfig
from engine.errors import ConfigError

from .editors import Editor, EditorGroup, form_layout
from .option_rows import OptionRows
from .plugin_box import PluginBox
from .wheel import WheelGuard

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent.parent / "assets" / "examples" / "digits-mlp.toml"
SECTION_TITLES = {"run": "Run", "data": "Data", "model": "Model", "optimizer": "Optimizer", "loss": "Loss"}
PYTHON = "python:"
APPLIES = {  # a field that only some choices of another field use: (that field, those choices)
    "optimizer.momentum": ("optimizer.name", ("sgd",)),
    "optimizer.nesterov": ("optimizer.name", ("sgd",)),
    "optimizer.betas": ("optimizer.name", ("adam", "adamw")),
    "optimizer.eps": ("optimizer.name", ("adam", "adamw")),
    "optimizer.step_size": ("optimizer.schedule", ("step",)),
    "optimizer.gamma": ("optimizer.schedule", ("step",)),
}


class ChoiceOptions(QtCore.QObject):
    """The options that go with a choice (a model's, a data source's): a group of rows per choice
    that declares some, in the section's own form so the labels line up; only the chosen group is
    shown. ``other`` is the widget shown for any other value (e.g. a Python model's own options)."""

    changed = QtCore.Signal()

    def __init__(self, prefix: str, options: dict[str, dict], form: QtWidgets.QFormLayout, other=None):
        super().__init__(form)
        self.form, self.other = form, other
        self.groups = {name: EditorGroup(prefix, fields, form) for name, fields in options.items()}
        for group in self.groups.values():
            group.changed.connect(self.changed)
        if other is not None:
            form.addRow(other)
            other.changed.connect(self.changed)

    def show_for(self, choice: str) -> None:
        for name, group in self.groups.items():
            group.set_visible(name == choice)
        if self.other is not None:
            self.form.setRowVisible(self.other, choice not in self.groups)

    def values(self, choice: str) -> dict[str, Any]:
        if choice in self.groups:
            return self.groups[choice].values()
        return self.other.values() if self.other is not None else {}

    def set_values(self, choice: str, table: dict) -> None:
        """The options of ``choice`` from ``table``; every other choice's back to its defaults."""
        for name, group in self.groups.items():
            group.set_values(table if name == choice else {})
        if self.other is not None:
            self.other.set_values(table if choice not in self.groups else {})
        self.show_for(choice)

    def editors(self, choice: str) -> dict[str, Editor]:
        return self.groups[choice].by_key() if choice in self.groups else {}


class ConfigForm(QtWidgets.QWidget):
    """Every RunConfig option and every plugin's settings, with the engine's validation inline.
    ``summary`` (the settings left to fix) is placed by the caller, outside the scrolling form, so
    it never pushes the fields down under the pointer."""

    validity_changed = QtCore.Signal(bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.base_dir = DEFAULT_CONFIG.parent
        self.source_path: Path | None = None
        self.sections: dict[str, EditorGroup] = {}
        self.plugin_boxes: dict[str, PluginBox] = {}
        self.unknown_plugins: dict[str, dict] = {}
        self.config: RunConfig | None = None
        self.errors: dict[str, str] = {}
        self.load_note = ""
        self._loaded: tuple | None = None  # (raw, base_dir) of the last file, for set_plugins
        self._loading = False
        self._timer = QtCore.QTimer(self, singleShot=True, interval=150)
        self._timer.timeout.connect(self.validate)
        self._wheel = WheelGuard(self)

        self.summary = QtWidgets.QLabel()
        self.summary.setWordWrap(True)
        self.summary.setObjectName("summary")
        self.summary.setStyleSheet("color: #d9534f;")
        self.summary.hide()
        outer = QtWidgets.QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        for section, fields in SECTIONS.items():
            box = QtWidgets.QGroupBox(SECTION_TITLES.get(section, section))
            form = form_layout(box)
            group = self.sections[section] = EditorGroup(section, fields, form)
            group.changed.connect(self._schedule)
            if section == "data":
                self.source_choices = ChoiceOptions("data", {n: sources.options(n) for n in sources.names()}, form)
            elif section == "model":
                self.model_options = OptionRows("model")
                self.model_choices = ChoiceOptions("model", MODEL_OPTIONS, form, other=self.model_options)
                self.quantize = QtWidgets.QCheckBox("Quantisation-aware training ([model.quantize])")
                self.quantize.setObjectName("model.quantize")
                self.quantize.setToolTip("Train with fake-quantised weights: the four settings below")
                form.addRow(self.quantize)
                self.quantize_fields = EditorGroup("model.quantize", QUANTIZE_OPTIONS, form, "quantize.")
                self.quantize.toggled.connect(lambda on: (self.quantize_fields.set_visible(on), self._schedule()))
                self.quantize_fields.set_visible(False)
                self.quantize_fields.changed.connect(self._schedule)
            outer.addWidget(box)
        for choices in (self.model_choices, self.source_choices):
            choices.changed.connect(self._schedule)
        self.editors: dict[str, Editor] = {k: e for g in self.sections.values() for k, e in g.by_key().items()}
        self.editors["model.name"].changed.connect(self._show_choice_options)
        self.editors["data.source"].changed.connect(self._show_choice_options)
        for master in {master for master, _ in APPLIES.values()}:
            self.editors[master].changed.connect(self._show_relevant)
        self.plugins_box = QtWidgets.QGroupBox("Analyses (plugins)")
        self.plugins_layout = QtWidgets.QVBoxLayout(self.plugins_box)
        self.plugins_note = QtWidgets.QLabel("loading installed plugins…")
        self.plugins_layout.addWidget(self.plugins_note)
        outer.addWidget(self.plugins_box)
        outer.addStretch(1)
        self._show_choice_options()
        self._show_relevant()
        self._wheel.guard(self)

    def _model_choice(self) -> str:
        name = self.editors["model.name"].get()
        return PYTHON if str(name).startswith(PYTHON) else name

    def _show_choice_options(self) -> None:
        self.model_choices.show_for(self._model_choice())
        self.source_choices.show_for(self.editors["data.source"].get())

    def _show_relevant(self) -> None:
        """Hide fields the chosen optimizer or schedule does not use (unless they show an error)."""
        for key, (master, choices) in APPLIES.items():
            section = key.split(".", 1)[0]
            relevant = self.editors[master].get() in choices or key in self.errors
            self.sections[section].form.setRowVisible(self.editors[key], relevant)

    def _schedule(self) -> None:
        if not self._loading:
            self._timer.start()

    # -- plugins ----------------------------------------------------------------------------------
    def set_plugins(self, classes: dict[str, Any], failures: dict[str, str]) -> None:
        """Installed plugin classes (loaded in a worker) become boxes; failed ones are listed. The
        last loaded file is applied again, now with its plugin tables."""
        self.plugins_note.setText("" if classes else "no analysis plugins installed")
        self.plugins_note.setVisible(not classes or bool(failures))
        for name, cls in sorted(classes.items()):
            box = PluginBox(name, cls)
            box.changed.connect(self._schedule)
            self.plugin_boxes[name] = box
            self.plugins_layout.addWidget(box)
        for name, message in sorted(failures.items()):
            lab = QtWidgets.QLabel(f"{name}: could not be loaded ({message})")
            lab.setWordWrap(True)
            lab.setStyleSheet("color: palette(placeholder-text);")
            self.plugins_layout.addWidget(lab)
        self._wheel.guard(self.plugins_box)
        if self._loaded is not None:
            self.set_raw(*self._loaded)
        else:
            self._schedule()

    # -- values -----------------------------------------------------------------------------------
    def raw(self) -> dict:
        """The form as a config dict, like a parsed TOML file."""
        out = {section: group.values() for section, group in self.sections.items()}
        out["model"].update(self.model_choices.values(self._model_choice()))
        if self.quantize.isChecked():
            out["model"]["quantize"] = self.quantize_fields.values()
        out["data"].update(self.source_choices.values(out["data"].get("source")))
        plugins = {name: box.table() for name, box in self.plugin_boxes.items() if box.isChecked() or box.listed}
        if plugins:
            out["plugins"] = plugins
        return out

    def set_raw(self, raw: dict, base_dir: Path | None = None) -> None:
        """Fill the form from a config dict (a parsed TOML file); missing keys take their defaults."""
        self._loading = True
        try:
            tables = {section: _table(raw, section) for section in SECTIONS}
            for section, group in self.sections.items():
                group.set_values(tables[section])
            model = tables["model"]
            options = {k: v for k, v in model.items() if k not in ("name", "quantize")}
            self.model_choices.set_values(self._model_choice(), options)
            quantize = model.get("quantize")
            self.quantize.setChecked(isinstance(quantize, dict))
            self.quantize_fields.set_values(quantize if isinstance(quantize, dict) else {})
            self.source_choices.set_values(self.editors["data.source"].get(), tables["data"])
            plugins = _table(raw, "plugins")
            for name, box in self.plugin_boxes.items():
                box.set_table(plugins.get(name) if isinstance(plugins.get(name), dict) else None)
            self.unknown_plugins = {n: t for n, t in plugins.items() if n not in self.plugin_boxes}
            if base_dir is not None:
                self.base_dir = Path(base_dir)
        finally:
            self._loading = False
        self.validate()

    def load_toml(self, path: str | Path) -> None:
        """Fill the form from a TOML file, as ``traindx run`` reads it."""
        path = Path(path)
        raw = tomllib.loads(path.read_text())
        self.source_path = path
        self.load_note = _unknown_keys_note(raw)
        self._loaded = (raw, path.resolve().parent)
        self.set_raw(*self._loaded)

    def all_editors(self) -> dict[str, Editor]:
        """Every editor whose value goes into the config now, by config key."""
        out = dict(self.editors)
        out.update(self.model_choices.editors(self._model_choice()))
        out.update(self.source_choices.editors(self.editors["data.source"].get()))
        if self.quantize.isChecked():
            out.update(self.quantize_fields.by_key())
        for box in self.plugin_boxes.values():
            out.update(box.all_editors())
        return out

    # -- validation -------------------------------------------------------------------------------
    def validate(self) -> RunConfig | None:
        """Check every field, then the whole; show each message under its field. Returns the config."""
        self._timer.stop()
        editors = self.all_editors()
        errors: dict[str, str] = {}
        raw = self.raw()
        try:
            self.config = RunConfig.from_dict(raw, base_dir=self.base_dir)
        except ConfigError as exc:
            self.config = None
            errors[exc.key] = str(exc)
            errors.update(self._field_errors(exc.key))
        except (OSError, TypeError, ValueError) as exc:
            self.config = None
            errors["config"] = str(exc)
        if self._model_choice() == PYTHON and (problem := self.model_options.problems()):
            errors["model.options"] = problem
        if self.unknown_plugins:
            errors["plugins"] = "plugins: not installed here: " + ", ".join(sorted(self.unknown_plugins))
        self.errors = errors
        if errors:
            self.config = None
        for key, ed in editors.items():
            ed.show_error(errors.get(key))
        self.model_options.show_error(errors.get("model.options"))
        self._show_relevant()
        self._show_summary(errors, [m for k, m in errors.items() if k not in editors and k != "model.options"])
        self.validity_changed.emit(self.config is not None)
        return self.config

    def _show_summary(self, errors: dict[str, str], unplaced: list[str]) -> None:
        note = self.load_note
        if errors:
            n = len(errors)
            text = f"{n} setting{'s' if n > 1 else ''} to fix before starting"
            self.summary.setText(text + "".join(f"<br>• {m}" for m in unplaced) + (f"<br>{note}" if note else ""))
        elif note:
            self.summary.setText(note)
        self.summary.setVisible(bool(errors or note))

    def _field_errors(self, already: str) -> dict[str, str]:
        """Every other field's own error too (the engine stops at the first), via its declaration."""
        enabled = {k for box in self.plugin_boxes.values() if box.isChecked() for k in box.all_editors()}
        out = {key: message for key, ed in self.all_editors().items()
               if (not key.startswith("plugins.") or key in enabled) and (message := ed.own_error())}
        out.pop(already, None)
        return out

    def to_toml(self) -> str:
        config = self.validate()
        if config is None:
            raise ConfigError("config", "the form", "valid settings (fix the fields marked in red)")
        return config.to_toml()


def _table(raw: dict, name: str) -> dict:
    table = raw.get(name, {})
    return table if isinstance(table, dict) else {}


def _unknown_keys_note(raw: dict) -> str:
    """Keys of a loaded file the form has no field for (they would be lost on save): say so."""
    unknown = [k for k in raw if k not in SECTIONS and k != "plugins"]
    model = str(_table(raw, "model").get("name", SECTIONS["model"]["name"].default))
    source = str(_table(raw, "data").get("source", SECTIONS["data"]["source"].default))
    for section, fields in SECTIONS.items():
        if section == "model" and model.startswith(PYTHON):
            continue  # a Python model takes any option
        extra = {"model": {*MODEL_OPTIONS.get(model, {}), "quantize"},
                 "data": set(sources.options(source)) if source in sources.names() else set()}.get(section, set())
        unknown += [f"{section}.{k}" for k in _table(raw, section) if k not in fields and k not in extra]
    return "ignored from the file (no such setting): " + ", ".join(unknown) if unknown else ""
