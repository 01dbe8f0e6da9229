"""Quantisation-aware training (QAT) of Linear and Conv weights, and the integer weights it yields.

``[model.quantize]`` wraps each chosen layer's weight in a ``WeightQuantizer`` parametrisation: the
forward pass sees the fake-quantised weight (torch's own fake-quantisation ops, straight-through
gradients) while the optimizer updates the full-precision latent weight underneath, so checkpoints
and ``--resume`` carry the quantiser (a learned step size is a parameter like any other).

``quantized_layers`` finds every quantised weight of a model, ours or a ``torch.ao.quantization``
QAT module's (its ``weight_fake_quant``), and hands each out as a ``QuantizedLayer``: its current
integer weights (what the oscillation tracker follows) and the latent value of any grid point (what
freezing holds a weight at).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from .errors import ConfigError

MIN_STEP = 1e-8  # a step size is kept above this, so a learned one cannot reach zero or go negative
LAYER_TYPES = (nn.Linear, nn.modules.conv._ConvNd)


def _along(values: torch.Tensor, axis: int, ndim: int) -> torch.Tensor:
    """A per-channel vector shaped to broadcast along ``axis`` of an ``ndim``-dimensional weight."""
    shape = [1] * ndim
    shape[axis] = -1
    return values.reshape(shape)


def channel_axis(module: nn.Module) -> int:
    """The output-channel axis of a layer's weight (transposed convolutions keep it second)."""
    return 1 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 0


