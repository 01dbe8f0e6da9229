"""Oscillation plugin: which weights bounce between two values instead of converging, in which
layers, since when; and, as options, Nagel et al.'s two remedies.

In a quantisation-aware run (a model with fake-quantised weights, from ``[model.quantize]`` or
``torch.ao.quantization``) it tracks the integer weights of every quantised layer. In a
full-precision run it tracks the direction of each Linear and Conv weight's update instead, by the
same definition: a reversal is an update whose sign is opposite to the weight's previous non-zero
update. Tracking runs at every step, since the definition is about consecutive updates, and costs a
few integer operations per weight; rows are written every ``every`` steps (flip rates and gradient
cosines averaged over the steps in between), the exact frequency histogram at the end of each window.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from engine.plugin import Evidence, Finding, Plugin, RunContext, Series, Setting, StepContext, View
from engine.quantize import LAYER_TYPES, IntegerWeights, QuantizedLayer, quantized_layers

from . import analysis as A

PREFIX = "oscillation/"
HIST_BINS = 20  # equal-width bins of the window frequency over (0, 1]
UNIT_INTEGER = "oscillations / weight / step"
UNIT_UPDATE = "reversals / weight / step"
RATE_UNIT = "per weight per step"  # a finding's rate, in the words its sentence uses
SEVERE_SHARE = 0.05  # a layer with this share of its weights oscillating earns a warning
NOTABLE_SHARE = 0.01  # below this share no layer is named as oscillating
PENDING_GRAMS = 64  # steps of gradient Gram matrices held before their cosines are summed (at rows, or when full)
JUMP_ROWS, JUMP_RISE = 5, 0.1  # a flip-rate jump: the mean of 5 rows rises by 0.1 per step or more
EDGE_BAND = 0.1  # λ_max within 10 % of the threshold is "at the edge of stability" (as sharpness says)
COSINE_BAND = 0.2  # consecutive gradients with a mean cosine within ±0.2 are nearly unrelated


def share(x: float) -> float:
    """A share as a finding states it, in percent with one decimal (the value column shows the same)."""
    return round(100 * float(x), 1)


def two(x: float) -> float:
    """A rate or cosine as a finding states it: two decimals."""
    return round(float(x), 2)


@dataclass
class Layer:
    """A tracked weight: its name, the parameter the optimizer updates, its quantiser (QAT only)."""

    name: str
    weight: torch.nn.Parameter
    quantized: QuantizedLayer | None = None

    @property
    def size(self) -> int:
        return self.weight.numel()


def tracked_layers(model: torch.nn.Module) -> tuple[list[Layer], bool]:
    """The quantised layers if the model has any (True), else every Linear and Conv weight."""
    quantized = quantized_layers(model)
    if quantized:
        return [Layer(q.name, q.latent, q) for q in quantized], True
    return [Layer(name, m.weight) for name, m in model.named_modules()
            if isinstance(m, LAYER_TYPES) and m.weight.requires_grad], False


class OscillationPlugin(Plugin):
    name = "oscillation"
    title = "Oscillation"
    description = ("Which weights bounce between two values instead of converging, per layer: integer "
                   "weights under quantisation-aware training (Nagel et al. 2022), update directions in "
                   "full precision; consecutive-gradient cosines; oscillation freezing and dampening. "
                   "Tracks every step; `every` sets how often rows are written.")
    default_every = 10
    settings = (
        Setting("threshold", 0.02, "a weight oscillates when its EMA frequency is above this many "
                "oscillations per step", min=0.0, max=1.0),
        Setting("momentum", 0.01, "momentum of the per-weight EMA frequency (about 1/momentum steps of memory)",
                min=0.001, max=A.MAX_MOMENTUM),
        Setting("window", 256, "steps per window of exact oscillation counts; the frequency histogram is "
                "written at the end of each", min=1, max=A.MAX_WINDOW),
        Setting("freeze", False, "quantised runs: freeze weights that oscillate at their EMA integer value "
                "(Nagel et al.'s iterative freezing; a remedy: it changes the training)"),
        Setting("freeze_threshold", 0.1, "EMA frequency above which a weight is frozen, when freezing starts",
                min=0.0, max=1.0),
        Setting("freeze_threshold_final", 0.02, "the freezing threshold at the end of training (cosine "
                "annealing from freeze_threshold)", min=0.0, max=1.0),
        Setting("dampen", 0.0, "quantised runs: weight of the dampening regulariser ‖clamp(w) − q(w)‖², "
                "reached at the end by a cosine ramp from 0 (0: off; a remedy: it changes the training)", min=0.0),
        Setting("anneal_start", 0.25, "share of training after which freezing starts and dampening ramps up",
                min=0.0, max=0.99),
    )

    def __init__(self, settings, every, on):
        super().__init__(settings, every, on)
        self.layers: list[Layer] = []
        self.integer = False
        self.total_steps: int | None = None

    # -- cadence --------------------------------------------------------------------------------
    def wants_step(self, step: int) -> bool:
        return True  # an oscillation is about consecutive updates: track every one; `every` paces rows

    def _row_due(self, step: int) -> bool:
        return step % (self.every or self.default_every) == 0 or step == self.total_steps

    # -- declarations ---------------------------------------------------------------------------
    def series(self, run: RunContext) -> list[Series]:
        self.layers, self.integer = tracked_layers(run.model)
        s, names = self.settings, tuple(layer.name for layer in self.layers)
        what = "integer weights" if self.integer else "weights' update directions"
        out = [
            Series("frac_oscillating", (len(names),), unit="share of weights", columns=names,
                   description=f"share of each layer's {what} whose EMA oscillation frequency is above "
                   f"{s['threshold']:g} per step"),
            Series("flip_rate", (len(names),), unit=UNIT_INTEGER if self.integer else UNIT_UPDATE, columns=names,
                   description=("integer weights changing against their previous change" if self.integer else
                                "weights updated against the sign of their previous non-zero update")
                   + ", per weight and step, mean over the steps since the previous row"),
            Series("grad_cosine", (len(names),), unit="cosine", columns=names,
                   description="cosine between consecutive gradients of each layer's weights, mean over the "
                   "steps since the previous row"),
            Series("freq_hist", (HIST_BINS,), unit="share of weights",
                   description=f"share of all tracked {what} per bin of their exact oscillation frequency "
                   f"over a window of {s['window']} steps ({HIST_BINS} bins over (0, 1]; weights that did not "
                   "oscillate are in none), at the end of each window"),
        ]
        if self._freezing:
            out.append(Series("frozen_frac", (len(names),), unit="share of weights", columns=names,
                              description="share of each layer's integer weights frozen at a grid point"))
        return out

    @property
    def _freezing(self) -> bool:
        return self.integer and self.settings["freeze"]

    def views(self) -> list[View]:
        names = [layer.name for layer in self.layers]
        edges = np.linspace(0, 1, HIST_BINS + 1).tolist()
        if self.integer:
            heatmap = View("heatmap", "Oscillating weights by layer", (PREFIX + "frac_oscillating",),
                           "Share of each layer's integer weights whose oscillation frequency is above the "
                           "threshold: weights stuck flipping between two grid points.", {"y_labels": names})
        else:
            heatmap = View("heatmap", "Update reversals by layer", (PREFIX + "flip_rate",),
                           "Share of each layer's weights whose update reversed direction, per step: high where "
                           "the step overshoots along sharp directions.", {"y_labels": names})
        out = [heatmap,
               View("histogram", "Oscillation frequency, last window", (PREFIX + "freq_hist",),
                    "How often tracked weights oscillated over the latest window of exact counts (share of "
                    "all weights per bar; weights that never oscillated are left out).",
                    {"edges": edges}),
               View("line", "Gradient cosine by layer", (PREFIX + "grad_cosine",),
                    "Cosine between consecutive gradients: near −1 the layer bounces across a valley, near +1 "
                    "it descends steadily.", {"labels": names, "y_label": "cosine"})]
        if self.integer:
            out.append(View("line", "Integer oscillations per step", (PREFIX + "flip_rate",),
                            "Share of each layer's integer weights that changed against their previous change, "
                            "per step.", {"labels": names, "y_label": "per weight per step"}))
        else:
            out.append(View("line", "Weights reversing often", (PREFIX + "frac_oscillating",),
                            "Share of each layer's weights whose update direction reverses more often than the "
                            "threshold.", {"labels": names, "y_label": "share of weights"}))
        if self._freezing:
            out.append(View("line", "Frozen weights", (PREFIX + "frozen_frac",),
                            "Share of each layer's integer weights held at a grid point by oscillation freezing.",
                            {"labels": names, "y_label": "share of weights"}))
        return out

    # -- hooks ----------------------------------------------------------------------------------
    def setup(self, run: RunContext) -> None:
        s, device = self.settings, run.device
        self.total_steps = run.total_steps
        self.sizes = [layer.size for layer in self.layers]
        self.size_tensor = torch.tensor(self.sizes, dtype=torch.float32, device=device)
        bits = max(layer.quantized.bits for layer in self.layers) if self.integer else 1
        self.tracker = A.OscillationTracker(sum(self.sizes), s["momentum"], s["window"], bits, device)
        self.freezer = A.Freezer(self.tracker.n, s["momentum"], device) if self._freezing else None
        self.integers = IntegerWeights([layer.quantized for layer in self.layers]) if self.integer else None
        # this step's gradient (row 0) beside the previous one (row 1), so one product per layer gives
        # both norms and their dot product; the Gram matrices of the steps since the last row wait in
        # ``grams`` and become cosines there, in one go
        self.grads = torch.zeros(2, self.tracker.n, device=device)
        self.grad_parts = [(part, part.T) for part in self.grads.split(self.sizes, dim=1)]  # views, made once
        self.has_previous = False
        self.grams = torch.zeros(min(PENDING_GRAMS, self.every or self.default_every), len(self.layers), 2, 2,
                                 device=device)
        self.pending = 0
        self.previous_weights: torch.Tensor | None = None  # full precision: to see each update
        # oscillations per layer are read off the tracker's exact window counts at rows and window ends:
        # those of finished windows since the last row, and the count at the last read in this one
        self.flips = torch.zeros(len(self.layers), dtype=torch.int64, device=device)
        self.counted = torch.zeros(len(self.layers), dtype=torch.int64, device=device)
        self.cosines = torch.zeros(len(self.layers), device=device)
        self.cosine_steps = torch.zeros(len(self.layers), device=device)
        self.row_steps = 0
        self.histogram_written = False
        self.note = self._remedies_refused()
        self.remedies = self.integer and self.note is None
        if not self.remedies:
            self.freezer = None
        self.awaiting_update = False  # on_step ran and on_update has not yet: is there a hook after the step?

    def _remedies_refused(self) -> str | None:
        """Why the remedies asked for cannot run in this run (None if they can, or none was asked for)."""
        s = self.settings
        if not (s["freeze"] or s["dampen"] > 0):
            return None
        if not self.integer:
            return "oscillation: freeze and dampen act on quantised weights; this model has none, so they are off"
        if self.total_steps is None:
            return ("oscillation: freeze and dampen follow a schedule over the planned steps, which this loop "
                    "does not give (watch(..., steps=N)), so they are off; tracking goes on")
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            return ("oscillation: freeze and dampen would change the weights of rank 0 alone under torchrun, "
                    "so they are off; tracking goes on")
        return None

    def on_step(self, ctx: StepContext) -> None:
        self._say_why_remedies_are_off(ctx)
        with torch.no_grad():
            self._gradient_cosines()
            ints = self._advance()
            if self.remedies:
                self._remedies(ctx.step / self.total_steps, ints)
            self._write(ctx.step, ctx.log)

    def _say_why_remedies_are_off(self, ctx: StepContext) -> None:
        if self.freezer is not None and self.awaiting_update:
            self.freezer = None
            self.note = ("oscillation: freezing is off: this training loop gives no hook after the optimizer "
                         "step (the engine's does), so frozen weights could not be held there; tracking goes on")
        self.awaiting_update = True
        if self.note:
            ctx.event("oscillation_remedies_off", self.note)
            self.note = None

    def _gradient_cosines(self) -> None:
        """Each layer's Gram matrix of this step's gradient and the previous one (its cosine waits)."""
        if self.has_previous:
            self.grads[1].copy_(self.grads[0])
        torch.cat([_flat_grad(layer.weight) for layer in self.layers], out=self.grads[0])
        if self.has_previous:
            if self.pending == len(self.grams):
                self._sum_cosines()
            for (part, part_t), gram in zip(self.grad_parts, self.grams[self.pending]):
                torch.matmul(part, part_t, out=gram)
            self.pending += 1
        self.has_previous = True

    def _sum_cosines(self) -> None:
        """Add the waiting steps' cosines to the sums since the last row, step after step (the order
        of the sums is the steps', wherever they were held)."""
        cos = A.gram_cosines(self.grams[:self.pending])
        seen = torch.isfinite(cos)
        for term, counted in zip(torch.where(seen, cos, 0.0), seen):
            self.cosines += term
            self.cosine_steps += counted
        self.pending = 0

    def _remedies(self, progress: float, ints: torch.Tensor) -> None:
        """Freezing decisions (held in ``on_update``) and the dampening gradient, on their schedules."""
        s = self.settings
        if self.freezer is not None:
            threshold = None if progress <= s["anneal_start"] else \
                A.cosine_schedule(progress, s["freeze_threshold"], s["freeze_threshold_final"], s["anneal_start"])
            frequency = self.tracker.ema_frequency() if threshold is not None else None
            self.freezer.update(ints, frequency, threshold)
        dampen = A.cosine_schedule(progress, 0.0, s["dampen"], s["anneal_start"])
        if dampen > 0:
            self._dampen(ints, dampen)

    def _write(self, step: int, log) -> None:
        """Rows every ``every`` steps, the histogram at each window's end (or the run's, before any)."""
        row, window_end = self._row_due(step), self.tracker.window_complete
        if row or window_end:
            counts = A.segment_sums(self.tracker.window_counts(), self.sizes)
            if row:
                self._write_rows(log, self.flips + counts - self.counted)
                self.flips.zero_()
                self.counted = counts
            if window_end:
                self.flips += counts - self.counted
                self.counted.zero_()
        if window_end or (step == self.total_steps and not self.histogram_written):
            self._write_histogram(log)

    def _advance(self) -> torch.Tensor | None:
        """One tracker update from the weights this step's forward pass used; returns the integer
        weights in a quantised run."""
        if self.integer:
            ints = self.integers()
            self.tracker.update(ints, in_range=True)  # on each layer's grid, within the widest
        else:
            ints = None
            weights = torch.cat([layer.weight.detach().reshape(-1) for layer in self.layers])
            change = weights - self.previous_weights if self.previous_weights is not None else torch.zeros_like(weights)
            self.tracker.update_changes(change)
            self.previous_weights = weights
        self.row_steps += 1
        return ints

    def _dampen(self, ints: torch.Tensor, weight: float) -> None:
        """Add the dampening regulariser's gradient to each latent weight's gradient."""
        for layer, k in zip(self.layers, ints.split(self.sizes)):
            w = layer.weight
            if w.grad is None:
                continue
            low, high = layer.quantized.bounds()
            grid = layer.quantized.grid(k.view_as(w))
            w.grad.add_(A.dampening_gradient(w.detach(), grid, low, high, weight))

    def on_update(self, ctx: StepContext) -> None:
        """Hold frozen weights at their grid points whatever the optimizer (and its momentum) did."""
        self.awaiting_update = False
        if self.freezer is None or ctx.step / self.total_steps <= self.settings["anneal_start"]:
            return
        values, frozen = self.freezer.values(), self.freezer.frozen
        with torch.no_grad():
            for layer, k, held in zip(self.layers, values.split(self.sizes), frozen.split(self.sizes)):
                w = layer.weight
                w.copy_(torch.where(held.view_as(w), layer.quantized.grid(k.view_as(w)), w))

    def on_end(self, ctx) -> None:
        """A loop that did not plan its steps: the rows since the last one (the engine's last step
        writes its own row; a stopped run of it keeps only whole rows, so a resume adds none twice)."""
        if self.total_steps is None and self.row_steps:
            with torch.no_grad():
                counts = A.segment_sums(self.tracker.window_counts(), self.sizes)
                self._write_rows(ctx.log, self.flips + counts - self.counted)
                if not self.histogram_written:
                    self._write_histogram(ctx.log)

    def _write_histogram(self, log) -> None:
        log("freq_hist", A.frequency_histogram(self.tracker.window_frequency(), HIST_BINS))
        self.histogram_written = True

    def _write_rows(self, log, oscillations: torch.Tensor) -> None:
        """One row of each per-layer series; ``oscillations``: per layer, since the previous row."""
        th = self.settings["threshold"]
        self._sum_cosines()
        oscillating = A.segment_sums(self.tracker.ema_frequency() > th, self.sizes) / self.size_tensor
        cosine = torch.where(self.cosine_steps > 0, self.cosines / self.cosine_steps.clamp(min=1), math.nan)
        rows = [oscillating, oscillations / (self.size_tensor * max(1, self.row_steps)), cosine]
        if self.freezer is not None:
            rows.append(A.segment_sums(self.freezer.frozen, self.sizes) / self.size_tensor)
        values = torch.stack(rows).cpu().numpy().astype(float)  # one transfer per row
        for name, row in zip(("frac_oscillating", "flip_rate", "grad_cosine", "frozen_frac"), values):
            log(name, row)
        self.cosines.zero_()
        self.cosine_steps.zero_()
        self.row_steps = 0

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        self._sum_cosines()
        state = {"tracker": self.tracker.state_dict(), "flips": self.flips, "counted": self.counted,
                 "cosines": self.cosines, "cosine_steps": self.cosine_steps, "row_steps": self.row_steps,
                 "histogram_written": self.histogram_written}
        if self.has_previous:
            state["previous_grad"] = self.grads[0].clone()
        if self.previous_weights is not None:
            state["previous_weights"] = self.previous_weights
        if self.freezer is not None:
            state["freezer"] = self.freezer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.tracker.load_state_dict(state["tracker"])
        for key in ("flips", "counted", "cosines", "cosine_steps"):
            getattr(self, key).copy_(state[key])
        self.row_steps, self.histogram_written = int(state["row_steps"]), bool(state["histogram_written"])
        self.has_previous = "previous_grad" in state
        if self.has_previous:
            self.grads[0].copy_(state["previous_grad"])
        self.pending = 0
        self.previous_weights = state.get("previous_weights")
        if self.freezer is not None and "freezer" in state:
            self.freezer.load_state_dict(state["freezer"])

    # -- findings -------------------------------------------------------------------------------
    @classmethod
    def findings(cls, run) -> list[Finding]:
        names = run.names()
        if PREFIX + "flip_rate" not in names:
            return []
        layers = _columns(run, "flip_rate")
        integer = run.series_info(PREFIX + "flip_rate")["unit"] == UNIT_INTEGER
        table = run.config.get("plugins", {}).get("oscillation", {})
        threshold = table.get("threshold", 0.02)
        out = []
        if integer:
            out += oscillating_findings(*run.series(PREFIX + "frac_oscillating"), layers, threshold)
        else:
            out += jump_findings(*run.series(PREFIX + "flip_rate"), layers, _sharpness(run))
        out += cosine_findings(*run.series(PREFIX + "grad_cosine"), layers)
        steps, hist = run.series(PREFIX + "freq_hist")
        if len(steps):
            out.append(window_finding(int(steps[-1]), hist[-1], table.get("window", 256), integer))
        if PREFIX + "frozen_frac" in names:
            out += frozen_findings(*run.series(PREFIX + "frozen_frac"), layers)
        return out

    @classmethod
    def explain(cls, run, step: int) -> list[Evidence]:
        from .explain import evidence_at  # reads this module's helpers
        return evidence_at(run, step)


