import pytest
import torch

from engine.errors import ConfigError
from engine.models import EmbeddingTap, build_model


@pytest.mark.parametrize("cfg", [{"name": "mlp", "hidden": [16, 8], "activation": "tanh", "dropout": 0.0},
                                 {"name": "cnn", "channels": [4, 8], "hidden": 12, "activation": "relu"},
                                 {"name": "resnet", "width": 4, "blocks": [1, 1]}])
def test_builtin_models_give_logits_and_free_embeddings(tmp_path, cfg):
    model = build_model(cfg, (1, 8, 8), 10, tmp_path).eval()
    x = torch.rand(5, 1, 8, 8)
    with EmbeddingTap(model) as tap:
        logits = model(x)
    assert logits.shape == (5, 10)
    emb = tap.captured[0]
    assert torch.allclose(model.head(emb), logits, atol=1e-6)  # the embedding is the head's input
    assert torch.allclose(emb, model.features(x).flatten(1))
    assert not model.head._forward_pre_hooks  # the tap is removed after use


def test_user_model_from_python_file(tmp_path):
    (tmp_path / "net.py").write_text(
        "import torch.nn as nn, math\n"
        "def make(input_shape, n_classes, width=7):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.ReLU(),\n"
        "                         nn.Linear(width, n_classes))\n")
    model = build_model({"name": "python:net.py:make", "width": 5}, (1, 8, 8), 3, tmp_path)
    with EmbeddingTap(model) as tap:
        assert model(torch.rand(2, 1, 8, 8)).shape == (2, 3)
    assert tap.captured[0].shape == (2, 5)


def test_cnn_on_flat_data_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="image inputs"):
        build_model({"name": "cnn", "channels": [4], "hidden": 8, "activation": "relu"}, (6,), 2, tmp_path)
