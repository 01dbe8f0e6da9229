"""What a report says about a run, gathered once from the run file: Qt-free, so the HTML, the PDF
and the JSON all show the same numbers (and a notebook can call ``gather`` too).

The content follows Deepchecks' layout: findings first (every plugin's, most severe first), then
configuration and environment, the core curves, the loss spikes explained, one section per
analysis, and the events log. Plots are kept as view declarations here; the writers draw them with
the GUI's renderer.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from engine import __version__
from engine.explain import explain, run_spikes, spike_findings
from engine.plugin import SEVERITIES, Evidence, Finding, load_plugin_class

from .reduce import MAX_WEIGHT

CORE = "core"
CORE_TITLE = "Training curves"  # the engine's own section, in the report and the Explain panel
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
MAX_COLUMNS_AS_NUMBERS = 4  # a (k,) series with at most this many columns gets a key-number row per column
MAX_EVENTS = 500  # a longer log shows its first and last events; the run file keeps them all
MAX_TABLE_ROWS = 50  # rows of a table view shown in the report
MAX_SPIKES = 10  # the largest loss spikes each get their explanation; the rest are listed by step


@dataclass
class Number:
    """One key number of a series: its latest value and its extremes, each with its step."""

    series: str
    description: str
    unit: str
    last: float
    last_step: int
    min: float
    min_step: int
    max: float
    max_step: int
    infinite: str = ""  # how an infinite value reads, as the views declare it (e.g. "none (lr = 0)")


@dataclass
class Plot:
    """A declared view to draw, or for table views the rows at the latest step."""

    view: dict
    smoothing: float
    table: dict | None = None  # {"step", "columns", "rows", "omitted"} for kind == "table"


@dataclass
class Section:
    """The core curves or one analysis: findings, key numbers, the plugin's own text, plots."""

    plugin: str
    title: str
    description: str
    findings: list[Finding]
    numbers: list[Number]
    text: str
    plots: list[Plot]


@dataclass
class Spike:
    """One loss spike and its explanation, exactly as ``traindx explain RUN --step N`` gives it."""

    step: int
    ratio: float  # the loss over the running median of the steps before
    summary: str
    evidence: list[Evidence]


@dataclass
class Spikes:
    """The run's loss spikes: the largest MAX_SPIKES explained, in step order, and the steps of
    those left out; ``none`` says why there are none where there are none."""

    explained: list[Spike]
    left_out: list[int]
    none: str = ""

    @property
    def total(self) -> int:
        return len(self.explained) + len(self.left_out)


@dataclass
class Report:
    path: str
    name: str
    status: str
    status_sentence: str
    last_step: int
    total_steps: int | None
    smoothing: float
    findings: list[Finding]
    config: dict
    environment: dict
    sections: list[Section]
    spikes: Spikes
    events: list[dict]
    events_omitted: int = 0
    generator: str = field(default_factory=lambda: f"TrainDx {__version__}")

    @property
    def core(self) -> Section:
        return self.sections[0]

    @property
    def analyses(self) -> list[Section]:
        return self.sections[1:]


# ---------------------------------------------------------------------------------------------
# Gathering
# ---------------------------------------------------------------------------------------------
def gather(run, smoothing: float = 0.6) -> Report:
    """Everything a report shows, from an open run file (``engine.open_run``)."""
    if not 0.0 <= smoothing <= MAX_WEIGHT:
        raise ValueError(f"smoothing: got {smoothing!r}, expected a number in [0, {MAX_WEIGHT}]")
    status = run.status
    events = run.events()
    last = last_step(run)
    total = run.meta.get("total_steps")
    titles = run.plugin_titles()
    views = run.views()
    spikes = gather_spikes(run)
    sections = [core_section(run, views.get(CORE, []), smoothing, spikes)]
    sections += [plugin_section(run, name, titles.get(name, name), views[name])
                 for name in views if name != CORE]
    findings = [status_finding(status, last, total, events)]
    findings += [f for s in sections for f in s.findings]
    shown, omitted = trim_events(events)
    return Report(path=str(run.path), name=run_name(run), status=status,
                  status_sentence=findings[0].message, last_step=last, total_steps=total,
                  smoothing=smoothing, findings=by_severity(findings), config=run.config,
                  environment=run.meta, sections=sections, spikes=spikes, events=shown,
                  events_omitted=omitted)


def run_name(run) -> str:
    name = run.config.get("run", {}).get("name")
    return str(name) if name else run.path.stem


def last_step(run) -> int:
    """The last step any series reached (0 for a run that wrote no row)."""
    ends = []
    for name in run.names():
        if run.length(name):
            ends.append(int(run.series(name, start=run.length(name) - 1)[0][-1]))
    return max(ends, default=0)


def by_severity(findings: list[Finding]) -> list[Finding]:
    """Most severe first; within a severity, the order the plugins gave."""
    return sorted(findings, key=lambda f: -SEVERITY_RANK[f.severity])


