"""Built-in models (mlp, cnn, a small resnet), user models from a Python file, and the embedding tap.

Every model ends in an ``nn.Linear`` head; the tap records that head's input during a forward pass,
so penultimate-layer embeddings come free with the logits instead of costing a second pass.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from .data import load_python_object
from .errors import ConfigError
from .quantize import quantize_model

_ACT = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}


class MLP(nn.Module):
    def __init__(self, input_shape, n_classes, hidden=(64, 64), activation="relu", dropout=0.0):
        super().__init__()
        layers, width = [nn.Flatten()], math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), _ACT[activation]()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_classes)

    def forward(self, x):
        return self.head(self.features(x))


class CNN(nn.Module):
    """Conv blocks (3×3 conv, activation, 2×2 max-pool while the image is ≥ 4 px), then a dense layer."""

    def __init__(self, input_shape, n_classes, channels=(16, 32), hidden=64, activation="relu"):
        super().__init__()
        c, h, w = _image_shape(input_shape, "cnn")
        layers = []
        for out in channels:
            layers += [nn.Conv2d(c, out, 3, padding=1), _ACT[activation]()]
            if min(h, w) >= 4:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = out
        layers += [nn.Flatten(), nn.Linear(c * h * w, hidden), _ACT[activation]()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x):
        return self.head(self.features(x))


class _Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out else
                     nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.skip(x))


class ResNet(nn.Module):
    """A small pre-activation-free ResNet: a stem, stages of basic blocks, global average pooling."""

    def __init__(self, input_shape, n_classes, width=16, blocks=(1, 1)):
        super().__init__()
        c, _, _ = _image_shape(input_shape, "resnet")
        layers = [nn.Conv2d(c, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        c = width
        for stage, n in enumerate(blocks):
            out = width * 2 ** stage
            for b in range(n):
                layers.append(_Block(c, out, 2 if (stage > 0 and b == 0) else 1))
                c = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, n_classes)

    def forward(self, x):
        return self.head(self.features(x))


def _image_shape(input_shape, name):
    if len(input_shape) != 3:
        raise ConfigError("model.name", name, f"image inputs (C, H, W) for a {name}; the data has shape "
                          f"{tuple(input_shape)} (use mlp)")
    return input_shape


BUILTIN = {"mlp": MLP, "cnn": CNN, "resnet": ResNet}


def build_model(model_cfg: dict, input_shape, n_classes: int, base_dir: Path) -> nn.Module:
    name = model_cfg["name"]
    options = {k: v for k, v in model_cfg.items() if k not in ("name", "quantize")}
    if name in BUILTIN:
        model = BUILTIN[name](tuple(input_shape), n_classes, **options)
    else:
        factory = load_python_object(base_dir, name.partition(":")[2], "model.name")
        model = factory(input_shape=tuple(input_shape), n_classes=n_classes, **options)
        if not isinstance(model, nn.Module):
            raise ConfigError("model.name", name, "a callable returning a torch.nn.Module")
    head_of(model)
    if "quantize" in model_cfg:
        quantize_model(model, model_cfg["quantize"])
    return model


def head_of(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` registered: its input is the penultimate embedding."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError("model.name", type(model).__name__,
                          "a model whose output layer is an nn.Linear (embeddings are its input)")
    return linears[-1]


class EmbeddingTap:
    """Context manager recording the head's input during forward passes (eval only)."""

    def __init__(self, model: nn.Module):
        self.head = head_of(model)
        self.captured: list[torch.Tensor] = []

    def __enter__(self):
        self._handle = self.head.register_forward_pre_hook(
            lambda _m, args: self.captured.append(args[0].detach().flatten(1)))
        return self

    def __exit__(self, *exc):
        self._handle.remove()
