"""Explain a step: everything a run file knows about one step, from every analysis it holds.

A user sees a loss spike (or any step) and asks *why here?*. The engine's own curves answer part
(the loss, learning rate and gradient norm against their recent history); each plugin answers the
rest through its ``explain(run, step)`` classmethod (λ_max against the threshold, the opposing pair
whose losses moved, the layers whose flip rate jumped, the slices whose error changed ...). Every
item carries its number and the step it was measured at; the summary sentence joins the items that
stand out most. Used by ``traindx explain``, the GUI's "Explain this step" panel and the report's
"Spikes" section, so the three say the same.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field

import numpy as np

from .plugin import Evidence, Finding, load_plugin_class
from .spikes import SpikeRule, find_spikes

HISTORY = 50  # a step is compared with the median of the steps just before it
SUMMARY_ITEMS = 4
STANDS_OUT = 0.25  # evidence weight from which an item joins the summary
SPIKE_FINDINGS = 5  # the largest spikes of a run each get a finding


@dataclass
class Explanation:
    step: int
    summary: str
    evidence: list[Evidence]
    spike: dict | None = None  # the loss spike at this step: {"step", "ratio", ...}
    spikes: list[dict] = field(default_factory=list)  # every spike of the run

    def to_dict(self) -> dict:
        return {"step": self.step, "summary": self.summary, "spike": self.spike, "spikes": self.spikes,
                "evidence": [asdict(e) for e in self.evidence]}


def explain(run, step: int | None = None, nearest_spike: bool = False) -> Explanation:
    """The explanation of ``step`` (default: the first loss spike, or the last step when there is
    none); with ``nearest_spike``, of the spike nearest to ``step``."""
    spikes = run_spikes(run)
    last = _last_step(run)
    if step is None or nearest_spike:
        if spikes:
            target = spikes[0] if step is None else min(spikes, key=lambda s: abs(s["step"] - step))
            step = target["step"]
        elif step is None:
            step = last
    step = int(min(max(step, 1), last)) if last else int(step)
    spike = next((s for s in spikes if s["step"] == step), None)
    evidence = core_evidence(run, step, spike)
    for name in _plugins_of(run):
        try:
            cls = load_plugin_class(name)
        except Exception:  # a plugin that is not installed here: its series are still shown elsewhere
            continue
        try:
            evidence += cls.explain(run, step)
        except Exception as exc:  # one broken analysis must not hide what the others know
            evidence.append(Evidence(name, f"The analysis could not explain this step: {exc}", step))
    evidence.sort(key=lambda e: -e.weight)
    return Explanation(step, summary(step, spike, evidence, spikes), evidence, spike, spikes)


def summary(step: int, spike: dict | None, evidence: list[Evidence], spikes: list[dict]) -> str:
    """One sentence: the step, then the clauses of the items that stand out most, strongest first."""
    if spike:
        head = f"Loss spike at step {step:,} ({spike['ratio']:.3g}× the running median)"
    else:
        head = f"Step {step:,}" + ("" if spikes else " (the run has no loss spikes)")
    clauses = [e.phrase for e in evidence if e.phrase and e.weight >= STANDS_OUT][:SUMMARY_ITEMS]
    return f"{head}: " + ("; ".join(clauses) if clauses else "nothing else in the run stands out here") + "."


def run_spikes(run) -> list[dict]:
    """The run's loss spikes, in step order: {"step", "ratio", "loss", "median"} each. From the
    engine's ``train/loss_spike`` series, or, for files written before it, found again in
    ``train/loss`` by the config's rule."""
    names = run.names()
    if "train/loss" not in names:
        return []
    loss_steps, loss = run.series("train/loss")
    if "train/loss_spike" in names:
        steps, ratios = run.series("train/loss_spike")
        at = np.minimum(np.searchsorted(loss_steps, steps), len(loss_steps) - 1)
        # a live file read between two series' flushes may hold a spike whose loss row is not there yet
        return [{"step": int(s), "ratio": float(r), "loss": float(loss[i]), "median": float(loss[i] / r)}
                for s, r, i in zip(steps, ratios, at) if len(loss_steps) and loss_steps[i] == s]
    table = run.config.get("spikes")
    rule = SpikeRule.from_config(table) if table else SpikeRule()
    return [{"step": s.step, "ratio": s.ratio, "loss": s.loss, "median": s.median}
            for s in find_spikes(loss_steps, loss, rule)]


def spike_findings(run, summaries: dict[int, str] | None = None) -> list[Finding]:
    """A finding for each of the largest loss spikes, saying what the run knows of it (the
    explanation's summary), or one that says there were none. ``summaries``: explanations already
    made, by step (the report's Spikes section has them), so no spike is explained twice."""
    spikes = run_spikes(run)
    if not spikes:
        if "train/loss" not in run.names() or not run.length("train/loss"):
            return []
        table = run.config.get("spikes") or {}
        rule = SpikeRule.from_config(table) if table else SpikeRule()
        return [Finding("core", "ok", f"The training loss had 0 spikes: no step's log-loss rose {rule.threshold:g} "
                        f"robust standard deviations, and its loss {rule.min_ratio:g}×, above the median of the "
                        f"{rule.window} steps before it.", _last_step(run), 0.0, "spikes")]
    largest = sorted(spikes, key=lambda s: -s["ratio"])[:SPIKE_FINDINGS]
    made = summaries or {}
    return [Finding("core", "warning", made.get(s["step"]) or explain(run, s["step"]).summary, s["step"],
                    float(f"{s['ratio']:.3g}"),
                    "× the running median") for s in sorted(largest, key=lambda s: s["step"])]


