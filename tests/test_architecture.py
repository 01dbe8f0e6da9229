"""The dependency rules of DESIGN.md, checked on the source: gui → engine ← plugins, never back up."""
import ast
import subprocess
import sys

import pytest

from conftest import ROOT

QT = ("PySide6", "pyqtgraph", "PyQt5", "PyQt6", "shiboken6")


def _imports(path):
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


ENGINE_FILES = sorted((ROOT / "engine").rglob("*.py"))
ANALYSIS_FILES = sorted((ROOT / "plugins").glob("*/analysis.py"))


@pytest.mark.parametrize("path", ENGINE_FILES, ids=lambda p: p.name)
def test_engine_imports_neither_qt_nor_gui(path):
    assert not _imports(path) & {*QT, "gui"}


@pytest.mark.parametrize("path", ANALYSIS_FILES, ids=lambda p: p.parent.name)
def test_analysis_modules_are_pure(path):
    assert not _imports(path) & {*QT, "gui", "engine"}


def test_finding_plugins_and_reading_run_files_do_not_import_torch(tmp_path):
    """`traindx info` and finding the installed plugins stay light (`traindx plugins` itself imports
    the plugins, whose settings are declared in their code)."""
    code = ("import json, sys, engine.cli\n"
            "from engine.plugin import discover\n"
            "from engine.store import RunWriter\n"
            "w = RunWriter(sys.argv[1], json.dumps({'config': {}}))\n"
            "w.start_swmr()\n"
            "w.close('finished')\n"
            "assert discover() and engine.cli.main(['info', sys.argv[1]]) == 0\n"
            "assert 'torch' not in sys.modules, 'torch'\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "r.h5")], cwd=ROOT, check=True, capture_output=True)
