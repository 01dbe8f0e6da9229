"""``traindx gui [CONFIG.toml | RUN.h5 ...]`` and ``python -m gui``: start the desktop app."""
from __future__ import annotations

import argparse
import os
import sys


def add_command(parser: argparse.ArgumentParser) -> None:
    """Configure the ``gui`` subcommand (registered under the ``traindx.commands`` entry points)."""
    parser.description = "Start the TrainDx desktop app: set up and watch runs, open and compare run files."
    parser.add_argument("paths", nargs="*", metavar="CONFIG_OR_RUN",
                        help="a run config (.toml) to load into the form, and/or run files (.h5) to open")
    parser.add_argument("--theme", choices=("system", "light", "dark"), help="colour theme (default: remembered)")
    parser.add_argument("--runs-dir", help="where new runs are written (default: remembered, else ./runs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key in the form, e.g. --set run.steps=5000")
    parser.add_argument("--start", action="store_true", help="start training the loaded config at once")
    parser.set_defaults(func=run_gui)


def make_app(argv: list[str] | None = None):
    """The QApplication with TrainDx's names (QSettings keys) and high-DPI policy set."""
    from PySide6 import QtCore, QtGui, QtWidgets
    app = QtWidgets.QApplication.instance()
    if app is None:
        QtGui.QGuiApplication.setHighDpiScaleFactorRoundingPolicy(
            QtCore.Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
        app = QtWidgets.QApplication(argv or [sys.argv[0]])
    app.setOrganizationName("TrainDx")
    app.setApplicationName("traindx")
    app.setApplicationDisplayName("TrainDx")
    return app


def run_gui(args) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for p in args.paths:
        if not os.path.exists(p):
            print(f"traindx gui: error: {p}: no such file (expected a .toml config or a .h5 run file)",
                  file=sys.stderr)
            return 2
    app = make_app()
    import pyqtgraph as pg
    pg.setConfigOptions(antialias=False)
    from .window import MainWindow
    window = MainWindow(runs_dir=args.runs_dir)
    if args.theme:
        window.apply_theme(args.theme)
    window.open_paths(args.paths)
    window.show()
    if args.set or args.start:
        when_plugins_loaded(window, lambda: _overrides_then_start(window, args.set, args.start))
    return app.exec()


def when_plugins_loaded(window, fn) -> None:
    """Run ``fn`` once the form holds the installed plugins (they load in a worker)."""
    from PySide6 import QtCore
    if getattr(window, "plugins_loaded", False):
        fn()
    else:
        QtCore.QTimer.singleShot(100, window, lambda: when_plugins_loaded(window, fn))


def _overrides_then_start(window, overrides: list[str], start: bool) -> None:
    from engine.config import apply_override
    from engine.errors import ConfigError
    raw = window.form.raw()
    try:
        for item in overrides:
            apply_override(raw, item)
    except ConfigError as exc:
        window.statusBar().showMessage(str(exc), 10000)
        return
    window.form.set_raw(raw)
    if start:
        window.start_run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="traindx gui")
    add_command(parser)
    args = parser.parse_args(argv)
    return args.func(args)
