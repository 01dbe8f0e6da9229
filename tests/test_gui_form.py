"""The run-setup form against the engine: a loaded file gives exactly the config ``traindx run``
builds from it, every declared table has its fields (a Python model's own options, [model.quantize],
a built-in data source's options), fields the chosen optimizer or schedule ignores are hidden, and
scrolling the form never changes a setting."""
import dataclasses
import sys
import types

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from conftest import ROOT  # noqa: E402
from PySide6 import QtCore, QtGui, QtWidgets  # noqa: E402

from engine import sources  # noqa: E402
from engine.config import SECTIONS, Field, RunConfig  # noqa: E402
from gui.form import DEFAULT_CONFIG, ConfigForm, load_plugin_classes  # noqa: E402

EXAMPLES = sorted((ROOT / "assets" / "examples").glob("*.toml"))
MODEL_FILE = """import math

import torch.nn as nn


def make(input_shape, n_classes, width=16, depth=1):
    layers, w = [nn.Flatten()], math.prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(w, width), nn.ReLU()]
        w = width
    return nn.Sequential(*layers, nn.Linear(w, n_classes))
"""
HAND_MADE = {  # each differs from the default form in a way a stale form would keep
    "only-a-cadence": "[plugins.sharpness]\nevery = 50\n",
    "python-model": '[model]\nname = "python:mymodel.py:make"\nwidth = 48\ndepth = 2\n\n'
                    '[model.quantize]\nbits = 3\nskip = ["last"]\n',
    "adam-epochs-step": '[run]\nepochs = 2\nseed = 3\n\n[optimizer]\nname = "adam"\nlr = 1\nbetas = [0.8, 0.99]\n'
                        'schedule = "step"\nstep_size = 10\n\n[plugins.calibration]\nn_bins = 10\n\n'
                        '[plugins.sharpness]\nenabled = false\n',
    "cnn-npz-mse": '[data]\nsource = "npz:arrays.npz"\nbatch_size = 16\n\n[model]\nname = "cnn"\nchannels = [4]\n\n'
                   '[loss]\nname = "mse"\n',
    "nothing": "",
}


@pytest.fixture(scope="module")
def plugin_classes():
    return load_plugin_classes()


def default_form(plugin_classes) -> ConfigForm:
    f = ConfigForm()
    f.set_plugins(*plugin_classes)
    f.load_toml(DEFAULT_CONFIG)  # what a stale form would carry over
    return f


@pytest.fixture
def form(qtbot, plugin_classes):
    f = default_form(plugin_classes)
    qtbot.addWidget(f)
    return f


@pytest.fixture
def planted_source(monkeypatch):
    """A built-in data source with options of its own, registered as engine.sources expects one."""
    module = types.ModuleType("traindx_planted_test_source")
    module.OPTIONS = {"n_samples": Field(300, int, "samples to make", min=10),
                      "noise": Field(0.1, float, "share of labels flipped", min=0.0, max=1.0)}
    module.load = lambda options: {"x": np.zeros((options["n_samples"], 2)), "y": np.zeros(options["n_samples"])}
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(sources.BUILTIN, "planted-test", module.__name__)
    source = SECTIONS["data"]["source"]  # its choices were listed when engine.config was imported
    monkeypatch.setitem(SECTIONS["data"], "source",
                        dataclasses.replace(source, choices=("digits", *sources.names(), "npz:", "python:")))
    return "planted-test"


def config_file(tmp_path, name: str):
    if name in HAND_MADE:
        (tmp_path / "mymodel.py").write_text(MODEL_FILE)
        np.savez(tmp_path / "arrays.npz", x=np.random.default_rng(0).random((60, 1, 8, 8)), y=np.arange(60) % 3)
        path = tmp_path / f"{name}.toml"
        path.write_text(HAND_MADE[name])
        return path
    return ROOT / "assets" / "examples" / name


@pytest.mark.parametrize("name", [p.name for p in EXAMPLES] + list(HAND_MADE))
def test_a_loaded_file_gives_exactly_the_config_the_cli_builds(form, tmp_path, name):
    path = config_file(tmp_path, name)
    form.load_toml(path)
    assert form.config is not None, form.errors
    assert form.config.to_dict() == RunConfig.from_toml(path).to_dict()
    saved = tmp_path / "saved.toml"  # and saving it writes the same run again
    saved.write_text(form.to_toml())
    for extra in ("mymodel.py", "arrays.npz"):
        if (path.parent / extra).exists() and not (tmp_path / extra).exists():
            (tmp_path / extra).write_bytes((path.parent / extra).read_bytes())
    assert RunConfig.from_toml(saved).to_dict() == RunConfig.from_toml(path).to_dict()


