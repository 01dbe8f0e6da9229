"""Quantisation-aware training: engine/quantize.py and the [model.quantize] table."""
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from conftest import tiny_config
from engine import open_run, run_training
from engine.config import RunConfig
from engine.errors import ConfigError
from engine.models import build_model
from engine.quantize import IntegerWeights, WeightQuantizer, channel_axis, quantize_model, quantized_layers
from plugins.oscillation.analysis import Freezer, OscillationTracker

OPTIONS = {"bits": 4, "granularity": "channel", "scale": "lsq", "skip": []}


def quantized(module: nn.Module, **options) -> nn.Module:
    quantize_model(module, {**OPTIONS, **options})
    return module


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("scale", ["lsq", "stats"])
@pytest.mark.parametrize("granularity", ["channel", "tensor"])
@pytest.mark.parametrize("make", [lambda: nn.Linear(33, 7), lambda: nn.Conv2d(3, 5, 3),
                                  lambda: nn.ConvTranspose2d(4, 6, 3)], ids=["linear", "conv", "conv_transpose"])
def test_integer_weights_reproduce_the_fake_quantised_weight_bit_for_bit(bits, scale, granularity, make):
    torch.manual_seed(bits)
    module = quantized(nn.Sequential(make()), bits=bits, scale=scale, granularity=granularity)
    (layer,) = quantized_layers(module)
    with torch.no_grad():
        layer.latent.mul_(3)  # weights beyond the clipping range too
    k = layer.integers()
    assert k.dtype == torch.int8 and k.shape == layer.latent.shape
    assert k.min() >= -2 ** (bits - 1) and k.max() <= 2 ** (bits - 1) - 1 and len(k.unique()) > 2
    assert torch.equal(layer.grid(k), module[0].weight.detach())  # what the forward pass uses


def test_all_layers_integers_at_once_are_each_layers_bit_for_bit():
    """LSQ layers on one grid are read together; a StatsQ layer, a transposed convolution (step
    sizes along its second axis) and another bit width break the run and are read on their own."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 8, 3), nn.ConvTranspose2d(8, 3, 3), nn.Linear(5, 7),
                          nn.Linear(7, 3), nn.Conv2d(3, 3, 1), nn.Linear(3, 3))
    grids = [(4, True, "lsq"), (4, False, "lsq"), (4, True, "lsq"), (4, True, "stats"), (8, True, "lsq"),
             (8, True, "lsq"), (4, True, "lsq")]
    for m, (bits, per_channel, scale) in zip(model, grids):
        torch.nn.utils.parametrize.register_parametrization(
            m, "weight", WeightQuantizer(m.weight, bits, per_channel, scale, channel_axis(m)))
    layers = quantized_layers(model)
    read = IntegerWeights(layers)
    assert [([q.name for q in run], together) for run, together in read.runs] == [
        (["0", "1"], True), (["2"], False), (["3"], False), (["4", "5"], True), (["6"], True)]
    for _ in range(20):
        with torch.no_grad():  # moved weights and step sizes
            for q in layers:
                q.latent.add_(0.3 * torch.randn_like(q.latent))
                if hasattr(q.quantizer, "scale"):
                    q.quantizer.scale.mul_(torch.exp(torch.randn_like(q.quantizer.scale)))
            layers[0].quantizer.scale[0] = 0.0  # held at the smallest step, as the forward pass holds it
            layers[0].latent[0] = 3e-8 * torch.randn_like(layers[0].latent[0])
        k = read()
        assert k.dtype == torch.int8 and torch.equal(k, torch.cat([q.integers().reshape(-1) for q in layers]))


def test_lsq_gradients_match_the_paper_written_with_autograd():
    """Esser et al.'s LSQ as usually written (round with a straight-through gradient, the step's
    gradient scaled by 1/√(N·q_max)) against torch's fused learnable fake-quantisation."""
    torch.manual_seed(0)
    lin = quantized(nn.Linear(40, 6))
    q = lin.parametrizations.weight[0]
    w, s = lin.parametrizations.weight.original, q.scale
    x = torch.randn(16, 40)
    lin(x).pow(2).sum().backward()
    ours_w, ours_s = w.grad.clone(), s.grad.clone()

    w2, s2 = w.detach().clone().requires_grad_(), s.detach().clone().requires_grad_()
    g = 1 / math.sqrt(40 * 7)
    s_scaled = (s2 - s2 * g).detach() + s2 * g
    v = torch.clamp(w2 / s_scaled[:, None], -8, 7)
    v = (v.round() - v).detach() + v
    ((x @ (v * s_scaled[:, None]).T + lin.bias.detach()).pow(2).sum()).backward()
    assert torch.allclose(ours_w, w2.grad, rtol=1e-5, atol=1e-6)
    assert torch.allclose(ours_s, s2.grad, rtol=1e-4, atol=1e-6)


