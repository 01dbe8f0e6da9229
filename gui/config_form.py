"""The run-setup form, generated from the engine's declarations (``SECTIONS``, ``MODEL_OPTIONS``)
and from each installed plugin's ``settings``; a new option or plugin needs no GUI code.

Validation is the engine's: each field goes through its ``Field``/``Setting.validate`` and the
whole through ``RunConfig.from_dict``; a ``ConfigError`` is shown under the field its ``key`` names.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from PySide6 import QtCore, QtWidgets

from engine.config import MODEL_OPTIONS, SECTIONS, Field, RunConfig, parse_value
from engine.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "assets" / "examples" / "digits-mlp.toml"
SECTION_TITLES = {"run": "Run", "data": "Data", "model": "Model", "optimizer": "Optimizer", "loss": "Loss"}


def parse_text(text: str, kind: type) -> Any:
    """A line edit's text as a config value: TOML syntax, with '64, 64' accepted for lists and
    anything unparsable passed on as a string (so the engine names what it expected)."""
    text = text.strip()
    if text == "":
        return None
    if kind is str:
        return text
    if kind is list and not text.startswith("["):
        text = f"[{text}]"
    return parse_value(text)


def show_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(repr(v) if isinstance(v, float) else str(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


class Editor(QtWidgets.QWidget):
    """One config key: an input widget plus the engine's message under it when the value is wrong."""

    changed = QtCore.Signal()

    def __init__(self, key: str, default: Any, kind: type, help_text: str, choices=None, optional=False,
                 parent=None):
        super().__init__(parent)
        self.key, self.kind, self.default, self.optional = key, kind, default, optional
        self.choices = tuple(c for c in (choices or ()) if not str(c).endswith(":"))
        self.prefixes = tuple(c for c in (choices or ()) if str(c).endswith(":"))
        lay = QtWidgets.QGridLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setHorizontalSpacing(4)
        lay.setVerticalSpacing(1)
        self.input = self._make_input()
        self.input.setToolTip(help_text)
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
        self.set(default)

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
        return parse_text(w.text(), self.kind)

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


def _field_editor(key: str, f: Field) -> Editor:
    return Editor(key, f.default, f.kind, f.help, f.choices, f.optional)


class PluginBox(QtWidgets.QGroupBox):
    """One plugin: enabled (the box's check), its cadence and its declared settings."""

    changed = QtCore.Signal()

    def __init__(self, name: str, cls, parent=None):
        super().__init__(getattr(cls, "title", name) if cls else name, parent)
        self.name, self.cls = name, cls
        self.setCheckable(True)
        self.setObjectName(f"plugin:{name}")
        form = QtWidgets.QFormLayout(self)
        form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.editors: dict[str, Editor] = {}
        if cls is None:
            return
        self.setToolTip(getattr(cls, "description", "") or "")
        self.cadence = QtWidgets.QComboBox()
        self.cadence.addItems(["every N steps", "each evaluation"])
        self.cadence.setToolTip("When the analysis runs: every N optimizer steps, or at each evaluation")
        self.every = Editor(f"plugins.{name}.every", cls.default_every or 50, int, "steps between calls")
        self.cadence.setCurrentIndex(1 if cls.default_on == "eval" else 0)
        self.every.setEnabled(self.cadence.currentIndex() == 0)
        self.cadence.currentIndexChanged.connect(lambda i: (self.every.setEnabled(i == 0), self.changed.emit()))
        self.every.changed.connect(self.changed)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.cadence)
        row.addWidget(self.every, 1)
        form.addRow("runs", row)
        for s in cls.settings:
            ed = Editor(f"plugins.{name}.{s.name}", s.default, type(s.default), s.help, s.choices)
            ed.changed.connect(self.changed)
            self.editors[s.name] = ed
            label = QtWidgets.QLabel(s.name)
            label.setToolTip(s.help)
            form.addRow(label, ed)
        self.toggled.connect(self.changed)

    def table(self) -> dict:
        out: dict[str, Any] = {"enabled": self.isChecked()}
        if self.cls is None:
            return out
        if self.cadence.currentIndex() == 1:
            out["on"] = "eval"
        else:
            out["every"] = self.every.get()
        out.update({k: ed.get() for k, ed in self.editors.items()})
        return out

    def set_table(self, table: dict) -> None:
        self.setChecked(bool(table.get("enabled", True)))
        if self.cls is None:
            return
        if table.get("on") == "eval":
            self.cadence.setCurrentIndex(1)
        elif table.get("every") is not None:
            self.cadence.setCurrentIndex(0)
            self.every.set(table["every"])
        for k, ed in self.editors.items():
            if k in table:
                ed.set(table[k])

    def all_editors(self) -> dict[str, Editor]:
        out = {f"plugins.{self.name}.{k}": e for k, e in self.editors.items()}
        if self.cls is not None:
            out[f"plugins.{self.name}.every"] = self.every
        return out


