"""Calibration tracked over training: at each evaluation, from the validation logits the engine
already computed, the ECE family, proper scores, the temperature that would fix the model and the
reliability diagram's bins. Findings read the run file, so any run can be judged again."""
from __future__ import annotations

import math

import numpy as np
import torch

from engine.plugin import EvalContext, Evidence, Finding, Plugin, RunContext, Series, Setting, View

from . import analysis

PREFIX = "calibration/"

# name -> (unit, description); all float64 scalars, one row per evaluation
SCALARS = {
    "ece": ("", "expected calibration error: top-label, equal-width bins"),
    "mce": ("", "maximum calibration error: the worst equal-width bin's |accuracy - confidence|"),
    "ace": ("", "adaptive calibration error: top-label ECE over equal-mass bins"),
    "classwise_ece": ("", "class-wise ECE: mean over classes of the ECE of p(class k)"),
    "debiased_l2": ("", "Kumar et al.'s debiased top-label L2 calibration error, equal-mass bins"),
    "brier": ("", "multiclass Brier score, sum over classes, in [0, 2]"),
    "nll": ("nats", "negative log-likelihood of the validation labels"),
    "mean_confidence": ("", "mean top-label confidence"),
    "accuracy": ("", "top-1 accuracy on the validation split"),
    "temperature": ("", "the temperature T minimising NLL of softmax(logits / T) on the validation split"),
    "ece_after_temperature": ("", "ECE after dividing the logits by the fitted temperature"),
}

# findings' thresholds on ECE: below the first the model is well calibrated
ECE_OK, ECE_WARNING, ECE_PROBLEM = 0.02, 0.05, 0.10
RISE_WORTH_SAYING = 0.02  # absolute ECE increase since its best step that earns a warning
T_NEUTRAL = 0.1  # |T - 1| below this: temperature scaling would change little


class CalibrationPlugin(Plugin):
    """Can the model's confidence be trusted, and when during training did it stop being trustworthy?"""

    name = "calibration"
    title = "Calibration"
    description = ("Reliability diagrams, ECE/MCE/ACE/class-wise ECE, Brier score, NLL and the "
                   "temperature-scaling fix, at every evaluation of the validation split.")
    settings = (
        Setting("n_bins", 15, "confidence bins of every binned metric and of the reliability diagram",
                min=2, max=1000),
        Setting("binning", "uniform", "bins of the reliability diagram: equal width or equal mass",
                choices=analysis.BINNINGS),
    )
    default_on = "eval"

    # -- declarations -------------------------------------------------------------------------
    def series(self, run: RunContext) -> list[Series]:
        scalars = [Series(name, (), "float64", unit, desc) for name, (unit, desc) in SCALARS.items()]
        rows = Series("reliability", (self.settings["n_bins"], len(analysis.ROW_COLUMNS)), "float64",
                      description=f"{self.settings['binning']} reliability bins, columns "
                      + ", ".join(analysis.ROW_COLUMNS) + "; empty bins have NaN statistics and count 0")
        return [*scalars, rows]

    def views(self) -> list[View]:
        return [
            View("reliability", "Reliability diagram", _full("reliability"),
                 help="Accuracy against confidence per bin (gaps below the diagonal are overconfidence), "
                      "with how many predictions fall in each bin underneath.",
                 options={"binning": self.settings["binning"]}),
            View("line", "Calibration error", _full("ece", "ace", "classwise_ece", "debiased_l2", "mce"),
                 help="How far confidence is from accuracy over training; the step where ECE is lowest "
                      "is where the model's confidence was most trustworthy.",
                 options={"y_label": "calibration error"}),
            View("line", "Confidence and accuracy", _full("mean_confidence", "accuracy"),
                 help="Mean confidence above accuracy means overconfidence, below it underconfidence.",
                 options={"y_label": "fraction"}),
            View("line", "Temperature", _full("temperature"),
                 help="The temperature that would calibrate the model: above 1 it is overconfident, "
                      "below 1 underconfident.",
                 options={"y_label": "T", "log_y": True}),
            View("line", "ECE before and after temperature scaling", _full("ece", "ece_after_temperature"),
                 help="What dividing the logits by one fitted temperature would fix; a large remainder "
                      "means miscalibration that one scalar cannot undo.",
                 options={"y_label": "ECE"}),
            View("line", "Proper scores", _full("nll", "brier"),
                 help="Negative log-likelihood and Brier score of the validation labels: they reward "
                      "confidence only where it is right.",
                 options={"y_label": "score"}),
        ]

    # -- hooks ----------------------------------------------------------------------------------
    def on_eval(self, ctx: EvalContext) -> None:
        logits, labels = ctx.logits, ctx.labels
        if not bool(torch.isfinite(logits).all()):
            ctx.event("calibration_skipped", f"step {ctx.step}: non-finite validation logits")
            return
        n_bins = self.settings["n_bins"]
        metrics = analysis.calibration_metrics(logits, labels, n_bins, from_logits=True)
        fit = analysis.fit_temperature(logits, labels, n_bins)
        bins = analysis.reliability_bins(logits, labels, n_bins, self.settings["binning"], from_logits=True)
        fitted = {"temperature": fit.temperature, "ece_after_temperature": fit.after.ece}
        for name in SCALARS:
            ctx.log(name, fitted[name] if name in fitted else getattr(metrics, name))
        ctx.log("reliability", bins.rows())

    # -- reading back ---------------------------------------------------------------------------
    @classmethod
    def findings(cls, run) -> list[Finding]:
        if PREFIX + "ece" not in run.names():
            return []
        steps, ece = run.series(PREFIX + "ece")
        ok = np.isfinite(ece)
        if not ok.any():
            return []
        last = int(np.flatnonzero(ok)[-1])

        def latest(name: str) -> float:
            s, v = run.series(PREFIX + name)
            at = np.flatnonzero(s == steps[last])
            return float(v[at[-1]]) if len(at) else math.nan

        return [
            _confidence_finding(int(steps[last]), float(ece[last]), latest("mean_confidence"), latest("accuracy")),
            _best_step_finding(steps[ok], ece[ok]),
            _temperature_finding(int(steps[last]), float(ece[last]), latest("temperature"),
                                 latest("ece_after_temperature")),
        ]

    @classmethod
    def explain(cls, run, step: int) -> list[Evidence]:
        from .explain import evidence_at  # reads this module's helpers
        return evidence_at(run, step)