def trim_events(events: list[dict]) -> tuple[list[dict], int]:
    """At most MAX_EVENTS events: the first and the last halves, and how many were left out."""
    if len(events) <= MAX_EVENTS:
        return events, 0
    half = MAX_EVENTS // 2
    return events[:half] + events[-half:], len(events) - 2 * half


def status_finding(status: str, last: int, total: int | None, events: list[dict]) -> Finding:
    """One sentence on how the run ended: finished, stopped, diverged, failed, crashed or running.
    Its number is the steps the run completed, as the sentence states it."""
    steps = f"of {total} steps" if total else "steps"
    ran = f"{last} {steps}"
    end = next((e for e in reversed(events) if e["kind"] in ("diverged", "failed")), None)
    why, at = (end["message"], end["step"]) if end else ("no message", last + 1)
    if status == "finished":
        return Finding(CORE, "ok", f"The run finished all {last} steps.", step=last, value=last, unit="steps")
    if status == "stopped":
        return Finding(CORE, "info", f"The run was stopped by request after {ran}.", step=last, value=last,
                       unit=steps)
    if status in ("diverged", "failed"):
        return Finding(CORE, "problem", f"The run {status} at step {at}, after {ran}: {why}", step=at,
                       value=last, unit=steps)
    if status == "crashed":
        return Finding(CORE, "problem", f"The run crashed after {ran}: its process ended without closing "
                       "the run file. This report shows everything written up to then.", step=last,
                       value=last, unit=steps)
    return Finding(CORE, "info", f"The run is still {status}; this report shows it up to {ran}.", step=last,
                   value=last, unit=steps)


def core_section(run, views: list[dict], smoothing: float, spikes: Spikes) -> Section:
    """The engine's curves; its spike findings reuse the Spikes section's explanations."""
    names = [n for v in views for n in v["series"]] + ["wall_time"]
    findings = spike_findings(run, {s.step: s.summary for s in spikes.explained})
    return Section(CORE, CORE_TITLE, "", findings, key_numbers(run, names), "", [Plot(v, smoothing) for v in views])


def gather_spikes(run) -> Spikes:
    """The largest MAX_SPIKES loss spikes, each with ``engine.explain.explain`` at its step (so the
    report, the Explain panel and ``traindx explain`` say the same), in step order."""
    spikes = run_spikes(run)
    if not spikes:
        said = spike_findings(run)  # the detection rule, in the words of the spike findings
        return Spikes([], [], said[0].message if said else "The run recorded no training loss, so it has no "
                      "loss spikes.")
    largest = {s["step"] for s in sorted(spikes, key=lambda s: -s["ratio"])[:MAX_SPIKES]}
    explained = []
    for s in spikes:
        if s["step"] in largest:
            got = explain(run, s["step"])
            explained.append(Spike(s["step"], s["ratio"], got.summary, got.evidence))
    return Spikes(explained, [s["step"] for s in spikes if s["step"] not in largest])


def plugin_section(run, name: str, title: str, views: list[dict]) -> Section:
    """One analysis: its findings and text (when the plugin is installed here), numbers and plots."""
    findings, text = plugin_judgement(run, name)
    description = run.plugin_descriptions().get(name, "")
    prefix = f"{name}/"
    infinite = {name: text for v in views for name, text in v.get("options", {}).get("inf_text", {}).items()}
    numbers = key_numbers(run, [n for n in run.names() if n.startswith(prefix)], infinite)
    plots = [Plot(v, 0.0, table_rows(run, v) if v["kind"] == "table" else None) for v in views]
    return Section(name, title, description, findings, numbers, text, plots)


def plugin_judgement(run, name: str) -> tuple[list[Finding], str]:
    """(findings, report text) from the plugin class; a plugin that is missing or raises becomes a
    finding that says so, never a failed report."""
    try:
        cls = load_plugin_class(name)
    except Exception as exc:
        return [Finding(name, "info", f"Plugin {name!r} is not installed here, so its findings could not be "
                        f"computed ({type(exc).__name__}); its plots are drawn from the run file.")], ""
    try:
        findings = list(cls.findings(run))
    except Exception as exc:
        findings = [Finding(name, "warning", f"Plugin {name!r} could not judge this run: "
                            f"{type(exc).__name__}: {exc}")]
    text = ""
    report_text = getattr(cls, "report_text", None)
    if callable(report_text):
        try:
            text = str(report_text(run) or "")
        except Exception as exc:
            text = f"(the plugin's report text failed: {type(exc).__name__}: {exc})"
    return findings, text


