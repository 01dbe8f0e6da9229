import numpy as np
import pytest
import torch

from engine.data import BatchOrder, load_data
from engine.errors import DataError


def test_digits_split_is_deterministic_disjoint_and_keeps_ids(tmp_path):
    a = load_data("digits", 0.2, seed=3, base_dir=tmp_path)
    b = load_data("digits", 0.2, seed=3, base_dir=tmp_path)
    c = load_data("digits", 0.2, seed=4, base_dir=tmp_path)
    assert len(a.train) + len(a.val) == 1797 and len(a.val) == 359
    assert np.array_equal(a.val.ids, b.val.ids) and not np.array_equal(a.val.ids, c.val.ids)
    assert not set(a.train.ids) & set(a.val.ids)
    from sklearn.datasets import load_digits
    d = load_digits()
    i = 5  # a sample's id is its index in the source: its pixels and label follow it
    assert np.allclose(a.val.x[i, 0].numpy(), d.images[a.val.ids[i]] / 16.0)
    assert a.val.y[i].item() == d.target[a.val.ids[i]]
    assert a.input_shape == (1, 8, 8) and a.n_classes == 10


def _write(path, **arrays):
    np.savez(path, **arrays)
    return f"npz:{path.name}"


def test_npz_with_validation_class_names_and_metadata(tmp_path):
    rng = np.random.default_rng(0)
    src = _write(tmp_path / "d.npz", x=rng.normal(size=(50, 6)).astype(np.float32), y=rng.integers(0, 3, 50),
                 x_val=rng.normal(size=(20, 6)), y_val=rng.integers(0, 3, 20),
                 class_names=np.array(["cat", "dog", "eel"]), meta_colour=np.array(["red"] * 50),
                 meta_val_colour=np.array(["blue"] * 20))
    d = load_data(src, 0.2, 0, tmp_path)
    assert len(d.train) == 50 and len(d.val) == 20
    assert d.class_names == ["cat", "dog", "eel"] and d.input_shape == (6,)
    assert list(d.val.ids) == list(range(50, 70))
    assert set(d.val.metadata["colour"]) == {"blue"} and set(d.train.metadata["colour"]) == {"red"}


def test_npz_metadata_follows_the_split(tmp_path):
    x = np.arange(40, dtype=np.float32).reshape(40, 1)
    src = _write(tmp_path / "d.npz", x=x, y=np.arange(40) % 2, meta_index=np.arange(40))
    d = load_data(src, 0.25, 1, tmp_path)
    assert np.array_equal(d.val.metadata["index"], d.val.ids)
    assert np.array_equal(d.val.x[:, 0].numpy(), d.val.ids.astype(np.float32))


@pytest.mark.parametrize("arrays, message", [
    (dict(x=np.zeros((5, 2)), y=np.zeros(4, int)), "x has 5 samples but y has shape (4,)"),
    (dict(x=np.zeros((5, 2)), y=np.array([0, 1, -1, 0, 1])), "label -1 is negative"),
    (dict(x=np.zeros((3, 2)), y=np.array([0, 1, 2]), class_names=np.array(["a", "b"])), "label 2 (row 2 of y) out of range for 2 class_names"),
    (dict(x=np.array([[0, 1], [np.nan, 0]]), y=np.array([0, 1])), "1 inputs contain NaN or inf (first at sample 1)"),
    (dict(x=np.zeros((5, 2)), y=np.zeros(5, int), meta_a=np.zeros(4)), "meta_a has 4 rows; expected 5"),
    (dict(x=np.zeros((5, 2))), "expected arrays 'x' and 'y'"),
    (dict(x=np.zeros((5, 2)), y=np.array([0, 1, 0.5, 0, 1])), "labels y must be integers"),
])
def test_bad_data_is_refused_with_a_clear_message(tmp_path, arrays, message):
    src = _write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as err:
        load_data(src, 0.2, 0, tmp_path)
    assert message in str(err.value)


def test_python_factory(tmp_path):
    (tmp_path / "make.py").write_text(
        "import torch\nfrom torch.utils.data import TensorDataset\n"
        "def data():\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    x = torch.randn(30, 4, generator=g)\n"
        "    return {'train': TensorDataset(x, (x[:, 0] > 0).long()), 'class_names': ['neg', 'pos']}\n")
    d = load_data("python:make.py:data", 0.2, 0, tmp_path)
    assert len(d.train) == 24 and len(d.val) == 6 and d.class_names == ["neg", "pos"]
    assert torch.equal(d.train.y, (d.train.x[:, 0] > 0).long())


def test_batch_order_visits_every_sample_once_per_epoch_and_is_reproducible():
    order = BatchOrder(10, 4, seed=1)
    assert order.per_epoch == 3
    epoch = torch.cat([order.indices(s) for s in (1, 2, 3)])
    assert sorted(epoch.tolist()) == list(range(10))
    fresh = BatchOrder(10, 4, seed=1)
    assert torch.equal(fresh.indices(5), order.indices(5))  # any step's batch from the step alone
    assert not torch.equal(torch.cat([order.indices(s) for s in (4, 5, 6)]), epoch)