def _flat_grad(weight: torch.Tensor) -> torch.Tensor:
    g = weight.grad
    return torch.zeros(weight.numel(), device=weight.device) if g is None else g.detach().reshape(-1)


def _columns(run, name: str) -> list[str]:
    path = f"columns/{PREFIX}{name}"
    return [str(c) for c in run.data(path)] if run.has_data(path) else []


def _sharpness(run) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, λ_max / threshold) from the sharpness plugin, if it ran."""
    names = run.names()
    if "sharpness/lambda_max" not in names or "sharpness/threshold" not in names:
        return None
    steps, lam = run.series("sharpness/lambda_max")
    t_steps, thr = run.series("sharpness/threshold")
    if len(steps) == 0 or len(t_steps) == 0:
        return None
    lam1 = np.asarray(lam, float).reshape(len(steps), -1)[:, 0]
    return steps, lam1 / np.interp(steps, t_steps, thr)


# ---------------------------------------------------------------------------------------------
# Findings from arrays (apart from the run file, so they can be tested on planted series)
# ---------------------------------------------------------------------------------------------
def _label(layers: list[str], i: int) -> str:
    return layers[i] if i < len(layers) else f"#{i}"


def _late(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, str]:
    """The mean of each column over the last third of the rows, and the span it covers."""
    n = max(1, len(steps) // 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column of NaN (no cosine yet) stays NaN
        mean = np.nanmean(np.asarray(values, float)[-n:], axis=0)
    return mean, f"steps {int(steps[-n])}–{int(steps[-1])}"


def oscillating_findings(steps, frac, layers: list[str], threshold: float) -> list[Finding]:
    """The layers whose integer weights oscillated most (by their peak share), since when, and
    whether they still do over the last third of the run."""
    if len(steps) == 0:
        return []
    frac = np.asarray(frac, float).reshape(len(steps), -1)
    late, span = _late(steps, frac)
    peak = np.nanmax(np.where(np.isfinite(frac), frac, -1.0), axis=0)
    order = list(np.argsort(-peak, kind="stable"))
    rule = f"more often than {threshold:g} per step"
    if peak[order[0]] < NOTABLE_SHARE:
        i = order[0]
        return [Finding("oscillation", "ok", f"Few integer weights oscillate: at most {share(peak[i]):g}% of a "
                        f"layer's ({_label(layers, i)}) at any row oscillated {rule}.", int(steps[-1]),
                        share(peak[i]), "%")]
    out = []
    for rank, i in enumerate(i for i in order[:3] if peak[i] >= NOTABLE_SHARE):
        name = f"Layer {_label(layers, i)} " + ("oscillates most" if rank == 0 else "oscillates too")
        if late[i] >= NOTABLE_SHARE:  # still oscillating
            since = A.settled_since(steps, frac[:, i], late[i] / 2)
            out.append(Finding("oscillation", "warning" if late[i] >= SEVERE_SHARE else "info",
                               f"{name}: {share(late[i]):g}% of its integer weights oscillate {rule} over {span}, "
                               f"and at least half that share since step {since}.", since,
                               share(late[i]), "%"))
        else:  # an episode that has settled
            rows = np.flatnonzero(frac[:, i] >= NOTABLE_SHARE)
            top = int(np.nanargmax(frac[:, i]))
            out.append(Finding("oscillation", "info",
                               f"{name.replace('oscillates', 'oscillated')}: up to {share(peak[i]):g}% of its integer "
                               f"weights oscillated {rule} (step {int(steps[top])}), over {NOTABLE_SHARE:.0%} "
                               f"from step {int(steps[rows[0]])} to step {int(steps[rows[-1]])}; {late[i]:.1%} "
                               f"over {span}.",
                               int(steps[rows[0]]), share(peak[i]), "%"))
    return out


def jump_findings(steps, flip, layers: list[str], sharpness) -> list[Finding]:
    """Full precision: when a layer's update-reversal rate jumped, and where λ_max stood then."""
    if len(steps) == 0:
        return []
    flip = np.asarray(flip, float).reshape(len(steps), -1)
    found = []
    for i in range(flip.shape[1]):
        jumps = A.find_jumps(steps, flip[:, i], JUMP_ROWS, JUMP_RISE)
        if jumps:
            found.append((max(jumps, key=lambda j: j.rise), i))
    if not found:
        late, span = _late(steps, flip)
        i = int(np.nanargmax(late)) if np.isfinite(late).any() else 0
        return [Finding("oscillation", "ok", f"No layer's update-reversal rate jumped by {JUMP_RISE:g} per weight per "
                        f"step or more; the highest, layer {_label(layers, i)}, averages {two(late[i]):g} {RATE_UNIT} over "
                        f"{span}.", int(steps[-1]), two(late[i]), RATE_UNIT)]
    out = []
    for jump, i in sorted(found, key=lambda f: -f[0].rise)[:3]:
        text = (f"The update-reversal rate of layer {_label(layers, i)} jumped from {two(jump.before):g} to "
                f"{two(jump.after):g} {RATE_UNIT} at step {jump.step}")
        severity = "info"
        if sharpness is not None:
            s_steps, ratio = sharpness
            j = int(np.argmin(np.abs(s_steps - jump.step)))
            at_edge = ratio[j] >= 1 - EDGE_BAND
            severity = "warning" if at_edge else "info"
            text += (f"; λ_max was {'at' if at_edge else 'below'} the edge of stability then, "
                     f"{ratio[j]:.2f}× the threshold (step {int(s_steps[j])})")
        out.append(Finding("oscillation", severity, text + ".", jump.step, two(jump.after), RATE_UNIT))
    return out


