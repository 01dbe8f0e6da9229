"""Sharpness plugin: is the run at the edge of stability, and is the landscape still sharpening?

Every ``every`` steps, and at the first and the last step, it runs warm-started Lanczos on the Hessian
of the mean loss over a fixed probe set, for Adam on the preconditioned P^(-1/2) H P^(-1/2), and
compares the top eigenvalue with the threshold of the optimizer actually used at that step's
learning rate. Batch sharpness (one Hessian-vector product on the step's own graph) has its own,
cheaper cadence; loss slices and the eigenvalue density are snapshots taken more rarely.

A measurement costs a few dozen passes over the probe set, which on a small model can be hundreds
of training steps; ``budget`` caps the plugin's share of the run's time (see ``budget.py``) by
skipping scheduled measurements and snapshots; a run always gets at least its last step measured.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from engine.plugin import Finding, Plugin, RunContext, Series, Setting, StepContext, View

from . import analysis as A
from .budget import TimeBudget

EDGE_BAND = 0.1  # "at the edge": within ±10% of the threshold
WARM_NOISE = 0.1  # share of a random direction mixed into the warm start, so a new top is seen
DENSITY_GRID = np.linspace(-1.0, 1.25, 181)  # eigenvalues in units of λ_max
DENSITY_SIGMA = 0.02
SLQ_VECTORS, SLQ_STEPS = 4, 30
SLICE_SEED = 0  # the same Gaussian draw at every snapshot, rescaled to the weights of the moment
# Before the first measurement its cost is guessed from the time to build the operator (one forward
# and backward pass over the probe with graph). Measured on the digits MLP and CNN: an HVP costs
# 1.2-1.4 builds; a cold Lanczos run at tol 1e-2 takes 9-14 blocks.
HVP_PER_BUILD = 1.3
COLD_BLOCKS = 12
FORWARD_PER_BUILD = 0.5  # a slice point is one forward pass over the probe


class SharpnessPlugin(Plugin):
    name = "sharpness"
    title = "Sharpness and the edge of stability"
    description = ("Top Hessian eigenvalues (Lanczos on a fixed probe set) against the stability "
                   "threshold of the optimizer in use; batch sharpness, Hessian trace, loss slices.")
    default_every = 50
    settings = (
        Setting("probe_size", 2048, "training samples in the probe set (fixed for the run)", min=1),
        Setting("probe_batch", 512, "probe samples per forward pass (bounds memory)", min=1),
        Setting("k", 1, "how many top eigenvalues to track", min=1, max=20),
        Setting("tol", 1e-2, "Lanczos stops when each Ritz residual is below tol·|λ| (the eigenvalue "
                "error is then typically tol²·|λ|²/gap, about 1e-4 relative)", min=1e-10,
                max=0.5),
        Setting("max_iter", 40, "most Lanczos steps per measurement (each costs k HVPs)", min=2),
        Setting("smallest", False, "also track the most negative eigenvalue"),
        Setting("trace", True, "estimate the Hessian trace at each measurement (Lanczos subspace "
                "exactly, the rest by Hutchinson)"),
        Setting("trace_samples", 4, "Hutchinson samples (one HVP each) for the trace", min=2),
        Setting("batch_every", 50, "batch sharpness gᵀHg/‖g‖² every N steps (0 turns it off)", min=0),
        Setting("slices", "1d", "loss slices along filter-normalised random directions",
                choices=("off", "1d", "2d", "both")),
        Setting("slice_steps", 21, "points per slice axis", min=3, max=201),
        Setting("slice_span", 1.0, "slice half-width in filter-normalised units", min=1e-6),
        Setting("density", False, "eigenvalue density by stochastic Lanczos quadrature "
                f"({SLQ_VECTORS}×{SLQ_STEPS} HVPs)"),
        Setting("snapshot_every", 1000, "slices and density every N steps, and at the last step",
                min=1),
        Setting("budget", 0.2, "most time the plugin may spend (batch sharpness included), as a share "
                "of the time spent training; scheduled measurements are skipped to stay within it, "
                "but a run always gets one (0: no limit)", min=0.0),
    )

    def __init__(self, settings, every, on):
        super().__init__(settings, every, on)
        self.vectors: torch.Tensor | None = None  # last eigenvectors: the next warm start
        self.batches: list = []
        self.total_steps = 0
        self.clock = TimeBudget(0.0, 1)
        self.cost: float | None = None  # seconds the last measurement took (or the guess before one)
        self.snapshot_cost = 0.0  # likewise for slices and density
        self.skipped = False
        self.no_graph_noted = False

    # -- cadence --------------------------------------------------------------------------------
    @property
    def _every(self) -> int:
        return self.every or self.default_every

    def _measures(self, step: int) -> bool:
        return step == 1 or step % self._every == 0 or step == self.total_steps

    def _snapshots(self, step: int) -> bool:
        wanted = self.settings["slices"] != "off" or self.settings["density"]
        return wanted and (step % self.settings["snapshot_every"] == 0 or step == self.total_steps)

    def _batch_due(self, step: int) -> bool:
        n = self.settings["batch_every"]
        return n > 0 and step % n == 0

    def wants_step(self, step: int) -> bool:
        return self._measures(step) or self._snapshots(step) or self._batch_due(step)

    def wants_graph(self, step: int) -> bool:
        return self._batch_due(step)

    # -- declarations ---------------------------------------------------------------------------
    def _slice_kinds(self) -> list[str]:
        return {"off": [], "1d": ["1d"], "2d": ["2d"], "both": ["1d", "2d"]}[self.settings["slices"]]

    def series(self, run: RunContext) -> list[Series]:
        s, k, n = self.settings, self.settings["k"], self.settings["slice_steps"]
        out = [
            Series("lambda_max", (k,), description=f"top {k} eigenvalues of the Hessian of the probe "
                   "loss (Adam/AdamW: of the preconditioned P⁻¹H), largest first"),
            Series("threshold", description="edge-of-stability threshold of the optimizer at the "
                   "step's learning rate"),
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
                    {"labels": labels, "y_label": "eigenvalue", "log_y": True})]
        if s["batch_every"]:
            out.append(View("line", "Batch sharpness", ("sharpness/batch_sharpness", "sharpness/threshold"),
                            "Curvature of each mini-batch's loss along its own gradient; SGD tends to "
                            "hold it at the threshold.", {"labels": ["batch sharpness", "threshold"]}))
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
        self.total_steps = run.total_steps
        self.clock = TimeBudget(self.settings["budget"], self.total_steps)

    def on_step(self, ctx: StepContext) -> None:
        with self.clock.spending():
            self._on_step(ctx)

    def _on_step(self, ctx: StepContext) -> None:
        threshold = A.eos_threshold(ctx.optimizer)
        scale = A.adam_preconditioner(ctx.optimizer, ctx.run.params) if threshold.preconditioned else None
        if threshold.preconditioned and scale is None:
            return  # Adam has no second moments before its first step: nothing to precondition with
        ctx.log("threshold", threshold.value)
        shift = A.coupled_weight_decay(ctx.optimizer)
        if self._batch_due(ctx.step):
            if any(g is not None and g.requires_grad for g in ctx.grads):
                ctx.log("batch_sharpness", A.batch_sharpness(ctx.grads, ctx.run.params, scale, shift))
            elif not self.no_graph_noted:
                self.no_graph_noted = True
                ctx.event("sharpness_no_graph", "sharpness: no batch sharpness, the step's gradients carry "
                          "no graph (multi-process DDP training has no double backward)")
        if self._measures(ctx.step) or self._snapshots(ctx.step):
            op = None
            if self.cost is None:  # nothing measured yet: guess the costs from building the operator
                t = time.perf_counter()
                op = self._operator(ctx, shift)
                self._guess_costs(time.perf_counter() - t)
            last, snapshot = ctx.step == self.total_steps, self._snapshots(ctx.step)
            final = self.cost + (self.snapshot_cost if self._snapshots(self.total_steps) else 0.0)
            fits = self.clock.affords(ctx.step, self.cost + snapshot * self.snapshot_cost, final, last)
            if fits or (last and not self.clock.measured):  # every run gets its last step measured
                self._measure(ctx, op, shift, scale, snapshot and fits)
            elif ctx.step > 1 and not self.skipped:
                self.skipped = True
                steps = self.cost * ctx.step / max(self.clock.training_time(), 1e-9)
                ctx.event("sharpness_budget", f"sharpness: a measurement takes about {self.cost:.2g} s, "
                          f"as long as {steps:.0f} training steps, so from step {ctx.step} on they are "
                          f"spaced out to stay within {self.settings['budget']:.0%} of the training time "
                          "(budget = 0 lifts this)")

    def _operator(self, ctx: StepContext, shift: float) -> A.HessianOperator:
        return A.HessianOperator(ctx.model, ctx.run.mean_loss, self.batches, shift)

    def _guess_costs(self, build: float) -> None:
        """Costs of a measurement and a snapshot before either was made, scaled from the time to
        build the operator (one forward and backward pass over the probe, with graph)."""
        s = self.settings
        hvps = COLD_BLOCKS * s["k"] + (s["trace_samples"] if s["trace"] else 0)
        points = sum(s["slice_steps"] ** (2 if kind == "2d" else 1) for kind in self._slice_kinds())
        self.clock.record(build, measurement=False)
        self.cost = build * (1 + HVP_PER_BUILD * hvps)
        self.snapshot_cost = build * (FORWARD_PER_BUILD * points
                                      + (HVP_PER_BUILD * SLQ_VECTORS * SLQ_STEPS if s["density"] else 0))

    def _measure(self, ctx: StepContext, op: A.HessianOperator | None, shift: float, scale,
                 snapshot: bool) -> None:
        t = time.perf_counter()
        op = op or self._operator(ctx, shift)
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
        self.cost = time.perf_counter() - t
        if snapshot:
            self._snapshot(ctx, matvec, op, float(res.values[0]))
            self.snapshot_cost = time.perf_counter() - t - self.cost
        ctx.log("n_hvp", op.n_matvec)
        self.clock.record(time.perf_counter() - t)

    def _warm_start(self, op: A.HessianOperator, seed: int) -> torch.Tensor | None:
        """Last eigenvectors with a little random direction mixed in: converges in a few steps when
        the top directions barely moved, and can still find a new top eigenvalue."""
        if self.vectors is None or self.vectors.shape[0] != op.dim:
            return None
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(self.vectors.shape, generator=gen, dtype=op.dtype).to(op.device)
        noise = noise / noise.norm(dim=0, keepdim=True)
        return self.vectors + WARM_NOISE * noise

    def _snapshot(self, ctx: StepContext, matvec, op: A.HessianOperator, lam: float) -> None:
        s = self.settings
        for kind in self._slice_kinds():
            sl = A.loss_slice(ctx.model, ctx.run.mean_loss, self.batches, 1 if kind == "1d" else 2,
                              s["slice_steps"], s["slice_span"], SLICE_SEED)
            ctx.log(f"slice_{kind}", sl.losses)
        if s["density"]:
            nodes, weights = A.slq(matvec, op.dim, SLQ_VECTORS, SLQ_STEPS, ctx.step, op.dtype, op.device)
            scale = abs(lam) if lam != 0 else 1.0
            ctx.log("density", A.density_on_grid(nodes / scale, weights, DENSITY_GRID, DENSITY_SIGMA))

    def state_dict(self) -> dict:
        """The eigenvectors that warm-start the next measurement: with them a resumed run measures
        exactly as an uninterrupted one (at budget 0, where no timing decides what is measured)."""
        return {} if self.vectors is None else {"vectors": self.vectors.cpu()}

    def load_state_dict(self, state: dict) -> None:
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
        if len(steps) == 0 or len(t_steps) == 0:
            return []
        lam1 = np.asarray(lam, dtype=float).reshape(len(steps), -1)[:, 0]
        threshold = np.interp(steps, t_steps, thr)
        what = ("preconditioned sharpness λ₁(P⁻¹H)"
                if run.config.get("optimizer", {}).get("name") in ("adam", "adamw") else "λ_max")
        out = edge_findings(steps, lam1, threshold, what)
        out += trend_findings(steps, lam1, what)
        if "sharpness/converged" in names:
            out += convergence_findings(*run.series("sharpness/converged"))
        if "sharpness/batch_sharpness" in names:
            b_steps, b = run.series("sharpness/batch_sharpness")
            out += batch_findings(b_steps, np.asarray(b, float), np.interp(b_steps, t_steps, thr))
        return out


# ---------------------------------------------------------------------------------------------
# Findings from arrays (kept apart from the run file so they can be tested on planted series)
# ---------------------------------------------------------------------------------------------
def edge_findings(steps: np.ndarray, lam: np.ndarray, threshold: np.ndarray, what: str) -> list[Finding]:
    """When λ first came within 10% of the threshold, how long it stayed there, where it ended."""
    ratio = lam / threshold
    ok = np.isfinite(ratio)
    if not ok.any():
        return [Finding("sharpness", "info", f"No edge-of-stability threshold is known for this "
                        f"optimizer; {what} ended at {lam[-1]:.4g}.", int(steps[-1]), float(lam[-1]))]
    steps, ratio = steps[ok], ratio[ok]
    reached = np.flatnonzero(ratio >= 1 - EDGE_BAND)
    if len(reached) == 0:
        i = int(np.argmax(ratio))
        return [Finding("sharpness", "ok", f"{what} stayed below the edge of stability: at most "
                        f"{of_threshold(ratio[i])} (step {steps[i]}).", int(steps[i]),
                        float(ratio[i]), "× threshold")]
    first = int(reached[0])
    since = ratio[first:]
    inside = np.abs(since - 1) <= EDGE_BAND
    out = [Finding("sharpness", "info", f"{what} reached the edge of stability (within 10% of the "
                   f"threshold) at step {steps[first]} and stayed within ±10% at {inside.sum()} of "
                   f"{len(since)} measurements since (steps {steps[first]}–{steps[-1]}).",
                   int(steps[first]), float(inside.mean()), "fraction at edge")]
    if ratio[-1] > 1 + EDGE_BAND:
        out.append(Finding("sharpness", "warning", f"{what} ends at {ratio[-1]:.2f}× the threshold: "
                           "beyond the edge of stability, expect loss spikes or divergence.",
                           int(steps[-1]), float(ratio[-1]), "× threshold"))
    return out


def trend_findings(steps: np.ndarray, lam: np.ndarray, what: str) -> list[Finding]:
    """Is λ still rising? A line fitted to the last third of the measurements (at least three)."""
    n = max(3, len(lam) // 3)
    if len(lam) < 3:
        return []
    s, y = steps[-n:].astype(float), lam[-n:]
    slope = np.polyfit(s, y, 1)[0]
    change = slope * (s[-1] - s[0]) / max(abs(float(np.mean(y))), 1e-12)
    span = f"steps {int(s[0])}–{int(s[-1])}"
    if change > 0.05:
        return [Finding("sharpness", "info", f"The landscape is still sharpening: {what} rose "
                        f"{change:.0%} over {span}.", int(s[-1]), float(change), "relative change")]
    return [Finding("sharpness", "ok", f"{what} has levelled off: {change:+.0%} over {span}.",
                    int(s[-1]), float(change), "relative change")]


def convergence_findings(steps: np.ndarray, converged: np.ndarray) -> list[Finding]:
    missed = int((np.asarray(converged) < 0.5).sum())
    if missed == 0:
        return []
    return [Finding("sharpness", "info", f"Lanczos missed its tolerance at {missed} of {len(steps)} "
                    "measurements; raise max_iter or tol for steadier eigenvalues.",
                    int(steps[-1]), float(missed), "measurements")]


def batch_findings(steps: np.ndarray, batch: np.ndarray, threshold: np.ndarray) -> list[Finding]:
    """Median batch sharpness over the last third, relative to the threshold."""
    ratio = batch / threshold
    ratio = ratio[np.isfinite(ratio)][-max(1, len(ratio) // 3):]
    if len(ratio) == 0:
        return []
    med = float(np.median(ratio))
    return [Finding("sharpness", "info", f"Batch sharpness sat at a median {of_threshold(med)} over the "
                    "last third of the run.", int(steps[-1]), med, "× threshold")]


def of_threshold(ratio: float) -> str:
    """A ratio to the threshold as a reader takes it in: 0.05% of it, 87% of it, 1.30× it."""
    if ratio >= 1:
        return f"{ratio:.2f}× the threshold"
    return f"{ratio:.0%} of the threshold" if ratio >= 0.01 else f"{ratio * 100:.2g}% of the threshold"