def _full(*names: str) -> tuple[str, ...]:
    return tuple(PREFIX + n for n in names)


def _severity(ece: float) -> str:
    if ece < ECE_OK:
        return "ok"
    if ece < ECE_WARNING:
        return "info"
    return "warning" if ece < ECE_PROBLEM else "problem"


def _percent(fraction: float) -> float:
    """A fraction as the percentage a finding states (two significant digits): its sentence prints
    it with :g followed by "%", and the Finding's value is that same number with the unit "%"."""
    return float(f"{100 * fraction:.2g}")


def _confidence_finding(step: int, ece: float, confidence: float, accuracy: float) -> Finding:
    """Over- or underconfidence at the latest evaluation; its number is the ECE."""
    gap = confidence - accuracy
    if ece < ECE_OK:
        what = "is well calibrated"
    elif abs(gap) < ece / 2:
        what = "is miscalibrated in both directions (overconfident in some bins, underconfident in others)"
    else:
        what = "is overconfident" if gap > 0 else "is underconfident"
    message = (f"At step {step} the model {what}: ECE {_percent(ece):g}%, mean confidence "
               f"{100 * confidence:.1f}% against accuracy {100 * accuracy:.1f}%.")
    return Finding("calibration", _severity(ece), message, step=step, value=_percent(ece), unit="%")


def _best_step_finding(steps: np.ndarray, ece: np.ndarray) -> Finding:
    """Where ECE was lowest, and how far it has risen since."""
    best = int(np.argmin(ece))
    best_step, best_ece, last_step, last_ece = int(steps[best]), float(ece[best]), int(steps[-1]), float(ece[-1])
    lowest = _percent(best_ece)
    if best == len(ece) - 1:
        return Finding("calibration", "ok", f"ECE was lowest at the latest evaluation: {lowest:g}% at step "
                       f"{best_step}.", step=best_step, value=lowest, unit="%")
    rose = last_ece - best_ece
    severity = "warning" if rose > RISE_WORTH_SAYING and last_ece >= ECE_WARNING else "info"
    message = (f"ECE was lowest at step {best_step}, {lowest:g}%, and rose to {_percent(last_ece):g}% by step "
               f"{last_step}: confidence was most trustworthy at step {best_step}.")
    return Finding("calibration", severity, message, step=best_step, value=lowest, unit="%")


def _temperature_finding(step: int, ece: float, temperature: float, ece_after: float) -> Finding:
    """The temperature that would fix the latest evaluation's calibration; its number is the ECE
    that dividing the logits by it would leave."""
    after = _percent(ece_after)
    if abs(temperature - 1) < T_NEUTRAL:
        message = (f"The fitted temperature at step {step} is {temperature:.2f}: temperature scaling would "
                   f"change little (ECE {_percent(ece):g}% before, {after:g}% after).")
        return Finding("calibration", "ok", message, step=step, value=after, unit="%")
    direction = "soften overconfident" if temperature > 1 else "sharpen underconfident"
    before = _percent(ece)
    effect = (f"lower ECE from {before:g}% to {after:g}%" if after < before
              else f"not lower ECE ({before:g}% before, {after:g}% after: it fits NLL, not ECE)")
    message = (f"Dividing the logits by T = {temperature:.2f} would {direction} predictions and {effect} at "
               f"step {step} (fitted and measured on the validation split).")
    return Finding("calibration", "info", message, step=step, value=after, unit="%")