def cosine_findings(steps, cosine, layers: list[str]) -> list[Finding]:
    """The layer whose consecutive gradients agree least over the last third of the run."""
    if len(steps) == 0:
        return []
    late, span = _late(steps, np.asarray(cosine, float).reshape(len(steps), -1))
    if not np.isfinite(late).any():
        return []
    i = int(np.nanargmin(late))
    where = f"{two(late[i]):g} mean cosine over {span}"
    if late[i] <= -COSINE_BAND:
        severity, text = "warning", (f"Consecutive gradients of layer {_label(layers, i)} point against each other "
                                     f"({where}): the steps overshoot across a valley.")
    elif late[i] < COSINE_BAND:
        severity, text = "info", (f"Consecutive gradients of layer {_label(layers, i)} are nearly unrelated "
                                  f"({where}): batch noise, not a direction, drives its steps.")
    else:
        severity, text = "ok", (f"Consecutive gradients agree in every layer: the lowest is layer "
                                f"{_label(layers, i)}, {where}.")
    return [Finding("oscillation", severity, text, int(steps[-1]), two(late[i]), "mean cosine")]


def window_finding(step: int, hist, window: int, integer: bool) -> Finding:
    """What the latest window of exact counts says: how many weights oscillated at all, and often."""
    hist = np.asarray(hist, float)
    span = window if step % window == 0 else step
    what = "integer weights" if integer else "weights' update directions"
    return Finding("oscillation", "info", f"Over steps {step - span + 1}–{step}, {share(hist.sum()):g}% of the "
                   f"tracked {what} oscillated at least once and {share(hist[1:].sum()):g}% more often than once "
                   f"every {HIST_BINS} steps (exact counts).", step, share(hist.sum()), "%")


def frozen_findings(steps, frozen, layers: list[str]) -> list[Finding]:
    if len(steps) == 0:
        return []
    last = np.asarray(frozen, float).reshape(len(steps), -1)[-1]
    i = int(np.argmax(last))
    if last[i] == 0:
        return [Finding("oscillation", "info", f"Freezing froze no weight by step {int(steps[-1])}.",
                        int(steps[-1]), None, "")]
    return [Finding("oscillation", "info", f"Freezing holds {share(last[i]):g}% of layer {_label(layers, i)}'s "
                    f"integer weights at their grid points at step {int(steps[-1])} (the most of any layer).",
                    int(steps[-1]), share(last[i]), "%")]