class WeightQuantizer(nn.Module):
    """Fake quantisation of one weight tensor to signed ``bits``-bit integers.

    ``scale = "lsq"``: a learned step size per channel (or per tensor), LSQ (Esser et al. 2020) as
    torch implements it in ``_fake_quantize_learnable_per_channel_affine``, initialised at
    2·mean|W|/√q_max with the gradient scaled by 1/√(N·q_max); grid points k·s.
    ``scale = "stats"``: OFQ's StatsQ, clipping at c = 2·mean|W| per row (or tensor) on a mid-rise
    grid (k + ½)·c/2^(b−1), recomputed from the weight at every pass; the gradient passes straight
    through, as in OFQ.
    """

    def __init__(self, weight: torch.Tensor, bits: int, per_channel: bool, scale: str, axis: int = 0):
        super().__init__()
        self.bits, self.per_channel, self.kind, self.axis = bits, per_channel, scale, axis
        self.qmin, self.qmax = -2 ** (bits - 1), 2 ** (bits - 1) - 1
        self.channels = weight.shape[axis] if per_channel else 1
        self.grad_factor = 1.0 / math.sqrt(weight.numel() / self.channels * self.qmax)
        self.register_buffer("zero_point", torch.zeros(weight.shape[axis], device=weight.device))
        if scale == "lsq":
            init = 2 * self._mean_abs(weight.detach()) / math.sqrt(self.qmax)
            self.scale = nn.Parameter(init.clamp(min=MIN_STEP))

    def _mean_abs(self, w: torch.Tensor) -> torch.Tensor:
        """mean|W| per channel, shape (channels,)."""
        if not self.per_channel:
            return w.abs().mean().reshape(1)
        return w.abs().transpose(0, self.axis).reshape(w.shape[self.axis], -1).mean(1)

    def step(self, w: torch.Tensor) -> torch.Tensor:
        """The grid step per output channel, shape (C,), as the forward pass uses it (detached)."""
        if self.kind == "lsq":
            s = self.scale.detach().clamp(min=MIN_STEP)
        else:
            s = (2 * self._mean_abs(w.detach()) / 2 ** (self.bits - 1)).clamp(min=MIN_STEP)
        return s.expand(w.shape[self.axis])

    @property
    def offset(self) -> float:
        """Where grid point k sits, in steps: k·s for LSQ, (k + ½)·s on StatsQ's mid-rise grid."""
        return 0.5 if self.kind == "stats" else 0.0

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.kind == "lsq":
            s = self.scale.clamp(min=MIN_STEP).expand(w.shape[self.axis])
            return torch._fake_quantize_learnable_per_channel_affine(
                w, s, self.zero_point, self.axis, self.qmin, self.qmax, self.grad_factor)
        with torch.no_grad():
            q = self._stats_quantized(w)
        return q + (w - w.detach())  # exactly q forward; straight through, unclipped, backward (OFQ)

    def _stats_quantized(self, w: torch.Tensor) -> torch.Tensor:
        s = self.step(w)
        half = _along(s, self.axis, w.dim()) / 2
        zero = self.zero_point.to(torch.int32)
        return torch.fake_quantize_per_channel_affine(w - half, s, zero, self.axis, self.qmin, self.qmax) + half

    def integers(self, w: torch.Tensor) -> torch.Tensor:
        """The integer grid indices the forward pass rounds ``w`` to (int8), bit for bit."""
        s = _along(self.step(w), self.axis, w.dim())
        x = w.detach() - s / 2 if self.kind == "stats" else w.detach()
        return torch.round(x * (1 / s)).clamp_(self.qmin, self.qmax).to(torch.int8)

    def grid(self, k: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Latent values of the grid points ``k`` (at the current step size), rounded as the forward
        pass rounds them."""
        s = _along(self.step(w), self.axis, w.dim())
        return k.to(w.dtype) * s + self.offset * s

    def bounds(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The lowest and the highest grid point, per channel, broadcastable to ``w``."""
        s = _along(self.step(w), self.axis, w.dim())
        return (self.qmin + self.offset) * s, (self.qmax + self.offset) * s

    def extra_repr(self) -> str:
        return f"bits={self.bits}, per_channel={self.per_channel}, scale={self.kind}"


class TorchAoWeight:
    """The same questions answered for a ``torch.ao.quantization`` QAT module's ``weight_fake_quant``,
    from the scale and zero point its last forward pass used (FakeQuantize, its fused and learnable
    variants). Integers are centred, so any quant range fits int8."""

    def __init__(self, fake_quant: nn.Module, axis: int):
        self.fq = fake_quant
        self.axis = int(getattr(fake_quant, "ch_axis", axis))
        self.qmin, self.qmax = int(fake_quant.quant_min), int(fake_quant.quant_max)
        self.center = (self.qmin + self.qmax + 1) // 2
        self.bits = max(1, math.ceil(math.log2(self.qmax - self.qmin + 1)))

    def _params(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self.fq.scale.detach().to(w.dtype)
        zero = self.fq.zero_point.detach().to(w.dtype).round().clamp(self.qmin, self.qmax)
        if scale.numel() > 1:
            return _along(scale, self.axis, w.dim()), _along(zero, self.axis, w.dim())
        return scale.reshape(()), zero.reshape(())

    def integers(self, w: torch.Tensor) -> torch.Tensor:
        s, z = self._params(w)
        k = torch.round(w.detach() * (1 / s)).add_(z).clamp_(self.qmin, self.qmax)
        return k.sub_(self.center).to(torch.int8)

    def grid(self, k: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s, z = self._params(w)
        return (k.to(w.dtype) + self.center - z) * s

    def bounds(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, z = self._params(w)
        return (self.qmin - z) * s, (self.qmax - z) * s


@dataclass
class QuantizedLayer:
    """One quantised weight: ``latent`` is the parameter the optimizer updates."""

    name: str
    latent: nn.Parameter
    quantizer: WeightQuantizer | TorchAoWeight

    @property
    def bits(self) -> int:
        return self.quantizer.bits

    def integers(self) -> torch.Tensor:
        return self.quantizer.integers(self.latent)

    def grid(self, k: torch.Tensor) -> torch.Tensor:
        return self.quantizer.grid(k, self.latent.detach())

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.quantizer.bounds(self.latent.detach())


class IntegerWeights:
    """Every layer's integer weights end to end in one int8 vector, bit for bit as
    ``QuantizedLayer.integers`` gives them layer by layer, in few tensor operations. Consecutive LSQ
    layers on one grid (same bits; step sizes along the weight's first axis) share their step sizes'
    clamp and inverse, and the rounding, clamp and conversion of all their weights: one multiply a
    layer is left. Other layers are read one by one. (Read layer by layer, at some ten small
    operations a layer, the integers of a deep model cost the oscillation plugin more than all the
    rest of its step.)"""

    def __init__(self, layers: list[QuantizedLayer]):
        self.runs: list[tuple[list[QuantizedLayer], bool]] = []  # consecutive layers, and whether read together
        for q in layers:
            key = _fused_grid(q)
            if key is not None and self.runs and _fused_grid(self.runs[-1][0][0]) == key:
                self.runs[-1][0].append(q)
            else:
                self.runs.append(([q], key is not None))

    def __call__(self) -> torch.Tensor:
        with torch.no_grad():
            parts = [_read_together(run) if together else run[0].integers().reshape(-1) for run, together in self.runs]
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def _read_together(run: list[QuantizedLayer]) -> torch.Tensor:
    """k = clamp(round(w · (1/s))) of LSQ layers on one grid, as ``WeightQuantizer.integers`` has it."""
    inverse = torch.cat([q.quantizer.scale for q in run]).clamp_(min=MIN_STEP).reciprocal_()
    x = torch.empty(sum(q.latent.numel() for q in run), dtype=run[0].latent.dtype, device=run[0].latent.device)
    at = 0
    for q, inv in zip(run, inverse.split([q.quantizer.channels for q in run])):
        n = q.latent.numel()
        rows = (q.quantizer.channels, n // q.quantizer.channels)
        torch.mul(q.latent.reshape(rows), inv[:, None], out=x[at:at + n].view(rows))
        at += n
    return x.round_().clamp_(run[0].quantizer.qmin, run[0].quantizer.qmax).to(torch.int8)


def _fused_grid(q: QuantizedLayer) -> tuple | None:
    """What layers must share to be read together (None: read on its own): an LSQ quantiser whose
    step sizes go along the first axis (or one for the tensor), its integer range, dtype and device."""
    z = q.quantizer
    if isinstance(z, WeightQuantizer) and z.kind == "lsq" and (z.axis == 0 or not z.per_channel):
        return z.qmin, z.qmax, q.latent.dtype, q.latent.device
    return None


def quantized_layers(model: nn.Module) -> list[QuantizedLayer]:
    """Every fake-quantised Linear or Conv weight of ``model``, in registration order."""
    out = []
    for name, m in model.named_modules():
        if parametrize.is_parametrized(m, "weight"):
            chain = m.parametrizations.weight
            if len(chain) == 1 and isinstance(chain[0], WeightQuantizer):
                out.append(QuantizedLayer(name, chain.original, chain[0]))
        elif _is_torch_ao_qat(m):
            out.append(QuantizedLayer(name, m.weight, TorchAoWeight(m.weight_fake_quant, channel_axis(m))))
    return out


def _is_torch_ao_qat(m: nn.Module) -> bool:
    """A torch.ao QAT layer that fake-quantises its own weight (not a fused Conv-BN, whose quantised
    weight is the BN-folded one)."""
    return (isinstance(m, LAYER_TYPES) and isinstance(getattr(m, "weight_fake_quant", None), nn.Module)
            and isinstance(m.weight, nn.Parameter) and not hasattr(m, "bn"))


def quantize_model(model: nn.Module, options: dict) -> list[str]:
    """Apply ``[model.quantize]`` (validated: bits, granularity, scale, skip) in place; returns the
    names of the quantised layers."""
    if any(_is_torch_ao_qat(m) for m in model.modules()):
        raise ConfigError("model.quantize", options, "no [model.quantize] table: the model is already "
                          "prepared for QAT with torch.ao.quantization (it is tracked as it is)")
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, LAYER_TYPES)]
    names = [name for name, _ in layers]
    skip = set()
    for item in options["skip"]:
        if item in ("first", "last"):
            skip.add(names[0 if item == "first" else -1])
        elif item in names:
            skip.add(item)
        else:
            raise ConfigError("model.quantize.skip", options["skip"],
                              f'"first", "last" or layer names of the model ({", ".join(names)})')
    chosen = [(name, m) for name, m in layers if name not in skip]
    if not chosen:
        raise ConfigError("model.quantize.skip", options["skip"],
                          f"at least one of the model's layers ({', '.join(names)}) left to quantise")
    for name, m in chosen:
        quantizer = WeightQuantizer(m.weight, options["bits"], options["granularity"] == "channel",
                                    options["scale"], channel_axis(m))
        parametrize.register_parametrization(m, "weight", quantizer)
    return [name for name, _ in chosen]
