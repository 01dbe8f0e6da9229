"""The run-setup dock's contents: load/save/recent/default buttons, the form, and Start."""
from __future__ import annotations

from PySide6 import QtCore, QtWidgets


class SetupPanel(QtWidgets.QWidget):
    """The config form with its file buttons above and the Start button below."""

    def __init__(self, form: QtWidgets.QWidget, w, parent=None):
        super().__init__(parent)
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


def _button(action) -> QtWidgets.QToolButton:
    b = QtWidgets.QToolButton()
    b.setDefaultAction(action)
    return b
