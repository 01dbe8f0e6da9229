"""Opposing-signals plugin: which groups of training samples pull the network in opposite
directions, over what feature, and is that what made the loss spike?

It follows every sample of a fixed probe set of the training data. Per-sample losses are recorded
at consecutive steps, so an oscillation of period 2 is seen as it is: at every step where the
training batch holds the whole probe set (full-batch training), read from the step's own
per-sample losses at no cost; otherwise in bursts of ``burst`` steps before each analysis, one
forward pass over the probe per step. A ring buffer keeps what was recorded in the last ``window``
steps (at most ``window`` × ``probe_size`` float32, on the run's device). At the last two steps
before an analysis it also keeps each probe sample's output-layer gradient in factored form
(∂ℓ/∂logits and the layer's input), from the step's own forward pass where that covered the probe.
Every ``every`` steps ``analysis.find_opposing_groups`` groups and pairs the unstable samples; each
pair's row in the run file carries both sides' mean loss over the window.

Findings, read back from the run file: the pairs and what they share, unpaired unstable groups.
``explain(run, step)`` says which pair's losses moved most at a step (``pair_moves`` gives the
numbers): the engine's explanation of each loss spike, and its finding, name that pair.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from collections import Counter

import numpy as np
import torch

from engine.models import EmbeddingTap, head_of
from engine.plugin import Evidence, Finding, Plugin, RunContext, Series, Setting, StepContext, View

from . import analysis as A

PREFIX = "opposing_signals/"
GRADIENT_STEPS = 2  # output-layer gradients averaged over both phases of a period-2 oscillation
FORWARD_CHUNK = 1024  # probe samples per forward pass of a recording burst
MOVE_LOOKBACK = 50  # recorded steps a pair's losses are compared against when explaining a step
RECENT = 64  # recorded steps of the top pair's losses drawn as of each analysis
EXAMPLES = 8  # ids of each group's most unstable members, to look at in the data


class OpposingSignalsPlugin(Plugin):
    name = "opposing_signals"
    title = "Opposing signals"
    description = ("Paired groups of training samples that share a strong feature but pull the network "
                   "in opposite directions (Rosenfeld & Risteski): per-sample losses and output-layer "
                   "gradients on a fixed probe set, grouped and paired; loss spikes attributed to them.")
    # Where the batch does not hold the probe set, an analysis costs its recording burst: `burst`
    # forward passes over the probe, about 7 training steps each on the digits CNN. Five every 500
    # steps keep that, and the analysis itself, near a tenth of the training time (benches/
    # opposing_signals.py); full-batch runs record for free and may ask for more (every = 100).
    # Each analysis looks back over the 500 steps since the last: one burst, or every step.
    default_every = 500
    settings = (
        Setting("probe_size", 2048, "training samples followed (the same for the whole run)", min=1),
        Setting("window", 500, "training steps each analysis looks back over: the ring buffer keeps what "
                "was recorded in them (at most window × probe_size losses)", min=2),
        Setting("burst", 5, "consecutive steps recorded before each analysis when the training batch does "
                "not hold the whole probe set (each costs a forward pass over it)", min=GRADIENT_STEPS),
        Setting("min_group", 5, "fewest samples a group may have", min=2),
        Setting("gradient_cosine", -0.5, "a pair's mean gradients have a cosine below this", min=-1.0, max=0.0),
        Setting("loss_correlation", -0.5, "a pair's mean loss changes correlate below this (anti-phase)",
                min=-1.0, max=0.0),
        Setting("feature_share", 0.5, "share of each side's members that must lie far beyond the rest of "
                "the data on a common feature", min=0.0, max=1.0),
        Setting("thumbnails", 8, "example images per side of the top pair (image data)", min=1, max=32),
    )

    def __init__(self, settings, every, on):
        super().__init__(settings, every, on)
        self.probe = None
        self.last_step = 0
        self.top = None  # (2 + 1, n) rows averaging the probe's losses: the top pair's sides, the rest
        self.signals: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (step, ∂ℓ/∂logits, head input)
        self.head_input = None
        self.armed = False

    # -- cadence --------------------------------------------------------------------------------
    @property
    def _every(self) -> int:
        return self.every or self.default_every

    def _analysis_step(self, step: int) -> int:
        """The first analysis at or after ``step``: every ``every`` steps and at the last one."""
        return min(-(-step // self._every) * self._every, self.total_steps)

    def _records(self, step: int) -> bool:
        return self.free or self._analysis_step(step) - step < self.settings["burst"]

    def _captures(self, step: int) -> bool:
        return self._analysis_step(step) - step < GRADIENT_STEPS

    def wants_step(self, step: int) -> bool:
        return self._records(step)

    # -- declarations -------------------------------------------------------------------------
    def series(self, run: RunContext) -> list[Series]:
        self.image_shape = _image_shape(run.input_shape)
        out = [
            Series("groups", (), "json", description="one row per analysis: pairs {a, b: sample ids, grad_cos, "
                   "loss_corr, feature, loss_a, loss_b, ...} and unpaired groups {ids, ...} (docs/run-file.md)"),
            Series("top_pair_loss", (3,), description="mean loss of side A and side B of the "
                   "latest analysis's top pair, and of the rest of the probe set, at each recorded step"),
            Series("top_pair_recent", (RECENT, 3), description=f"the top pair's side A, side B "
                   f"and the rest of the probe set: mean loss at the last {RECENT} recorded steps of each "
                   "analysis's window (NaN before the first)"),
            Series("counts", (2,), description="pairs and unpaired unstable groups found at each analysis"),
            Series("table", (), "json", description="the groups of the latest analysis as a table"),
        ]
        if self.image_shape:
            out.append(Series("thumbnails", (2 * self.settings["thumbnails"], *self.image_shape),
                              description="inputs of the top pair's most unstable members, side A then B, "
                              "clipped to the probe set's 0.5–99.5th percentiles"))
        return out

    def views(self) -> list[View]:
        out = [
            View("line", "Opposing pair: group losses", (PREFIX + "top_pair_loss",),
                 "Mean loss of each side of the strongest opposing pair: in anti-phase, one side's loss "
                 "rises as the other's falls, while the rest of the data stays smooth.",
                 {"labels": ["side A", "side B", "rest of the probe"], "y_label": "mean loss"}),
            View("curve", "Opposing pair: the latest steps", (PREFIX + "top_pair_recent",),
                 f"The top pair's mean losses over the last {RECENT} recorded steps before the analysis at the "
                 "cursor: side A (blue) and side B (orange) zig-zag in anti-phase, the rest (green) does not.",
                 {"x": list(range(1 - RECENT, 1)), "x_label": "recorded steps before the analysis",
                  "labels": ["side A", "side B", "rest of the probe"], "y_label": "mean loss"}),
            View("table", "Unstable groups", (PREFIX + "table",),
                 "Groups of samples whose losses move together and whose gradients point the same way; "
                 "pairs oppose each other over a feature both share and the rest of the data lacks."),
            View("line", "Groups found", (PREFIX + "counts",), "How many opposing pairs and unpaired "
                 "unstable groups each analysis found.", {"labels": ["pairs", "unpaired groups"]}),
        ]
        if self.image_shape:  # no captions: they would sit on the images' top-left corners
            out.append(View("image_grid", "Opposing pair: example samples", (PREFIX + "thumbnails",),
                            f"Inputs of the top pair's {self.settings['thumbnails']} most unstable members per "
                            "side, row by row: side A's first, then side B's. Pixels are clipped to the probe "
                            "set's usual range, so one bright feature does not hide the rest."))
        return out

    # -- hooks ----------------------------------------------------------------------------------
    def setup(self, run: RunContext) -> None:
        self.run = run
        self.total_steps = run.total_steps or math.inf  # a loop that does not say: analyses go on
        self.probe = run.probe(self.settings["probe_size"])
        n = len(self.probe.ids)
        ranks = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        batch = run.config.sections["data"].get("batch_size")  # a user's own loop may not say
        self.free = batch is not None and batch // ranks >= run.train_size
        s = self.settings
        rows = s["window"] if self.free else s["burst"] * (-(-s["window"] // self._every) + 1)
        self.losses = torch.full((min(rows, s["window"]), n), math.nan, device=run.device)
        self.steps = np.zeros(len(self.losses), dtype=np.int64)
        self.count = 0
        self.lookup = np.full(int(self.probe.ids.max()) + 1, -1, dtype=np.int64)  # sample id → batch row
        self.inputs = self.probe.inputs.detach().float().cpu().numpy().reshape(n, -1)
        self.pixel_range = np.quantile(self.inputs, (0.005, 0.995))
        self.labels = self.probe.targets.cpu().numpy()
        self._set_top(None)
        if self.free:  # the step's own forward pass gives the head's input: keep it where needed
            head_of(run.model).register_forward_pre_hook(self._keep_head_input)
            run.optimizer.register_step_post_hook(lambda *_: self._arm(self.last_step + 1))
            self._arm(1)

    def _arm(self, step: int) -> None:
        """Keep the head's input of the next training forward pass if ``step`` needs gradients."""
        self.armed = self._captures(step)

    def _keep_head_input(self, module, args) -> None:
        if self.armed and module.training and torch.is_grad_enabled():  # the step's own pass
            self.head_input, self.armed = args[0].detach().flatten(1), False

    def on_step(self, ctx: StepContext) -> None:
        self.last_step = ctx.step
        losses, outputs, head_input = self._probe_losses(ctx)
        self.losses[self.count % len(self.steps)] = losses
        self.steps[self.count % len(self.steps)] = ctx.step
        self.count += 1
        if self._captures(ctx.step):
            errors = _output_errors(ctx.run.per_sample_loss, outputs, self.probe.targets)
            self.signals = [*self.signals, (ctx.step, errors.cpu(), head_input.float().cpu())][-GRADIENT_STEPS:]
        if ctx.step == self._analysis_step(ctx.step):
            self._analyse(ctx, outputs)
        ctx.log("top_pair_loss", (self.top @ losses.float()).cpu().numpy().astype(np.float64))  # one transfer

    def _probe_losses(self, ctx: StepContext):
        """The probe's per-sample losses at this step, and where gradients are kept its outputs and
        head inputs: from the step's own batch when it holds the whole probe, else a forward pass."""
        captures = self._captures(ctx.step)
        try:
            where = self._positions_in(ctx.ids)
        except LookupError:  # a training loop of the user's that gives no sample ids
            where = None
        if where is not None:
            at = torch.from_numpy(where).to(ctx.per_sample_loss.device)
            head, self.head_input = self.head_input, None
            if not captures:
                return ctx.per_sample_loss[at], None, None
            if head is not None and len(head) == len(ctx.ids):
                return ctx.per_sample_loss[at], ctx.outputs.detach()[at], head[at]
        model = ctx.model
        was_training = model.training
        model.eval()
        tap = EmbeddingTap(model) if captures else None
        with torch.no_grad(), tap or contextlib.nullcontext():
            outputs = torch.cat([model(x) for x, _ in self.probe.batches(FORWARD_CHUNK)])
        model.train(was_training)
        losses = ctx.run.per_sample_loss(outputs, self.probe.targets)
        return losses, outputs, torch.cat(tap.captured) if tap else None

    def _positions_in(self, ids: np.ndarray) -> np.ndarray | None:
        """Where each probe sample sits in the batch ``ids``; None unless the batch holds them all."""
        if len(ids) < len(self.probe.ids):
            return None
        if len(self.lookup) <= ids.max():
            self.lookup = np.full(int(ids.max()) + 1, -1, dtype=np.int64)
        self.lookup[ids] = np.arange(len(ids))
        where = self.lookup[self.probe.ids]
        self.lookup[ids] = -1  # ready for the next batch
        return where if (where >= 0).all() else None

    def _analyse(self, ctx: StepContext, outputs: torch.Tensor) -> None:
        filled = min(self.count, len(self.steps))
        keep = np.flatnonzero(self.steps[:filled] > ctx.step - self.settings["window"])
        keep = keep[np.argsort(self.steps[keep], kind="stable")]
        steps, losses = self.steps[keep], self.losses[torch.from_numpy(keep).to(self.losses.device)].cpu().numpy()
        _, errors, heads = zip(*[x for x in self.signals if x[0] > ctx.step - GRADIENT_STEPS])
        s = self.settings
        result = A.find_opposing_groups(
            steps, losses, A.GradientSignals(torch.stack(errors), torch.stack(heads)),
            {"input": self.inputs, "embedding": heads[-1].numpy()}, self.labels, min_group=s["min_group"],
            gradient_cosine=s["gradient_cosine"], loss_correlation=s["loss_correlation"],
            feature_share=s["feature_share"])
        pairs = [p if self._main_class(p.a) <= self._main_class(p.b) else dataclasses.replace(p, a=p.b, b=p.a)
                 for p in result.pairs]  # side A: the side whose main class comes first
        self._set_top(pairs[0] if pairs else None)
        describe = Describer(self.run.class_names, self.probe.ids, self.labels, outputs.argmax(1).cpu().numpy(),
                             result.scores, self.run.input_shape)
        doc = {"window": [int(steps[0]), int(steps[-1])], "steps": steps.tolist(),
               "candidates": len(result.candidates), "pairs": [describe.pair(p) for p in pairs],
               "unpaired": [describe.group(g) for g in result.unpaired]}
        ctx.log("groups", doc)
        ctx.log("top_pair_recent", self._recent(pairs[0] if pairs else None, losses))
        ctx.log("counts", np.array([len(pairs), len(result.unpaired)], dtype=np.float64))
        ctx.log("table", describe.table(doc))
        if self.image_shape:
            ctx.log("thumbnails", self._thumbnails(pairs[0] if pairs else None, result.scores))

    def _main_class(self, group: A.Group) -> tuple[int, int]:
        return int(np.bincount(self.labels[group.members]).argmax()), int(self.probe.ids[group.members[0]])

    def _set_top(self, pair: A.Pair | None) -> None:
        """Rows that average the probe's losses over the top pair's sides and over the rest."""
        n = len(self.probe.ids)
        w = torch.full((3, n), math.nan)
        rest = torch.ones(n, dtype=torch.bool)
        if pair is not None:
            for side, group in enumerate((pair.a, pair.b)):
                at = torch.from_numpy(group.members)
                w[side] = 0.0
                w[side, at] = 1.0 / group.size
                rest[at] = False
        w[2] = rest.float() / rest.sum()
        self.top = w.to(self.losses.device)

    def _recent(self, pair: A.Pair | None, losses: np.ndarray) -> np.ndarray:
        """(RECENT, 3): side A, side B and the rest at the window's last recorded steps."""
        out = np.full((RECENT, 3), np.nan)
        if pair is not None:
            rest = np.ones(losses.shape[1], dtype=bool)
            rest[pair.a.members] = rest[pair.b.members] = False
            history = np.c_[pair.a.losses, pair.b.losses, losses[:, rest].mean(axis=1)][-RECENT:]
            out[RECENT - len(history):] = history
        return out

    def _thumbnails(self, pair: A.Pair | None, scores: np.ndarray) -> np.ndarray:
        k = self.settings["thumbnails"]
        out = np.full((2 * k, *self.image_shape), np.nan)
        if pair is not None:
            for side, group in enumerate((pair.a, pair.b)):
                top = group.members[np.argsort(-scores[group.members], kind="stable")[:k]]
                images = self.inputs[top].reshape(len(top), -1, *self.image_shape).mean(axis=1)
                out[side * k:side * k + len(top)] = np.clip(images, *self.pixel_range)
        return out

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        if self.probe is None:
            return {}
        return {"last_step": self.last_step, "count": self.count, "losses": self.losses.cpu(),
                "steps": torch.from_numpy(self.steps.copy()), "top": self.top.cpu(),
                "signals": [[step, e, h] for step, e, h in self.signals]}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.last_step, self.count = int(state["last_step"]), int(state["count"])
        self.losses = state["losses"].to(self.losses.device)
        self.steps = state["steps"].numpy().copy()
        self.top = state["top"].to(self.losses.device)
        self.signals = [(int(step), e, h) for step, e, h in state["signals"]]
        if self.free:
            self._arm(self.last_step + 1)

    # -- reading back ---------------------------------------------------------------------------
    @classmethod
    def findings(cls, run) -> list[Finding]:
        if PREFIX + "groups" not in run.names():
            return []
        steps, rows = run.series(PREFIX + "groups")
        if len(steps) == 0:
            return []
        return pair_findings(steps, rows)

    @classmethod
    def explain(cls, run, step: int) -> list[Evidence]:
        from .explain import evidence_at  # reads this module's helpers
        return evidence_at(run, step)


