import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DIR = Path(__file__).resolve().parent / "example_plugin"


RUN_TIMEOUT = 30_000  # ms: spawning the engine imports torch (a few seconds on a busy machine)


@pytest.fixture
def window(qtbot, tmp_path):
    """The main window, shown, with its own settings file and runs folder; checked on the way out
    for threads, timers and tasks that outlived it."""
    from PySide6 import QtCore
    from gui.window import MainWindow
    settings = QtCore.QSettings(str(tmp_path / "settings.ini"), QtCore.QSettings.Format.IniFormat)
    w = MainWindow(settings=settings, runs_dir=tmp_path / "runs")
    w.confirm_close = False  # no modal question if a failing test leaves the engine running
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: getattr(w, "plugins_loaded", False), timeout=20_000)
    yield w
    if w.engine_run.process is not None:
        w.engine_run.process.kill()
        w.engine_run.process.join(10)
        w.engine_run.process = None
    w.shutdown()
    assert not w.poller.isRunning(), "the poller thread outlived the window"
    active = [(t.parent().metaObject().className(), t.interval()) for t in w.findChildren(QtCore.QTimer)
              if t.isActive()]
    assert not active, f"a QTimer outlived the window: {active}"
    assert w.tasks.pool.activeThreadCount() == 0, "a task outlived the window"


def tiny_config(**sections):
    """A run that trains in well under a second on digits."""
    cfg = {"run": {"seed": 0, "steps": 40, "eval_every": 20, "threads": 1},
           "data": {"source": "digits", "batch_size": 32},
           "model": {"name": "mlp", "hidden": [16]},
           "optimizer": {"name": "sgd", "lr": 0.1},
           "loss": {"name": "cross_entropy"}}
    for name, table in sections.items():
        cfg.setdefault(name, {}).update(table)
    return cfg


def stop_after(trainer, step: int):
    """Make ``trainer`` stop by request once ``step`` is done, as the Stop button would."""
    original = trainer._train_step

    def step_then_maybe_stop(s):
        value = original(s)
        if s == step:
            trainer.control.stop()
        return value
    trainer._train_step = step_then_maybe_stop
    return trainer


def assert_reads_as_stated(finding):
    """A finding's sentence starts with a capital letter and states its number exactly as the
    report's value column shows it, unit included."""
    from gui.report_model import fmt_number
    assert finding.message[:1].isupper(), finding.message
    if finding.value is not None:
        shown = fmt_number(finding.value, finding.unit)
        assert finding.unit and shown in finding.message, (shown, finding.message)


@pytest.fixture
def example_plugin(tmp_path, monkeypatch):
    """Installs tests/example_plugin as a third-party distribution with a real entry point."""
    site = tmp_path / "site"
    dist = site / "traindx_example-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: traindx-example\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[traindx.plugins]\nexample = traindx_example:ExamplePlugin\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(EXAMPLE_DIR))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(EXAMPLE_DIR), str(ROOT),
                                                      os.environ.get("PYTHONPATH", "")]))
    return site