def key_numbers(run, names: list[str], infinite: dict[str, str] | None = None) -> list[Number]:
    """Latest, lowest and highest value of every numeric scalar series (and of each column of a
    series with a few columns) among ``names``, in order, each once; ``infinite`` names how an
    infinite value of a series reads."""
    infinite = infinite or {}
    out = []
    for name in dict.fromkeys(names):
        if name not in run.names() or not run.length(name):
            continue
        info = run.series_info(name)
        if info["dtype"] == "json" or len(info["shape"]) > 1:
            continue
        steps, values = run.series(name)
        values = np.asarray(values, dtype=float)
        text = infinite.get(name, "")
        if values.ndim == 1:
            out += _number(name, info, steps, values, text)
        elif values.shape[1] <= MAX_COLUMNS_AS_NUMBERS:
            for c in range(values.shape[1]):
                out += _number(f"{name}[{c}]", info, steps, values[:, c], text)
    return out


def _number(label: str, info: dict, steps: np.ndarray, y: np.ndarray, infinite: str) -> list[Number]:
    """Extremes among the finite values; the latest as it is (an infinite one shown as ``infinite``)."""
    finite = np.isfinite(y)
    head = (label, str(info["description"]), str(info["unit"]), float(y[-1]), int(steps[-1]))
    if not finite.any():
        return [Number(*head, math.nan, -1, math.nan, -1, infinite)]
    lo = int(np.nanargmin(np.where(finite, y, np.nan)))
    hi = int(np.nanargmax(np.where(finite, y, np.nan)))
    return [Number(*head, float(y[lo]), int(steps[lo]), float(y[hi]), int(steps[hi]), infinite)]


def table_rows(run, view: dict) -> dict | None:
    """The latest row of a table view's first series that has one, cut to MAX_TABLE_ROWS rows."""
    for name in view["series"]:
        if name in run.names() and run.length(name):
            step, doc = run.row_at(name)
            rows = list(doc.get("rows", [])) if isinstance(doc, dict) else []
            columns = [str(c) for c in doc.get("columns", [])] if isinstance(doc, dict) else []
            return {"series": name, "step": step, "columns": columns, "rows": rows[:MAX_TABLE_ROWS],
                    "omitted": max(0, len(rows) - MAX_TABLE_ROWS)}
    return None


# ---------------------------------------------------------------------------------------------
# Formatting shared by the writers
# ---------------------------------------------------------------------------------------------
def fmt_number(value, unit: str = "", infinite: str = "") -> str:
    """At most four significant digits, printed as a finding's sentence prints its rounded value
    (``:g``), so a finding's number reads the same in the table and in its sentence; "—" for a
    missing value, ``infinite`` (when given) for an infinite one. The unit follows after a space,
    or directly where it starts with "%" or "×" (87%, 1.3× the threshold)."""
    if value is None:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        text = str(int(value))
    else:
        try:
            v = float(value)
        except (TypeError, ValueError):
            return str(value)
        if math.isinf(v) and infinite:
            return infinite
        text = f"{float(f'{v:.4g}'):g}" if math.isfinite(v) else str(v)
    if not unit:
        return text
    return text + unit if unit[0] in "%×" else f"{text} {unit}"


def flatten(tree: dict, prefix: str = "") -> list[tuple[str, object]]:
    """A nested config as ("optimizer.lr", 0.1) pairs, in the file's order."""
    out = []
    for key, value in tree.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out += flatten(value, full + ".")
        else:
            out.append((full, value))
    return out


def fmt_setting(value) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "—"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt_setting(v) for v in value) + "]"
    return str(value)


# ---------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------
def to_json(report: Report) -> dict:
    """Every number the report shows, as plain JSON (non-finite floats as the strings "nan", "inf")."""
    return _finite({
        "format": "traindx.report", "format_version": 1, "generator": report.generator,
        "run": {"path": report.path, "name": report.name, "status": report.status,
                "status_sentence": report.status_sentence, "last_step": report.last_step,
                "total_steps": report.total_steps},
        "smoothing": {"weight": report.smoothing, "method": "debiased EMA (TensorBoard)",
                      "applies_to": "core curves"},
        "findings": [asdict(f) for f in report.findings],
        "config": report.config,
        "environment": report.environment,
        "sections": [{"plugin": s.plugin, "title": s.title, "description": s.description,
                      "findings": [asdict(f) for f in s.findings],
                      "numbers": [asdict(n) for n in s.numbers], "text": s.text,
                      "plots": [{"kind": p.view["kind"], "title": p.view["title"],
                                 "series": p.view["series"], "help": p.view.get("help", ""),
                                 "smoothing": p.smoothing, **({"table": p.table} if p.table else {})}
                                for p in s.plots]}
                     for s in report.sections],
        "spikes": {"total": report.spikes.total, "none": report.spikes.none,
                   "left_out_steps": report.spikes.left_out,
                   "explained": [{"step": s.step, "ratio": s.ratio, "summary": s.summary,
                                  "evidence": [asdict(e) for e in s.evidence]} for s in report.spikes.explained]},
        "events": report.events, "events_omitted": report.events_omitted,
    })


def _finite(obj):
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else str(v)
    if isinstance(obj, np.ndarray):
        return _finite(obj.tolist())
    return obj