class ConfigForm(QtWidgets.QWidget):
    """Every RunConfig option and every plugin's settings, with the engine's validation inline."""

    validity_changed = QtCore.Signal(bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.base_dir = DEFAULT_CONFIG.parent
        self.source_path: Path | None = None
        self.editors: dict[str, Editor] = {}
        self.model_editors: dict[str, dict[str, Editor]] = {}
        self.plugin_boxes: dict[str, PluginBox] = {}
        self.unknown_plugins: dict[str, dict] = {}
        self.config: RunConfig | None = None
        self.errors: dict[str, str] = {}
        self._loading = False
        self._timer = QtCore.QTimer(self, singleShot=True, interval=150)
        self._timer.timeout.connect(self.validate)

        outer = QtWidgets.QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        self.summary = QtWidgets.QLabel()
        self.summary.setWordWrap(True)
        self.summary.setObjectName("summary")
        self.summary.setStyleSheet("color: #d9534f;")
        self.summary.hide()
        outer.addWidget(self.summary)
        for section, fields in SECTIONS.items():
            box = QtWidgets.QGroupBox(SECTION_TITLES.get(section, section))
            form = QtWidgets.QFormLayout(box)
            form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
            for key, f in fields.items():
                self._add(form, f"{section}.{key}", key, _field_editor(f"{section}.{key}", f))
            if section == "model":
                self.model_stack = QtWidgets.QStackedWidget()
                for model, opts in MODEL_OPTIONS.items():
                    page = QtWidgets.QWidget()
                    pform = QtWidgets.QFormLayout(page)
                    pform.setContentsMargins(0, 0, 0, 0)
                    pform.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
                    self.model_editors[model] = {}
                    for key, f in opts.items():
                        ed = _field_editor(f"model.{key}", f)
                        ed.changed.connect(self._schedule)
                        self.model_editors[model][key] = ed
                        label = QtWidgets.QLabel(key)
                        label.setToolTip(f.help)
                        pform.addRow(label, ed)
                    self.model_stack.addWidget(page)
                self.model_stack.addWidget(QtWidgets.QLabel("(a Python model takes its own options; "
                                                            "set them in the TOML file)"))
                form.addRow(self.model_stack)
                self.editors["model.name"].changed.connect(self._switch_model)
            outer.addWidget(box)
        self.plugins_box = QtWidgets.QGroupBox("Analyses (plugins)")
        self.plugins_layout = QtWidgets.QVBoxLayout(self.plugins_box)
        self.plugins_note = QtWidgets.QLabel("loading installed plugins…")
        self.plugins_layout.addWidget(self.plugins_note)
        outer.addWidget(self.plugins_box)
        outer.addStretch(1)
        self._switch_model()

    def _add(self, form: QtWidgets.QFormLayout, key: str, label: str, ed: Editor) -> None:
        ed.changed.connect(self._schedule)
        self.editors[key] = ed
        lab = QtWidgets.QLabel(label)
        lab.setToolTip(ed.input.toolTip())
        form.addRow(lab, ed)

    def _switch_model(self) -> None:
        name = self.editors["model.name"].get()
        models = list(MODEL_OPTIONS)
        self.model_stack.setCurrentIndex(models.index(name) if name in models else len(models))

    def _schedule(self) -> None:
        if not self._loading:
            self._timer.start()

    # -- plugins ----------------------------------------------------------------------------------
    def set_plugins(self, classes: dict[str, Any], failures: dict[str, str]) -> None:
        """Installed plugin classes (loaded in a worker) become boxes; failed ones are listed."""
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
        self._schedule()

    # -- values -----------------------------------------------------------------------------------
    def raw(self) -> dict:
        """The form as a config dict, like a parsed TOML file."""
        out: dict[str, dict] = {}
        for key, ed in self.editors.items():
            section, name = key.split(".", 1)
            value = ed.get()
            if value is not None:
                out.setdefault(section, {})[name] = value
        model = out["model"]["name"]
        for key, ed in self.model_editors.get(model, {}).items():
            value = ed.get()
            if value is not None:
                out["model"][key] = value
        plugins = {name: box.table() for name, box in self.plugin_boxes.items()}
        plugins = {n: t for n, t in plugins.items() if t.get("enabled")}
        if plugins:
            out["plugins"] = plugins
        return out

    def set_raw(self, raw: dict, base_dir: Path | None = None, enable_all_plugins: bool = False) -> None:
        """Fill the form from a config dict (a parsed TOML file); missing keys take their defaults."""
        self._loading = True
        try:
            for key, ed in self.editors.items():
                section, name = key.split(".", 1)
                ed.set(raw.get(section, {}).get(name, ed.default))
            self._switch_model()
            model = raw.get("model", {})
            for key, ed in self.model_editors.get(self.editors["model.name"].get(), {}).items():
                ed.set(model.get(key, ed.default))
            tables = raw.get("plugins", {})
            for name, box in self.plugin_boxes.items():
                if name in tables:
                    box.set_table(tables[name])
                else:
                    box.setChecked(enable_all_plugins)
            self.unknown_plugins = {n: t for n, t in tables.items() if n not in self.plugin_boxes}
            if base_dir is not None:
                self.base_dir = Path(base_dir)
        finally:
            self._loading = False
        self.validate()

    def load_toml(self, path: str | Path) -> None:
        path = Path(path)
        raw = tomllib.loads(path.read_text())
        self.source_path = path
        self.load_note = _unknown_keys_note(raw)
        self.set_raw(raw, path.resolve().parent, enable_all_plugins=path.resolve() == DEFAULT_CONFIG)
        self._pending_raw = raw

    def all_editors(self) -> dict[str, Editor]:
        out = dict(self.editors)
        for key, ed in self.model_editors.get(self.editors["model.name"].get(), {}).items():
            out[f"model.{key}"] = ed
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
            errors.update(self._field_errors(raw, exc.key))
        except (OSError, TypeError, ValueError) as exc:
            self.config = None
            errors["config"] = str(exc)
        if self.unknown_plugins:
            errors["plugins"] = "plugins: not installed here: " + ", ".join(sorted(self.unknown_plugins))
        self.errors = errors
        for key, ed in editors.items():
            ed.show_error(errors.get(key))
        unplaced = [m for k, m in errors.items() if k not in editors]
        note = getattr(self, "load_note", "")
        if errors:
            n = len(errors)
            text = f"{n} setting{'s' if n > 1 else ''} to fix before starting"
            self.summary.setText(text + "".join(f"<br>• {m}" for m in unplaced) + (f"<br>{note}" if note else ""))
        elif note:
            self.summary.setText(note)
        self.summary.setVisible(bool(errors or note))
        if self.unknown_plugins and self.config is not None:
            self.config = None
        self.validity_changed.emit(self.config is not None)
        return self.config

    def _field_errors(self, raw: dict, already: str) -> dict[str, str]:
        """Every other field's own error too (the engine stops at the first), via its declaration."""
        out = {}
        model = raw.get("model", {}).get("name")
        for section, fields in SECTIONS.items():
            for key, f in fields.items():
                out.update(_check(f, f"{section}.{key}", raw.get(section, {}).get(key)))
        for key, f in MODEL_OPTIONS.get(model, {}).items():
            out.update(_check(f, f"model.{key}", raw.get("model", {}).get(key)))
        for name, box in self.plugin_boxes.items():
            if box.cls is None or not box.isChecked():
                continue
            table = raw.get("plugins", {}).get(name, {})
            for s in box.cls.settings:
                if s.name in table:
                    try:
                        s.validate(f"plugins.{name}.{s.name}", table[s.name])
                    except ConfigError as exc:
                        out[exc.key] = str(exc)
        out.pop(already, None)
        return out

    def to_toml(self) -> str:
        config = self.validate()
        if config is None:
            raise ConfigError("config", "the form", "valid settings (fix the fields marked in red)")
        return config.to_toml()


def _unknown_keys_note(raw: dict) -> str:
    """Keys of a loaded file the form has no field for (they would be lost on save): say so."""
    unknown = [k for k in raw if k not in SECTIONS and k != "plugins"]
    for section, fields in SECTIONS.items():
        table = raw.get(section, {})
        if not isinstance(table, dict):
            continue
        extra = set(MODEL_OPTIONS.get(table.get("name"), {})) | {"name"} if section == "model" else set()
        unknown += [f"{section}.{k}" for k in table if k not in fields and k not in extra]
    if not unknown or str(raw.get("model", {}).get("name", "")).startswith("python:"):
        return ""
    return "ignored from the file (no such setting): " + ", ".join(unknown)


def _check(f: Field, key: str, value) -> dict[str, str]:
    if value is None:
        return {}
    try:
        f.validate(key, value)
    except ConfigError as exc:
        return {exc.key: str(exc)}
    return {}


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
