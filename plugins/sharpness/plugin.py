"""Sharpness plugin: is the run at the edge of stability, and is the landscape still sharpening?

At the steps of a plan fixed before training (see ``plan.py``) it runs warm-started Lanczos on the
Hessian of the mean loss over a fixed probe set, for Adam on the preconditioned P^(-1/2) H P^(-1/2),
and compares the top eigenvalue with the threshold of the optimizer actually used at that step's
learning rate. Batch sharpness (one Hessian-vector product on the step's own graph) has its own,
cheaper cadence; loss slices and the eigenvalue density are snapshots taken more rarely.

The plan spreads ``min_measurements`` or more over the run within ``budget``, a share of the
training's work counted in sample-passes, so which steps are measured follows from the config
alone, never from the machine's speed.
"""
from __future__ import annotations

import numpy as np
import torch

from engine.plugin import EndContext, Evidence, Finding, Plugin, RunContext, Series, Setting, StepContext, View

from . import analysis as A
from . import plan as P

EDGE_BAND = 0.1  # "at the edge": within ±10% of the threshold
WARM_NOISE = 0.1  # share of a random direction mixed into the warm start, so a new top is seen
DENSITY_GRID = np.linspace(-1.0, 1.25, 181)  # eigenvalues in units of λ_max
DENSITY_SIGMA = 0.02
SLQ_VECTORS, SLQ_STEPS = 4, 30
SLICE_SEED = 0  # the same Gaussian draw at every snapshot, rescaled to the weights of the moment
NO_THRESHOLD = {"sharpness/threshold": "none (lr = 0)"}  # how views and reports show an infinite one


