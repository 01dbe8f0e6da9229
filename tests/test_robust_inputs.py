"""Inputs that would exhaust the machine or train nonsense are refused before training, in one line
that names the cause, and a run that never started leaves no file."""
import numpy as np
import pytest

from conftest import tiny_config
from engine import open_run, run_training
from engine.config import RunConfig
from engine.errors import ConfigError, DataError
from robust_helpers import one_line, run_traindx, write_config


def _nothing_written(folder) -> bool:
    return not [p for p in folder.iterdir() if p.suffix in (".h5", ".part", ".lock", ".ckpt")]


@pytest.mark.parametrize("change, message", [
    ({"optimizer": {"lr": float("nan")}}, "optimizer.lr: got nan, expected a number ≥ 0.0, not NaN or infinite"),
    ({"optimizer": {"lr": float("inf")}}, "optimizer.lr: got inf"),
    ({"optimizer": {"weight_decay": float("inf")}}, "optimizer.weight_decay: got inf"),
    ({"optimizer": {"betas": [0.9, float("nan")]}}, "optimizer.betas: got [0.9, nan]"),
    ({"plugins": {"sharpness": {"tol": float("nan")}}}, "plugins.sharpness.tol: got nan"),
    ({"optimizer": {"nesterov": True}}, "optimizer.nesterov: got True, expected false, or optimizer.momentum > 0"),
    ({"run": {"seed": 2 ** 63}}, "run.seed: got 9223372036854775808, expected an integer in [0, 9223372036854775807]"),
    ({"run": {"device": "cuda:first"}}, "run.device: got 'cuda:first', expected \"auto\", \"cpu\", \"cuda\" or \"cuda:N\""),
    ({"run": {"device": "gpu"}}, "run.device: got 'gpu'"),
    ({"data": {"n_classes": 10 ** 9}}, "data.n_classes: got 1000000000, expected an integer in [2, 1000000]"),
])
def test_config_values_torch_would_choke_on_are_refused_by_validation(change, message):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict(tiny_config(**change))
    assert str(err.value).startswith(message)


def test_the_largest_seed_trains(tmp_path):
    assert run_training(tiny_config(run={"seed": 2 ** 63 - 1, "steps": 3}), tmp_path / "r.h5") == "finished"


def _npz(tmp_path, name="d.npz", **arrays):
    rng = np.random.default_rng(0)
    arrays.setdefault("x", rng.normal(size=(60, 4)).astype(np.float32))
    arrays.setdefault("y", rng.integers(0, 3, 60))
    np.savez(tmp_path / name, **arrays)
    return tiny_config(data={"source": f"npz:{tmp_path / name}"}, run={"steps": 3})


def _refused(tmp_path, cfg, error, words):
    with pytest.raises(error) as err:
        run_training(cfg, tmp_path / "r.h5")
    assert words in str(err.value) and "\n" not in str(err.value)
    assert _nothing_written(tmp_path)
    return str(err.value)


def test_one_huge_label_is_refused_naming_it_and_its_row_without_allocating(tmp_path):
    y = np.zeros(60, np.int64)
    y[::2] = 1
    y[7] = 10 ** 9
    message = _refused(tmp_path, _npz(tmp_path, y=y), DataError, "label 1000000000 (row 7 of y) implies "
                       "1,000,000,001 classes, but only 3 different labels occur; set data.n_classes")
    assert message.startswith(str(tmp_path / "d.npz"))


def test_a_stray_label_is_refused_unless_the_class_count_is_given(tmp_path):
    y = np.arange(60) % 3
    y[59] = 50_000
    cfg = _npz(tmp_path, y=y)
    _refused(tmp_path, cfg, DataError, "label 50000 (row 59 of y) implies 50,001 classes")
    cfg["data"]["n_classes"] = 50_001  # said on purpose: the limit is lifted
    assert run_training(cfg, tmp_path / "r.h5") == "finished"
    assert open_run(tmp_path / "r.h5").meta["n_classes"] == 50_001


@pytest.mark.parametrize("arrays, words", [
    (dict(y=np.array(["cat", "dog", "eel"] * 20)), "labels y are <U3 values such as 'cat'; expected integers"),
    (dict(x=np.zeros((0, 4)), y=np.zeros(0, int)), "array 'x' is empty (0 samples)"),
    (dict(x_val=np.zeros((5, 4)), y_val=np.zeros(5, int), meta_a=np.zeros(60), meta_val_a=np.zeros(4)),
     "metadata column meta_val_a has 4 rows; expected 5 like x_val"),
    (dict(y=np.arange(60) % 3, class_names=np.array(["a", "b"])), "label 2 (row 2 of y) out of range for 2 class_names"),
])
def test_bad_arrays_are_refused_naming_the_file_and_the_array(tmp_path, arrays, words):
    message = _refused(tmp_path, _npz(tmp_path, **arrays), DataError, words)
    assert message.startswith(str(tmp_path / "d.npz"))


def test_a_file_that_is_not_an_npz_is_refused_naming_it(tmp_path):
    (tmp_path / "d.npz").write_text("x,y\n1,2\n")
    cfg = tiny_config(data={"source": f"npz:{tmp_path / 'd.npz'}"})
    _refused(tmp_path, cfg, DataError, f"{tmp_path / 'd.npz'}: not an .npz archive of arrays")


def _python(tmp_path, code: str, model=None, data=None):
    """A config using the user's code in user.py: ``model`` and ``data`` name what it holds."""
    (tmp_path / "user.py").write_text("import torch\nfrom torch import nn\n" + code)
    cfg = tiny_config(run={"steps": 3})
    if model:
        cfg["model"] = {"name": f"python:{tmp_path / 'user.py'}:{model.pop('name')}", **model}
    if data:
        cfg["data"]["source"] = f"python:{tmp_path / 'user.py'}:{data}"
    return cfg


def test_a_data_function_returning_a_list_is_refused(tmp_path):
    cfg = _python(tmp_path, "def data():\n    return [1, 2, 3]\n", data="data")
    _refused(tmp_path, cfg, DataError, "user.py:data returned a list whose item 0 is 1, not an (x, y) pair")


def test_a_misspelt_model_option_is_named_with_the_accepted_ones(tmp_path):
    code = "def make(input_shape, n_classes, width=8):\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), " \
           "nn.Linear(width, n_classes))\n"
    cfg = _python(tmp_path, code, model={"name": "make", "widht": 32})
    _refused(tmp_path, cfg, ConfigError, "model.widht: unknown key; expected an option of python:")
    _refused(tmp_path, cfg, ConfigError, "user.py:make: one of width (did you mean 'width'?)")


def test_a_model_with_more_logits_than_classes_is_refused_before_step_one(tmp_path):
    code = "def make(input_shape, n_classes):\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, 7))\n"
    cfg = _python(tmp_path, code, model={"name": "make"})
    _refused(tmp_path, cfg, ConfigError, "one output per class: the data has 10 classes, the model's output "
             "has shape (7,)")


def test_a_failure_before_training_does_not_claim_a_run_file(tmp_path):
    (tmp_path / "user.py").write_text("def make(input_shape, n_classes):\n    raise RuntimeError('no GPU kernel')\n")
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace('name = "mlp"\nhidden = [16]', 'name = "python:user.py:make"'))
    done = run_traindx("run", config, "--out", tmp_path / "r.h5", "--quiet")
    assert done.returncode == 1
    assert one_line(done.stderr) == ("traindx: RuntimeError: no GPU kernel before training started; nothing was "
                                     "written")
    assert _nothing_written(tmp_path)