# ---------------------------------------------------------------------------------------------
# The engine's own curves
# ---------------------------------------------------------------------------------------------
def standout(ratio: float) -> float:
    """How much a ratio to the recent median stands out, in [0, 1]: ×4 (or ÷4) and beyond is 1."""
    if not (ratio > 0 and math.isfinite(ratio)):
        return 0.0
    return float(min(1.0, abs(math.log(ratio)) / math.log(4.0)))


def at_and_before(steps: np.ndarray, values: np.ndarray, step: int, history: int = HISTORY):
    """The row nearest to ``step`` and the median of the rows in the ``history`` steps before it;
    None where the series has no row near the step (within ``history``)."""
    if len(steps) == 0:
        return None
    i = int(np.argmin(np.abs(steps - step)))
    if abs(int(steps[i]) - step) > history:
        return None
    before = values[(steps < steps[i]) & (steps >= steps[i] - history)]
    before = before[np.isfinite(before)]
    median = float(np.median(before)) if len(before) else float("nan")
    return int(steps[i]), float(values[i]), median


def core_evidence(run, step: int, spike: dict | None) -> list[Evidence]:
    """The loss, the gradient norm and the learning rate at the step, against the steps before."""
    names = set(run.names())
    out = []
    if "train/loss" in names and (got := _against_recent(run, "train/loss", step)):
        at, value, median, ratio = got
        rel = f", {ratio:.2f}× the median of the {HISTORY} steps before ({median:.4g})" if math.isfinite(ratio) else ""
        out.append(Evidence("core", f"Training loss {value:.4g} at step {at:,}{rel}.", at, value, "",
                            standout(ratio) if spike else 0.0, "", "train/loss"))
    if "grad_norm" in names and (got := _against_recent(run, "grad_norm", step)):
        at, value, _, ratio = got
        rel = f", {ratio:.2f}× its median over the {HISTORY} steps before" if math.isfinite(ratio) else ""
        rose = math.isfinite(ratio) and ratio > 1.5  # a gradient that shrank explains no spike
        out.append(Evidence("core", f"Gradient norm {value:.4g} at step {at:,}{rel}.", at, value, "",
                            standout(ratio) if rose else 0.0,
                            f"the gradient norm was {ratio:.1f}× its recent median" if rose else "", "grad_norm"))
    if "lr" in names:
        out += _learning_rate(run, step)
    return out


def _against_recent(run, name: str, step: int) -> tuple[int, float, float, float] | None:
    """(step measured, value, median of the steps before, value / median) of a series near ``step``."""
    got = at_and_before(*_column(run, name), step)
    if not got:
        return None
    at, value, median = got
    return at, value, median, value / median if median > 0 else float("nan")


def _learning_rate(run, step: int) -> list[Evidence]:
    """The learning rate at the step, and how much it changed over the steps before (warm-up, decay)."""
    steps, lr = _column(run, "lr")
    got = at_and_before(steps, lr, step)
    if not got:
        return []
    at, value, _ = got
    earlier = lr[(steps >= at - HISTORY) & (steps < at)]
    ratio = value / earlier[0] if len(earlier) and earlier[0] > 0 else 1.0
    if ratio == 0:
        return [Evidence("core", f"Learning rate 0 at step {at:,}, down from {earlier[0]:.4g} over the {HISTORY} "
                         "steps before.", at, value, "", 0.0, "", "lr")]
    if not (math.isfinite(ratio) and abs(ratio - 1) > 0.1):
        return [Evidence("core", f"Learning rate {value:.4g} at step {at:,}, unchanged over the steps before.", at,
                         value, "", 0.0, "", "lr")]
    way, by = ("up", ratio) if ratio > 1 else ("down", 1 / ratio)
    return [Evidence("core", f"Learning rate {value:.4g} at step {at:,}, {way} {by:.2f}× over the {HISTORY} steps "
                     "before.", at, value, "", standout(ratio), f"the learning rate went {way} {by:.1f}×", "lr")]


def _column(run, name: str) -> tuple[np.ndarray, np.ndarray]:
    steps, values = run.series(name)
    values = np.asarray(values, dtype=float)
    return np.asarray(steps), values.reshape(len(steps), -1)[:, 0] if values.ndim > 1 else values


def _last_step(run) -> int:
    steps, _ = run.series("train/loss") if "train/loss" in run.names() else ([], [])
    return int(steps[-1]) if len(steps) else 0


def _plugins_of(run) -> list[str]:
    return [name for name in run.views() if name != "core"]


# ---------------------------------------------------------------------------------------------
# traindx explain
# ---------------------------------------------------------------------------------------------
def add_command(parser) -> None:
    """Configure the ``traindx explain`` subparser (registered under ``traindx.commands``)."""
    parser.description = ("Explain a step of a run: the loss, learning rate and gradient norm against "
                          "their recent history, and what every analysis measured there.")
    parser.add_argument("run", help="the run file (.h5)")
    parser.add_argument("--step", type=int, help="the step (default: the first loss spike)")
    parser.add_argument("--nearest-spike", action="store_true", help="explain the loss spike nearest to --step")
    parser.add_argument("--json", action="store_true", help="print the explanation as JSON")
    parser.set_defaults(func=run_command)


def run_command(args) -> int:
    from .store import open_run
    with open_run(args.run) as run:
        result = explain(run, args.step, args.nearest_spike)
    if args.json:
        json.dump(result.to_dict(), sys.stdout, indent=1)
        print()
        return 0
    print(result.summary)
    for e in result.evidence:
        number = "" if e.value is None else f"  [{e.value:.4g}{' ' + e.unit if e.unit else ''}]"
        print(f"  {e.plugin:<16} {e.text}{number}")
    if len(result.spikes) > 1:
        print(f"Loss spikes in this run: " + ", ".join(f"{s['step']:,} (×{s['ratio']:.1f})" for s in result.spikes))
    return 0