def test_a_python_models_options_are_key_value_rows(form, tmp_path):
    path = config_file(tmp_path, "python-model")
    form.load_toml(path)
    rows = {k.text(): v.text() for k, v, _ in form.model_options.rows}
    assert rows == {"width": "48", "depth": "2"} and form.model_options.isVisible() is form.isVisible()
    form.model_options.rows[0][1].setText("40")  # edit an option…
    form.model_options.add_row("bias", "false")  # …and add one
    assert form.validate().sections["model"] == {"name": "python:mymodel.py:make", "width": 40, "depth": 2,
                                                 "bias": False, "quantize": {"bits": 3, "granularity": "channel",
                                                                             "scale": "lsq", "skip": ["last"]}}
    form.model_options.add_row("", "7")
    assert form.validate() is None
    assert form.model_options.error.text() == "model: got a value (7) without a key, expected key = value"


def test_quantisation_is_switched_on_and_off_with_the_engines_messages(form):
    assert "model.quantize" not in form.validate().sections["model"]
    form.quantize.setChecked(True)
    bits = form.all_editors()["model.quantize.bits"]
    assert form.validate().sections["model"]["quantize"] == {"bits": 4, "granularity": "channel", "scale": "lsq",
                                                             "skip": ["first", "last"]}
    bits.input.setText("9")
    assert form.validate() is None
    assert bits.error.text() == "model.quantize.bits: got 9, expected an integer in [2, 8]"
    form.quantize.setChecked(False)
    assert "quantize" not in form.validate().sections["model"]


def test_a_built_in_sources_declared_options_show_when_it_is_chosen(qtbot, plugin_classes, planted_source, tmp_path):
    form = ConfigForm()
    qtbot.addWidget(form)
    form.set_plugins(*plugin_classes)
    assert "data.noise" not in form.all_editors()
    form.editors["data.source"].set(planted_source)
    noise = form.all_editors()["data.noise"]
    assert form.validate().sections["data"]["noise"] == 0.1
    noise.input.setText("2")
    assert form.validate() is None
    assert noise.error.text() == "data.noise: got 2.0, expected a number in [0.0, 1.0]"
    path = tmp_path / "planted.toml"
    path.write_text(f'[data]\nsource = "{planted_source}"\nnoise = 0.3\n')
    form.load_toml(path)
    assert form.config.to_dict() == RunConfig.from_toml(path).to_dict()
    assert form.config.sections["data"] == {"source": planted_source, "batch_size": 64, "val_fraction": 0.2,
                                            "n_classes": None, "n_samples": 300, "noise": 0.3}


def test_fields_the_optimizer_or_schedule_ignore_are_hidden(form):
    layout = form.sections["optimizer"].form

    def shown():
        return {k.split(".")[1] for k, ed in form.editors.items() if k.startswith("optimizer.")
                and layout.isRowVisible(ed)}
    form.editors["optimizer.name"].set("sgd")
    form.editors["optimizer.schedule"].set("cosine")
    assert {"momentum", "nesterov"} <= shown() and not {"betas", "eps", "step_size", "gamma"} & shown()
    form.editors["optimizer.name"].set("adam")
    form.editors["optimizer.schedule"].set("step")
    assert {"betas", "eps", "step_size", "gamma"} <= shown() and not {"momentum", "nesterov"} & shown()
    form.editors["optimizer.betas"].input.setText("0.9, 2")  # a hidden field with an error is shown
    form.editors["optimizer.name"].set("sgd")
    form.validate()
    assert "betas" in shown() and not form.editors["optimizer.betas"].error.isHidden()


def wheel(widget, dy=-120):
    pos = QtCore.QPointF(widget.rect().center())
    event = QtGui.QWheelEvent(pos, QtCore.QPointF(widget.mapToGlobal(pos.toPoint())), QtCore.QPoint(0, 0),
                              QtCore.QPoint(0, dy), QtCore.Qt.MouseButton.NoButton,
                              QtCore.Qt.KeyboardModifier.NoModifier, QtCore.Qt.ScrollPhase.NoScrollPhase, False)
    QtWidgets.QApplication.sendEvent(widget, event)
    return event


def test_the_wheel_changes_a_setting_only_when_it_has_the_focus(qtbot, plugin_classes):
    form = default_form(plugin_classes)
    scroll = QtWidgets.QScrollArea()
    qtbot.addWidget(scroll)
    scroll.setWidgetResizable(True)
    scroll.setWidget(form)
    scroll.resize(360, 300)
    scroll.show()
    qtbot.waitExposed(scroll)
    for key in ("model.activation", "plugins.calibration.binning"):
        combo = form.all_editors()[key].input
        scroll.ensureWidgetVisible(combo)
        before = combo.currentText()
        event = wheel(combo)
        # unchanged, and left to the parents: Qt hands an ignored wheel event on up to the scroll area
        assert combo.currentText() == before and not event.isAccepted()
        combo.setFocus()
        qtbot.waitUntil(combo.hasFocus)
        assert wheel(combo).isAccepted() and combo.currentText() != before  # focused: the wheel is the combo's
