"""The run-setup dock's contents: load/save/recent/default buttons, the form, the settings left to
fix, and Start; and the config files they read and write."""
from __future__ import annotations

from pathlib import Path

from PySide6 import QtCore, QtWidgets

from engine.errors import ConfigError

from ..form import DEFAULT_CONFIG, ConfigForm


class SetupPanel(QtWidgets.QWidget):
    """The config form with its file buttons above and the Start button below."""

    message = QtCore.Signal(str, int)  # a line for the status bar, and for how many ms

    def __init__(self, form: ConfigForm, w, recent, settings: QtCore.QSettings, parent=None):
        super().__init__(parent)
        self.form, self.recent, self.settings = form, recent, settings
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        row = QtWidgets.QHBoxLayout()
        for act in (w.act_load, w.act_save):
            row.addWidget(_button(act))
        self.recent_button = QtWidgets.QToolButton(text="Recent")
        self.recent_button.setToolTip("Configs loaded or saved recently")
        self.recent_button.setPopupMode(QtWidgets.QToolButton.ToolButtonPopupMode.InstantPopup)
        self.recent_menu = QtWidgets.QMenu(self)
        self.recent_button.setMenu(self.recent_menu)
        row.addWidget(self.recent_button)
        row.addWidget(_button(w.act_default))
        row.addStretch(1)
        lay.addLayout(row)
        self.source_label = QtWidgets.QLabel()
        self.source_label.setStyleSheet("color: palette(placeholder-text); font-size: 8pt;")
        lay.addWidget(self.source_label)
        scroll = QtWidgets.QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(form)
        scroll.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        lay.addWidget(scroll, 1)
        lay.addWidget(form.summary)  # under the form, not in it: it must not push the fields down
        self.start_button = QtWidgets.QPushButton("Start")
        self.start_button.setIcon(w.act_start.icon())
        self.start_button.setToolTip(w.act_start.toolTip())
        self.start_button.clicked.connect(w.start_run)
        self.start_button.setMinimumHeight(30)
        lay.addWidget(self.start_button)

    # -- config files -----------------------------------------------------------------------------
    def load_config(self, path: str | Path) -> bool:
        """Fill the form from a TOML file exactly as ``traindx run`` reads it."""
        path = Path(path)
        try:
            self.form.load_toml(path)
        except (OSError, ValueError) as exc:
            QtWidgets.QMessageBox.warning(self, "Cannot load config", f"{path}: {exc}")
            return False
        self.source_label.setText(f"from {path}")
        self.recent.add("recent_configs", path)
        return True

    def load_default(self) -> None:
        """The bundled digits example with the five analyses: a ready demo."""
        self.load_config(DEFAULT_CONFIG)

    def load_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Load run config", str(self._last_dir()),
                                                        "Run config (*.toml)")
        if path:
            self.load_config(path)

    def save_config(self, path: str | Path) -> bool:
        try:
            text = self.form.to_toml()
        except ConfigError as exc:
            QtWidgets.QMessageBox.warning(self, "Cannot save config", str(exc))
            return False
        Path(path).write_text(text + "\n")
        self.recent.add("recent_configs", path)
        self.message.emit(f"saved {path}", 4000)
        return True

    def save_dialog(self) -> None:
        name = (self.form.editors["run.name"].get() or "run") + ".toml"
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save run config", str(self._last_dir() / name),
                                                        "Run config (*.toml)")
        if path:
            self.save_config(path)

    def _last_dir(self) -> Path:
        return Path(self.settings.value("last_dir", str(Path.cwd())))


def _button(action) -> QtWidgets.QToolButton:
    b = QtWidgets.QToolButton()
    b.setDefaultAction(action)
    return b
