import subprocess
import sys

import pytest

from conftest import ROOT, tiny_config
from engine.config import RunConfig, apply_override, parse_override
from engine.errors import ConfigError

EXAMPLE = ROOT / "assets/examples/digits-mlp.toml"


def test_example_config_loads_with_every_section():
    cfg = RunConfig.from_toml(EXAMPLE)
    assert cfg.run.name == "digits-mlp"
    assert cfg.optimizer.momentum == 0.9 and cfg.optimizer.schedule == "cosine"
    assert cfg.model.hidden == [64, 64]
    assert cfg.data.source == "digits"


def test_toml_round_trip_keeps_every_value(tmp_path):
    cfg = RunConfig.from_dict(tiny_config(optimizer={"name": "adam", "betas": [0.8, 0.99]}))
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    again = RunConfig.from_toml(path)
    assert again.to_dict() == cfg.to_dict()


def test_quantize_table_is_completed_and_survives_toml_and_json(tmp_path):
    cfg = RunConfig.from_dict(tiny_config(model={"name": "mlp", "quantize": {"bits": 3}}))
    assert cfg.model.quantize == {"bits": 3, "granularity": "channel", "scale": "lsq", "skip": ["first", "last"]}
    path = tmp_path / "q.toml"
    path.write_text(cfg.to_toml())
    assert "[model.quantize]" in path.read_text()
    assert RunConfig.from_toml(path).to_dict() == cfg.to_dict() == RunConfig.from_json(cfg.to_json()).to_dict()


def test_json_round_trip():
    cfg = RunConfig.from_dict(tiny_config())
    assert RunConfig.from_json(cfg.to_json()).to_dict() == cfg.to_dict()


def test_overrides_are_parsed_as_toml_values():
    raw = tiny_config()
    apply_override(raw, "optimizer.lr=0.05")
    apply_override(raw, "run.steps=200")
    apply_override(raw, "model.hidden=[8, 8]")
    apply_override(raw, "run.name=my run")
    cfg = RunConfig.from_dict(raw)
    assert (cfg.optimizer.lr, cfg.run.steps, cfg.model.hidden, cfg.run.name) == (0.05, 200, [8, 8], "my run")
    assert parse_override("optimizer.nesterov=true") == (["optimizer", "nesterov"], True)


@pytest.mark.parametrize("change, key, words", [
    ({"optimizer": {"lrr": 0.1}}, "optimizer.lrr", "did you mean 'lr'"),
    ({"optimizer": {"lr": "fast"}}, "optimizer.lr", "a number"),
    ({"optimizer": {"lr": -1}}, "optimizer.lr", "≥ 0"),
    ({"run": {"steps": 0}}, "run.steps", "integer ≥ 1"),
    ({"run": {"steps": 2.5}}, "run.steps", "integer"),
    ({"run": {"epochs": 3}}, "run.epochs", "not both"),
    ({"data": {"val_fraction": 1.5}}, "data.val_fraction", "in [0.0, 0.9]"),
    ({"data": {"source": "npz:missing.npz"}}, "data.source", "not found"),
    ({"model": {"name": "vgg"}}, "model.name", "'mlp'"),
    ({"model": {"hiden": [3]}}, "model.hiden", "did you mean 'hidden'"),
    ({"model": {"hidden": [0]}}, "model.hidden", "list of integers ≥ 1"),
    ({"optimizer": {"schedule": "cosin"}}, "optimizer.schedule", "did you mean 'cosine'"),
    ({"run": {"device": "tpu"}}, "run.device", "cuda:N"),
    ({"optimizer": {"betas": [0.9, 1.2]}}, "optimizer.betas", "[0, 1)"),
    ({"model": {"quantize": {"bitz": 4}}}, "model.quantize.bitz", "did you mean 'bits'"),
    ({"model": {"quantize": {"bits": 9}}}, "model.quantize.bits", "in [2, 8]"),
    ({"model": {"quantize": {"skip": [1]}}}, "model.quantize.skip", "a list of strings"),
    ({"data": {"group_share": 0.1}}, "data.group_share", "unknown key"),
])
def test_wrong_values_name_key_value_and_expectation(change, key, words):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict(tiny_config(**change))
    message = str(err.value)
    assert message.startswith(key + ":"), message
    assert words in message
    assert "\n" not in message


def test_unknown_section_and_plugin_are_refused():
    with pytest.raises(ConfigError, match="optimiser: unknown key.*did you mean 'optimizer'"):
        RunConfig.from_dict({**tiny_config(), "optimiser": {}})
    with pytest.raises(ConfigError, match="plugins.nosuch"):
        RunConfig.from_dict({**tiny_config(), "plugins": {"nosuch": {}}})


def test_plugin_settings_are_validated(example_plugin):
    cfg = RunConfig.from_dict({**tiny_config(), "plugins": {"example": {"probe_size": 8}}})
    assert cfg.plugins["example"] == {"enabled": True, "every": 5, "on": None, "probe_size": 8, "explode_at": 0,
                                       "explode_in_state": 0}
    with pytest.raises(ConfigError, match=r"plugins.example.probe_size: got -3, expected an integer ≥ 1"):
        RunConfig.from_dict({**tiny_config(), "plugins": {"example": {"probe_size": -3}}})
    with pytest.raises(ConfigError, match=r"plugins.example.probe_sise: unknown key.*did you mean 'probe_size'"):
        RunConfig.from_dict({**tiny_config(), "plugins": {"example": {"probe_sise": 3}}})


def test_epochs_instead_of_steps():
    cfg = RunConfig.from_dict(tiny_config(run={"steps": None, "epochs": 2}))
    assert cfg.run.steps is None and cfg.run.epochs == 2


@pytest.mark.parametrize("override, fragment", [
    ("optimizer.lrr=0.1", "optimizer.lrr: unknown key"),
    ("run.steps=ten", "run.steps: got 'ten'"),
    ("model.name=python:nofile.py:make", "model.name: got 'python:nofile.py:make', expected an existing file"),
])
def test_cli_reports_a_wrong_config_in_one_line_without_traceback(tmp_path, override, fragment):
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(EXAMPLE), "--set", override,
                           "--out", str(tmp_path / "x.h5")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