def test_statsq_matches_ofq_and_passes_gradients_straight_through():
    torch.manual_seed(1)
    lin = quantized(nn.Linear(30, 5), scale="stats")
    w = lin.parametrizations.weight.original
    c = 2 * w.detach().abs().mean(dim=1, keepdim=True)  # OFQ's StatsQ, 4 bits: n = 8
    ofq = c * ((torch.round(torch.clamp(w.detach() / c, -1, 1 - 1e-6) * 8 - 0.5) + 0.5) / 8)
    assert torch.allclose(lin.weight, ofq, atol=1e-6)
    lin.weight.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_skip_takes_first_last_and_names():
    mlp = build_model({"name": "mlp", "hidden": [8, 8], "activation": "relu", "dropout": 0.0,
                       "quantize": {**OPTIONS, "skip": ["first", "last"]}}, (1, 8, 8), 10, None)
    assert [q.name for q in quantized_layers(mlp)] == ["features.3"]
    cnn = build_model({"name": "cnn", "channels": [4, 8], "hidden": 16, "activation": "relu",
                       "quantize": {**OPTIONS, "skip": ["head"]}}, (1, 8, 8), 10, None)
    assert [q.name for q in quantized_layers(cnn)] == ["features.0", "features.3", "features.7"]


def test_wrong_skip_names_the_key_the_value_and_the_layers(tmp_path):
    raw = tiny_config(model={"name": "mlp", "hidden": [16], "quantize": {"skip": ["features.9"]}})
    with pytest.raises(ConfigError) as err:
        run_training(raw, tmp_path / "x.h5")
    message = str(err.value)
    assert message == ("model.quantize.skip: got ['features.9'], expected \"first\", \"last\" or layer names of "
                       "the model (features.1, head)") and "\n" not in message
    with pytest.raises(ConfigError, match="at least one of the model's layers"):
        quantized(nn.Sequential(nn.Linear(2, 2)), skip=["first"])
    with pytest.raises(ConfigError, match="model.quantize.bits: got 9, expected an integer in \\[2, 8\\]"):
        RunConfig.from_dict(tiny_config(model={"name": "mlp", "quantize": {"bits": 9}}))


def prepared_with_torch_ao() -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        import torch.ao.quantization as tq
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
        model.qconfig = tq.get_default_qat_qconfig("fbgemm")
        return tq.prepare_qat(model.train())


def test_a_torch_ao_qat_model_is_recognised_with_its_own_integers():
    model = prepared_with_torch_ao()
    model(torch.randn(8, 1, 8, 8))  # the observers set the scales
    layers = quantized_layers(model)
    assert [q.name for q in layers] == ["1", "3"] and all(q.bits == 8 for q in layers)
    for q, m in zip(layers, (model[1], model[3])):
        fq = m.weight_fake_quant
        fq.disable_observer()
        assert torch.equal(q.grid(q.integers()), fq(m.weight).detach())
    with pytest.raises(ConfigError, match="already prepared for QAT with torch.ao.quantization"):
        quantize_model(model, OPTIONS)


@pytest.mark.parametrize("optimizer", [lambda p: torch.optim.SGD(p, lr=0.05),
                                       lambda p: torch.optim.Adam(p, lr=0.02)], ids=["sgd", "adam"])
@pytest.mark.parametrize("optimum, nearer", [(0.3, 0), (0.7, 1)])
def test_a_weight_between_two_grid_points_oscillates_and_freezing_stops_it_at_the_nearer(optimizer, optimum, nearer):
    """One 4-bit weight with grid step 1 and loss ½(q(w) − w*)², w* between the grid points 0 and 1:
    straight-through training keeps crossing the rounding boundary at ½; freezing holds it at the
    grid point nearer w*, whatever the optimizer's momentum."""
    lin = quantized(nn.Linear(1, 1, bias=False))
    (layer,) = quantized_layers(lin)
    q = lin.parametrizations.weight[0]
    q.scale.data.fill_(1.0)
    q.scale.requires_grad_(False)
    layer.latent.data.fill_(0.1)
    opt = optimizer([layer.latent])
    tracker, freezer = OscillationTracker(1, momentum=0.05, window=100), Freezer(1, momentum=0.05)
    history = []
    for step in range(400):
        k = layer.integers().reshape(-1)
        tracker.update(k)
        history.append(int(k))
        freezer.update(k, tracker.ema_frequency(), 0.05 if step >= 200 else None)
        loss = 0.5 * (lin.weight.sum() - optimum) ** 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        if freezer.frozen.any():  # what the plugin's on_update does
            with torch.no_grad():
                layer.latent.copy_(torch.where(freezer.frozen.view(1, 1), layer.grid(freezer.values().view(1, 1)),
                                               layer.latent))
    before = np.array(history[50:200])
    assert set(before) == {0, 1} and np.sum(before[1:] != before[:-1]) > 20  # it oscillates
    assert freezer.frozen.all() and int(freezer.values()) == nearer
    assert set(history[-150:]) == {nearer}  # and stays there


@pytest.mark.parametrize("model", [{"name": "mlp", "hidden": [64, 64]},
                                   {"name": "cnn", "channels": [16, 32], "hidden": 64}], ids=["mlp", "cnn"])
def test_4_bit_models_on_digits_stay_within_3_points_of_full_precision(tmp_path, model):
    def accuracy(quantize):
        m = {**model, **({"quantize": quantize} if quantize else {})}
        cfg = {"run": {"seed": 0, "steps": 300, "eval_every": 300, "threads": 1},
               "data": {"source": "digits", "batch_size": 64}, "model": m,
               "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}}
        run_training(cfg, tmp_path / "a.h5", overwrite=True)  # the same file for both runs, on purpose
        return open_run(tmp_path / "a.h5").series("val/accuracy")[1][-1]
    full = accuracy(None)
    assert full > 0.95
    assert accuracy({"bits": 4}) >= full - 0.03