class SharpnessPlugin(Plugin):
    name = "sharpness"
    title = "Sharpness and the edge of stability"
    description = ("Top Hessian eigenvalues (Lanczos on a fixed probe set) against the stability "
                   "threshold of the optimizer in use; batch sharpness, Hessian trace, loss slices.")
    default_every = 50
    settings = (
        Setting("probe_size", 128, "training samples in the probe set (fixed for the run); a "
                "measurement's cost grows with it", min=1),
        Setting("probe_batch", 512, "probe samples per forward pass (bounds memory)", min=1),
        Setting("k", 1, "how many top eigenvalues to track", min=1, max=20),
        Setting("tol", 1e-2, "Lanczos stops when each Ritz residual is below tol·|λ| (the eigenvalue "
                "error is then typically tol²·|λ|²/gap, about 1e-4 relative)", min=1e-10,
                max=0.5),
        Setting("max_iter", 20, "most Lanczos steps per measurement (each costs k HVPs); the plan "
                "counts every measurement at this most", min=2),
        Setting("smallest", False, "also track the most negative eigenvalue"),
        Setting("trace", False, "estimate the Hessian trace at each measurement (Lanczos subspace "
                "exactly, the rest by Hutchinson; trace_samples more HVPs each)"),
        Setting("trace_samples", 2, "Hutchinson samples (one HVP each) for the trace", min=2),
        Setting("batch_every", 50, "batch sharpness gᵀHg/‖g‖² every N steps (0 turns it off)", min=0),
        Setting("slices", "1d", "loss slices along filter-normalised random directions",
                choices=("off", "1d", "2d", "both")),
        Setting("slice_steps", 21, "points per slice axis", min=3, max=201),
        Setting("slice_span", 1.0, "slice half-width in filter-normalised units", min=1e-6),
        Setting("density", False, "eigenvalue density by stochastic Lanczos quadrature "
                f"({SLQ_VECTORS}×{SLQ_STEPS} HVPs)"),
        Setting("snapshot_every", 1000, "slices and density every N steps, and at the last step",
                min=1),
        Setting("budget", 0.2, "most work the plugin may do (batch sharpness and snapshots included), "
                "as a share of the training's, both counted in sample-passes (a training step: "
                "batch_size; a Hessian-vector product: twice the probe size); the steps of the "
                "cadence are thinned evenly to stay within it (0: no limit)", min=0.0),
        Setting("min_measurements", 20, "measurements a run gets even where the budget allows fewer "
                "(all the cadence's steps where it has fewer), spread evenly from the start", min=1),
    )

    def __init__(self, settings, every, on):
        super().__init__(settings, every, on)
        self.vectors: torch.Tensor | None = None  # last eigenvectors: the next warm start
        self.batches: list = []
        self.probe_size = 0
        self.plan: P.Plan | None = None  # made in setup, from the config
        self.total_steps: int | None = None  # None: a user's own loop that did not say
        self.batch_size: int | None = None
        self.announced = False
        self.spent = {"measurements": 0, "hvps": 0, "sample_passes": 0.0}
        self.no_graph_noted = False

    # -- cadence --------------------------------------------------------------------------------
    def _batch_due(self, step: int) -> bool:
        n = self.settings["batch_every"]
        return n > 0 and step % n == 0

    def _snapshot_due(self, step: int) -> bool:
        """Slices and density every ``snapshot_every`` steps and at the last step."""
        s = self.settings
        wanted = s["slices"] != "off" or s["density"]
        return wanted and (step % s["snapshot_every"] == 0 or step == self.total_steps)

    def _measures(self, step: int) -> bool:
        return self.plan.measures(step) or self._snapshot_due(step)  # snapshots are in a known plan

    def wants_step(self, step: int) -> bool:
        return self._measures(step) or self._batch_due(step)

    def wants_graph(self, step: int) -> bool:
        return self._batch_due(step)

    def _make_plan(self, run: RunContext, probe: int) -> P.Plan:
        """The measured steps, from the config: the cadence, the costs it implies and the budget."""
        s, total, batch = self.settings, self.total_steps, self.batch_size
        hvps = s["k"] * s["max_iter"] + (s["trace_samples"] if s["trace"] else 0)
        every_snapshot = range(s["snapshot_every"], (total or 0) + 1, s["snapshot_every"])
        snapshots = {t for t in (*every_snapshot, total) if total and self._snapshot_due(t)}
        points = sum(s["slice_steps"] ** (2 if kind == "2d" else 1) for kind in self._slice_kinds())
        snapshot = P.snapshot_cost(probe, points, SLQ_VECTORS * SLQ_STEPS if s["density"] else 0)
        batches = (total or 0) // s["batch_every"] if s["batch_every"] else 0
        fixed = batches * P.HVP * (batch or 0) + len(snapshots) * snapshot
        every = self.every or self.default_every
        # Adam's preconditioner comes from its second moments: at step 2 they are one batch's squared
        # gradient, far from the slowly varying P the threshold assumes, so it starts a cadence later
        first = max(2, every) if isinstance(run.optimizer, (torch.optim.Adam, torch.optim.AdamW)) else 1
        return P.make_plan(total, every, first, batch, s["budget"],
                           s["min_measurements"], P.measurement_cost(probe, hvps), fixed, snapshots)

    # -- declarations ---------------------------------------------------------------------------
    def _slice_kinds(self) -> list[str]:
        return {"off": [], "1d": ["1d"], "2d": ["2d"], "both": ["1d", "2d"]}[self.settings["slices"]]

    def series(self, run: RunContext) -> list[Series]:
        s, k, n = self.settings, self.settings["k"], self.settings["slice_steps"]
        out = [
            Series("lambda_max", (k,), description=f"top {k} eigenvalues of the Hessian of the probe "
                   "loss (Adam/AdamW: of the preconditioned P⁻¹H), largest first"),
            Series("threshold", description="edge-of-stability threshold of the optimizer at the "
                   "step's learning rate (infinite where it is 0: no step is unstable)"),
            Series("n_hvp", description="Hessian-vector products spent by the step's measurement "
                   "(Lanczos, trace, density)"),
            Series("converged", description="1 when Lanczos met its tolerance, else 0"),
        ]
        if s["smallest"]:
            out.append(Series("lambda_min", description="smallest (most negative) eigenvalue"))
        if s["trace"]:
            out += [Series("trace", description="Hessian trace (exact on the Lanczos subspace, Hutchinson "
                           "on the rest), same operator as lambda_max"),
                    Series("trace_stderr", description="standard error of the trace estimate")]
        if s["batch_every"]:
            out.append(Series("batch_sharpness", description="gᵀHg/‖g‖² of the step's mini-batch"))
        if "1d" in self._slice_kinds():
            out.append(Series("slice_1d", (n,), description="probe loss along a filter-normalised "
                              "random direction"))
        if "2d" in self._slice_kinds():
            out.append(Series("slice_2d", (n, n), description="probe loss on a filter-normalised "
                              "random plane, [alpha, beta]"))
        if s["density"]:
            out.append(Series("density", (len(DENSITY_GRID),), description="eigenvalue density (SLQ) "
                              "of λ/λ_max"))
        return out

    def views(self) -> list[View]:
        s, k = self.settings, self.settings["k"]
        labels = [f"λ{i + 1}" for i in range(k)] + ["threshold"]
        alphas = np.linspace(-s["slice_span"], s["slice_span"], s["slice_steps"]).tolist()
        out = [View("line", "Sharpness vs edge of stability",
                    ("sharpness/lambda_max", "sharpness/threshold"),
                    "Top Hessian eigenvalues on the probe set; crossing the threshold line means "
                    "plain gradient descent on a quadratic would be unstable.",
                    # log: a decaying learning rate sends the threshold up by orders of magnitude
                    {"labels": labels, "y_label": "eigenvalue", "log_y": True, "inf_text": NO_THRESHOLD})]
        if s["batch_every"]:
            out.append(View("line", "Batch sharpness", ("sharpness/batch_sharpness", "sharpness/threshold"),
                            "Curvature of each mini-batch's loss along its own gradient; SGD tends to "
                            "hold it at the threshold.",
                            {"labels": ["batch sharpness", "threshold"], "y_label": "curvature",
                             "log_y": True, "inf_text": NO_THRESHOLD}))
        if s["trace"]:
            out.append(View("line", "Hessian trace", ("sharpness/trace",),
                            "Sum of all Hessian eigenvalues: overall curvature, not only the top."))
        out.append(View("line", "Cost (HVPs)", ("sharpness/n_hvp",),
                        "Hessian-vector products spent per measurement; warm starts keep it low."))
        if "1d" in self._slice_kinds():
            out.append(View("curve", "Loss slice (1-D)", ("sharpness/slice_1d",),
                            "Probe loss along a random filter-normalised direction through the "
                            "current weights (Li et al. 2018).",
                            {"x": alphas, "x_label": "step along the direction"}))
        if "2d" in self._slice_kinds():
            out.append(View("image_grid", "Loss slice (2-D)", ("sharpness/slice_2d",),
                            "Probe loss on a random filter-normalised plane through the current weights, "
                            f"both axes from -{s['slice_span']:g} to {s['slice_span']:g}.",
                            {"captions": ["loss on the plane"]}))
        if s["density"]:
            out.append(View("curve", "Hessian eigenvalue density", ("sharpness/density",),
                            "Where the Hessian's eigenvalues lie, relative to the largest (stochastic "
                            "Lanczos quadrature).", {"x": DENSITY_GRID.tolist(), "x_label": "λ / λ_max"}))
        return out

    # -- hooks ----------------------------------------------------------------------------------
    def setup(self, run: RunContext) -> None:
        probe = run.probe(min(self.settings["probe_size"], run.train_size))
        self.batches = probe.batches(self.settings["probe_batch"])
        self.probe_size = len(probe.ids)
        self.total_steps = run.total_steps
        self.batch_size = run.config.sections["data"].get("batch_size")  # not known in a user's own loop
        self.plan = self._make_plan(run, self.probe_size)

    def on_step(self, ctx: StepContext) -> None:
        if not self.announced:
            self.announced = True
            ctx.event("sharpness_plan", self.plan.describe())
        threshold = A.eos_threshold(ctx.optimizer)
        scale = A.adam_preconditioner(ctx.optimizer, ctx.run.params) if threshold.preconditioned else None
        if threshold.preconditioned and scale is None:
            return  # Adam has no second moments before its first step: nothing to precondition with
        ctx.log("threshold", threshold.value)
        shift = A.coupled_weight_decay(ctx.optimizer)
        if self._batch_due(ctx.step):
            self._batch_sharpness(ctx, scale, shift)
        if self._measures(ctx.step):
            self._measure(ctx, shift, scale, self._snapshot_due(ctx.step))

    def on_end(self, ctx: EndContext) -> None:
        """What the plan cost, against what it said it would cost at most."""
        made, hvps, passes = self.spent["measurements"], self.spent["hvps"], self.spent["sample_passes"]
        planned = "" if self.plan.steps is None else f" of the {len(self.plan.steps)} planned"
        text = (f"Sharpness: {made}{planned} measurements made, {hvps} Hessian-vector products in all, "
                f"{passes:,.0f} sample-passes")
        if self.batch_size:
            training = ctx.step * self.batch_size
            text += f", {passes / training:.2g}× the training's {training:,.0f}"
        most = "" if self.plan.steps is None else f" (the plan's most: {self.plan.most:,.0f})"
        ctx.event("sharpness_cost", text + most + ".")

    def _batch_sharpness(self, ctx: StepContext, scale, shift: float) -> None:
        if any(g is not None and g.requires_grad for g in ctx.grads):
            ctx.log("batch_sharpness", A.batch_sharpness(ctx.grads, ctx.run.params, scale, shift))
            self.spent["hvps"] += 1
            self.spent["sample_passes"] += P.HVP * (self.batch_size or 0)
        elif not self.no_graph_noted:
            self.no_graph_noted = True
            ctx.event("sharpness_no_graph", "Sharpness: no batch sharpness, the step's gradients carry "
                      "no graph (multi-process DDP has no double backward; a loop of one's own would "
                      "need backward(create_graph=True) on those steps)")

    def _measure(self, ctx: StepContext, shift: float, scale, snapshot: bool) -> None:
        op = A.HessianOperator(ctx.model, ctx.run.mean_loss, self.batches, shift)
        matvec = op.matvec if scale is None else A.scaled(op.matvec, scale)
        s = self.settings
        res = A.lanczos_top(matvec, op.dim, s["k"], s["tol"], s["max_iter"], self._warm_start(op, ctx.step),
                            s["smallest"], ctx.step, op.dtype, op.device)
        self.vectors = res.vectors
        ctx.log("lambda_max", res.values)
        ctx.log("converged", float(res.converged))
        if s["smallest"]:
            ctx.log("lambda_min", res.smallest)
        if s["trace"]:
            est = A.deflated_trace(matvec, res.basis, res.basis_trace, s["trace_samples"], ctx.step)
            ctx.log("trace", est.value)
            ctx.log("trace_stderr", est.stderr)
        points = self._snapshot(ctx, matvec, op, float(res.values[0])) if snapshot else 0
        ctx.log("n_hvp", op.n_matvec)
        self.spent["measurements"] += 1
        self.spent["hvps"] += op.n_matvec
        self.spent["sample_passes"] += (P.measurement_cost(self.probe_size, op.n_matvec)
                                        + P.FORWARD * self.probe_size * points)

    def _warm_start(self, op: A.HessianOperator, seed: int) -> torch.Tensor | None:
        """Last eigenvectors with a little random direction mixed in: converges in a few steps when
        the top directions barely moved, and can still find a new top eigenvalue."""
        if self.vectors is None or self.vectors.shape[0] != op.dim:
            return None
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(self.vectors.shape, generator=gen, dtype=op.dtype).to(op.device)
        noise = noise / noise.norm(dim=0, keepdim=True)
        return self.vectors + WARM_NOISE * noise

    def _snapshot(self, ctx: StepContext, matvec, op: A.HessianOperator, lam: float) -> int:
        """Slices and density; returns the slice points computed (forward passes over the probe)."""
        s, points = self.settings, 0
        for kind in self._slice_kinds():
            sl = A.loss_slice(ctx.model, ctx.run.mean_loss, self.batches, 1 if kind == "1d" else 2,
                              s["slice_steps"], s["slice_span"], SLICE_SEED)
            ctx.log(f"slice_{kind}", sl.losses)
            points += sl.losses.size
        if s["density"]:
            nodes, weights = A.slq(matvec, op.dim, SLQ_VECTORS, SLQ_STEPS, ctx.step, op.dtype, op.device)
            scale = abs(lam) if lam != 0 else 1.0
            ctx.log("density", A.density_on_grid(nodes / scale, weights, DENSITY_GRID, DENSITY_SIGMA))
        return points

    def state_dict(self) -> dict:
        """The warm start of the next measurement (with it a resumed run measures exactly as an
        uninterrupted one), whether the plan was announced, and what was spent so far."""
        state = {"announced": self.announced, "spent": dict(self.spent)}
        return state if self.vectors is None else {**state, "vectors": self.vectors.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.announced = bool(state.get("announced", False))
        self.spent.update(state.get("spent", {}))
        if "vectors" in state:
            self.vectors = state["vectors"].to(self.batches[0][0].device)

    # -- findings -------------------------------------------------------------------------------
    @classmethod
    def findings(cls, run) -> list[Finding]:
        names = run.names()
        if "sharpness/lambda_max" not in names or "sharpness/threshold" not in names:
            return []
        steps, lam = run.series("sharpness/lambda_max")
        t_steps, thr = run.series("sharpness/threshold")
        if len(steps) == 0:
            return []
        lam1 = np.asarray(lam, dtype=float).reshape(len(steps), -1)[:, 0]
        adam = run.config.get("optimizer", {}).get("name") in ("adam", "adamw")
        symbol = "λ₁(P⁻¹H)" if adam else "λ₁"
        out = edge_findings(steps, lam1, at_steps(steps, t_steps, thr), symbol)
        out += trend_findings(steps, lam1, symbol)
        if "sharpness/converged" in names:
            out += convergence_findings(*run.series("sharpness/converged"))
        if "sharpness/batch_sharpness" in names:
            b_steps, b = run.series("sharpness/batch_sharpness")
            out += batch_findings(b_steps, np.asarray(b, float), at_steps(b_steps, t_steps, thr))
        return out

    @classmethod
    def explain(cls, run, step: int) -> list[Evidence]:
        from .explain import evidence_at  # reads this module's helpers
        return evidence_at(run, step)


# ---------------------------------------------------------------------------------------------
# Findings from arrays (kept apart from the run file so they can be tested on planted series).
# A finding's value is the number its sentence states, rounded as stated (printed there with :g),
# and its unit is the words that follow the number in the sentence.
# ---------------------------------------------------------------------------------------------
def stated(x: float, digits: int = 2) -> float:
    return float(f"{x:.{digits}g}")


def of_threshold(ratio: float) -> tuple[float, str]:
    """A ratio to the threshold as a reader takes it in: 0.05% of it, 87% of it, 1.3× it."""
    if ratio >= 1:
        return stated(ratio), "× the threshold"
    return stated(100 * ratio), "% of the threshold"


def at_steps(steps: np.ndarray, s: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The values of the series (s, values) at exactly ``steps``; NaN where it has no row."""
    lookup = dict(zip(np.asarray(s).tolist(), np.asarray(values, dtype=float).tolist()))
    return np.array([lookup.get(int(t), np.nan) for t in steps], dtype=float)


def edge_findings(steps: np.ndarray, lam: np.ndarray, threshold: np.ndarray, symbol: str) -> list[Finding]:
    """How close λ came to the threshold, and how it stood against it from then on. Steps with no
    finite threshold (a learning rate of 0) have no edge and are left out."""
    known = np.isfinite(threshold) & np.isfinite(lam)
    subject = f"The sharpness {symbol}"
    if not known.any():
        return [Finding("sharpness", "info", f"{subject} has no edge of stability to be compared with: the "
                        "learning rate was 0 at every measurement, or the optimizer has no known threshold.")]
    steps, ratio = steps[known], lam[known] / threshold[known]
    peak = int(np.argmax(ratio))
    value, unit = of_threshold(ratio[peak])
    if ratio[peak] < 1 - EDGE_BAND:
        return [Finding("sharpness", "ok", f"{subject} stayed below the edge of stability: at most "
                        f"{value:g}{unit} (step {steps[peak]}).", int(steps[peak]), value, unit)]
    first = int(np.argmax(ratio >= 1 - EDGE_BAND))
    since = ratio[first:]
    at = int((np.abs(since - 1) <= EDGE_BAND).sum())
    above = int((since > 1 + EDGE_BAND).sum())
    n = len(since)
    out = [Finding("sharpness", "info", f"{subject} reached the edge of stability (90% of the threshold or "
                   f"more) at step {steps[first]}; from then on it was within ±10% of the threshold at {at} "
                   f"of {n} measurements, above it at {above} and below it at {n - at - above}.",
                   int(steps[first]), float(at), f"of {n} measurements")]
    if above:
        out.append(Finding("sharpness", "warning", f"{subject} went beyond the edge of stability, up to "
                           f"{value:g}{unit} (step {steps[peak]}): gradient descent on a quadratic this "
                           "sharp would diverge.", int(steps[peak]), value, unit))
    return out


def trend_findings(steps: np.ndarray, lam: np.ndarray, symbol: str) -> list[Finding]:
    """Is λ still rising? A line fitted to the last third of the measurements (at least three),
    its change over them relative to where the line starts."""
    ok = np.isfinite(lam)
    steps, lam = steps[ok], lam[ok]
    if len(lam) < 3:
        return []
    n = max(3, len(lam) // 3)
    s, y = steps[-n:].astype(float), lam[-n:]
    slope, intercept = np.polyfit(s, y, 1)
    start = slope * s[0] + intercept
    if not start > 0:
        return []  # the line starts at or below zero: no relative change to speak of
    change = stated(100 * slope * (s[-1] - s[0]) / start)
    span = f"% over steps {int(s[0])}–{int(s[-1])} (a line fitted to its last {n} measurements)"
    if change > 5:
        return [Finding("sharpness", "info", f"The landscape is still sharpening: {symbol} rose {change:g}{span}.",
                        int(s[-1]), change, "%")]
    if change < -5:
        return [Finding("sharpness", "ok", f"The landscape is flattening: {symbol} fell {-change:g}{span}.",
                        int(s[-1]), -change, "%")]
    verb = "rose" if change >= 0 else "fell"
    return [Finding("sharpness", "ok", f"The sharpness {symbol} has levelled off: it {verb} "
                    f"{abs(change):g}{span}.", int(s[-1]), abs(change), "%")]


def convergence_findings(steps: np.ndarray, converged: np.ndarray) -> list[Finding]:
    missed = int((np.asarray(converged) < 0.5).sum())
    if missed == 0:
        return []
    unit = f"of {len(steps)} measurements"
    return [Finding("sharpness", "info", f"Lanczos missed its tolerance at {missed} {unit}; raise max_iter or "
                    "tol for steadier eigenvalues.", int(steps[-1]), float(missed), unit)]


def batch_findings(steps: np.ndarray, batch: np.ndarray, threshold: np.ndarray) -> list[Finding]:
    """Median batch sharpness over its last third (steps with a finite threshold), relative to the
    threshold."""
    known = np.isfinite(threshold) & np.isfinite(batch)
    steps, ratio = steps[known], batch[known] / threshold[known]
    if len(ratio) == 0:
        return []
    n = max(1, len(ratio) // 3)
    value, unit = of_threshold(float(np.median(ratio[-n:])))
    return [Finding("sharpness", "info", f"Batch sharpness sat at a median {value:g}{unit} over its last "
                    f"{n} values (steps {steps[-n]}–{steps[-1]}).", int(steps[-1]), value, unit)]