# ---------------------------------------------------------------------------------------------
# Helpers of the hooks
# ---------------------------------------------------------------------------------------------
def _image_shape(input_shape) -> tuple[int, int] | None:
    """(H, W) of image inputs ((C, H, W) or (H, W)); None for anything else."""
    shape = tuple(input_shape)
    if len(shape) == 3 and shape[0] in (1, 3, 4):
        return shape[1:]
    return shape if len(shape) == 2 else None


def _output_errors(per_sample_loss, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """∂ℓᵢ/∂logitsᵢ for every sample, through the run's own loss (no pass through the network)."""
    out = outputs.detach().float().requires_grad_(True)
    with torch.enable_grad():
        (errors,) = torch.autograd.grad(per_sample_loss(out, targets).sum(), out)
    return errors


class Describer:
    """Turns analysis groups into the run file's JSON: ids, classes, predictions, features."""

    def __init__(self, class_names, ids, labels, predicted, scores, input_shape):
        self.names, self.ids, self.labels, self.predicted = list(class_names), ids, labels, predicted
        self.scores, self.input_shape = scores, tuple(input_shape)

    def _count(self, classes: np.ndarray) -> dict[str, int]:
        return {self.names[c]: n for c, n in Counter(classes.tolist()).most_common()}

    def group(self, g: A.Group) -> dict:
        m, f = g.members, g.feature
        return {"ids": self.ids[m].tolist(), "size": g.size, "classes": self._count(self.labels[m]),
                "examples": self.ids[m[np.argsort(-self.scores[m], kind="stable")[:EXAMPLES]]].tolist(),
                "predicted": self._count(self.predicted[m]), "mean_loss": float(g.losses.mean()),
                "instability": g.instability,
                "feature": A.feature_name(f, self.input_shape) if f else "",
                "feature_smd": f.smd if f else 0.0, "feature_share": f.share if f else 0.0}

    def pair(self, p: A.Pair) -> dict:
        return {"a": self.ids[p.a.members].tolist(), "b": self.ids[p.b.members].tolist(),
                "grad_cos": p.grad_cos, "loss_corr": p.loss_corr,
                "feature": A.feature_name(p.feature, self.input_shape), "feature_share": p.feature.share,
                "feature_smd": p.feature.smd, "sides": [self.group(p.a), self.group(p.b)],
                "loss_a": _rounded(p.a.losses), "loss_b": _rounded(p.b.losses)}

    def table(self, doc: dict) -> dict:
        columns = ["group", "size", "classes", "predicted", "mean loss", "feature", "opposes", "grad cos",
                   "loss corr"]
        rows = []
        for k, pair in enumerate(doc["pairs"]):
            for side, other in (("A", "B"), ("B", "A")):
                g = pair["sides"][0 if side == "A" else 1]
                rows.append([f"pair {k + 1} {side}", g["size"], _classes(g["classes"]), _classes(g["predicted"]),
                             g["mean_loss"], pair["feature"], f"pair {k + 1} {other}", pair["grad_cos"],
                             pair["loss_corr"]])
        for k, g in enumerate(doc["unpaired"]):
            rows.append([f"unpaired {k + 1}", g["size"], _classes(g["classes"]), _classes(g["predicted"]),
                         g["mean_loss"], g["feature"], "", "", ""])
        return {"columns": columns, "rows": rows}


def _rounded(values: np.ndarray) -> list[float]:
    """Six significant digits: enough for any plot, a third of the JSON."""
    return [float(f"{v:.6g}") for v in values]


def _classes(counts: dict[str, int]) -> str:
    return ", ".join(f"{name}: {n}" for name, n in counts.items())


# ---------------------------------------------------------------------------------------------
# Findings and explanations, from the run file
# ---------------------------------------------------------------------------------------------
def _sides(pair: dict) -> str:
    """'24 samples of class 0 and 25 of class 1'."""
    a, b = (side["classes"] for side in pair["sides"])
    return f"{len(pair['a'])} samples of {_main(a)} and {len(pair['b'])} of {_main(b)}"


def _main(classes: dict[str, int]) -> str:
    name, n = next(iter(classes.items()))
    total = sum(classes.values())
    return f"class {name}" if n == total else f"mostly class {name} ({n} of {total})"


def pair_findings(steps: np.ndarray, rows: list[dict]) -> list[Finding]:
    """The latest analysis's pairs, when pairs first appeared, and unpaired groups."""
    last, doc = int(steps[-1]), rows[-1]
    first = next((int(s) for s, r in zip(steps, rows) if r["pairs"]), None)
    if first is None:
        return [Finding("opposing_signals", "ok", f"No paired groups with opposing signals in "
                        f"{len(steps)} analyses up to step {last}.", last, len(steps), "analyses")]
    out = []
    if doc["pairs"]:
        for k, p in enumerate(doc["pairs"]):
            out.append(Finding("opposing_signals", "warning", (
                f"Opposing signals at step {last}: {_sides(p)} share {p['feature']} "
                f"({p['feature_share']:.0%} of each side beyond the rest of the data) and pull the network "
                f"in opposite directions: mean gradients at {round(p['grad_cos'], 2):g} cosine, loss changes "
                f"correlated at {p['loss_corr']:.2f} (pair {k + 1})."), last, round(p["grad_cos"], 2), "cosine"))
    else:
        out.append(Finding("opposing_signals", "info", f"Opposing pairs were found from step {first} on, "
                           f"but none at the latest analysis (step {last}: 0 pairs).", last, 0, "pairs"))
    out.append(Finding("opposing_signals", "info", f"The first opposing pair appeared after {first} steps (at the "
                       f"analysis of step {first}).", first, first, "steps"))
    if doc["unpaired"]:
        big = doc["unpaired"][0]
        n = len(doc["unpaired"])
        out.append(Finding("opposing_signals", "info", (
            f"At step {last}, {n} unstable group{'s' if n > 1 else ''} had no opposing partner; the "
            f"strongest: {big['size']} samples of {_main(big['classes'])}."), last, n,
            "unstable groups" if n > 1 else "unstable group"))
    return out


def pair_moves(run, step: int, rows=None) -> list[tuple[dict, A.Move]]:
    """Which opposing pairs' losses moved at ``step``, and by how much, the largest move first: each
    pair's entry in the first ``groups`` row whose window holds the step, with its move
    (``analysis.move_at``). ``rows``: (steps, rows) of the groups series, if already read."""
    steps, docs = rows if rows is not None else run.series(PREFIX + "groups")
    for at, doc in zip(steps, docs):
        if at < step or not doc["pairs"] or doc["steps"][0] >= step:
            continue
        moves = [(p, A.move_at(doc["steps"], p["loss_a"], p["loss_b"], step, MOVE_LOOKBACK))
                 for p in doc["pairs"]]
        moves = sorted(((p, m) for p, m in moves if m is not None), key=lambda pm: -pm[1].size)
        if moves:
            return moves
    return []
