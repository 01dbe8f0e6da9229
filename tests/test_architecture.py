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


def test_listing_plugins_does_not_import_torch():
    code = "import sys, engine.cli; engine.cli.main(['plugins']); assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)
