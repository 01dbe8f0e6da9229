"""A report as a list of blocks (HTML fragments, tables, figures), and those blocks as one HTML page.

The PDF writer paginates the same blocks, so both formats carry the same content. Every string that
comes from a run file (run name, config values, class names, event messages, plugin text) passes
through ``esc``; nothing from the file reaches the page unescaped.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from engine.explain import STANDS_OUT

from .rundata import NONE_FOUND
from .report_model import CORE, Number, Plot, Report, Section, Spike, flatten, fmt_number, fmt_setting

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "report"
STEP_KINDS = ("line", "band", "heatmap")
ENVIRONMENT_KEYS = (("traindx", "TrainDx"), ("torch", "PyTorch"), ("python", "Python"), ("device", "device"),
                    ("threads", "CPU threads"), ("platform", "platform"), ("data_source", "data source"),
                    ("train_size", "training samples"), ("val_size", "validation samples"),
                    ("n_classes", "classes"), ("input_shape", "input shape"), ("parameters", "parameters"),
                    ("total_steps", "planned steps"), ("created_utc", "started (UTC)"),
                    ("finished_utc", "ended (UTC)"), ("format_version", "run-file format version"))


def esc(value) -> str:
    """Text from anywhere, safe inside an element or a quoted attribute."""
    return html.escape(str(value), quote=True)


@dataclass
class Html:
    """A fragment drawn as it is; ``keep_with_next`` keeps a heading on the page of what follows."""

    html: str
    keep_with_next: bool = False


@dataclass
class Table:
    """A table the PDF may split between rows, repeating ``head`` on each page."""

    head: str  # one <tr> of <th>, with percentage widths
    rows: list[str] = field(default_factory=list)  # one <tr> each
    css_class: str = ""


@dataclass
class Figure:
    plot: Plot
    caption: str  # escaped HTML


Block = Html | Table | Figure


# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------
def blocks(report: Report) -> list[Block]:
    """The whole report in order: title, findings, configuration, core curves, spikes, analyses,
    events."""
    out: list[Block] = [Html(title_html(report))]
    out += findings_blocks(report)
    out += config_blocks(report)
    out += section_blocks(report.core, "curves", smoothing_sentence(report.smoothing))
    out += spikes_blocks(report)
    for s in report.analyses:
        out += section_blocks(s, f"plugin-{s.plugin}", "Plots are drawn unsmoothed.")
    out += events_blocks(report)
    return out


def badge(severity: str) -> str:
    return f'<span class="sev sev-{esc(severity)}">&nbsp;{esc(severity)}&nbsp;</span>'


def heading(level: int, anchor: str, text: str) -> Html:
    return Html(f'<h{level} id="{esc(anchor)}">{esc(text)}</h{level}>', keep_with_next=True)


def title_html(r: Report) -> str:
    total = f" of {r.total_steps}" if r.total_steps else ""
    made = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return (f'<h1 id="title">Training report: {esc(r.name)}</h1>'
            f'<p class="status">{badge(_status_severity(r.status))} <b>{esc(r.status)}</b> '
            f'at step {r.last_step}{total}. {esc(r.status_sentence)}</p>'
            f'<p class="meta">Run file <code>{esc(r.path)}</code>; report generated {esc(made)} by '
            f'{esc(r.generator)}.</p>')


def _status_severity(status: str) -> str:
    return {"finished": "ok", "stopped": "info", "running": "info"}.get(status, "problem")


def findings_blocks(r: Report) -> list[Block]:
    titles = {s.plugin: s.title for s in r.sections}
    titles[CORE] = "Training"
    counts = {sev: sum(f.severity == sev for f in r.findings) for sev in ("problem", "warning", "info", "ok")}
    summary = ", ".join(f"{n} {sev}" for sev, n in counts.items() if n)
    head = ('<tr><th width="11%">severity</th><th width="15%">analysis</th><th width="52%">finding</th>'
            '<th width="9%" class="num">step</th><th width="13%" class="num">value</th></tr>')
    rows = [f'<tr><td>{badge(f.severity)}</td><td>{esc(titles.get(f.plugin, f.plugin))}</td>'
            f'<td>{esc(f.message)}</td><td class="num">{fmt_number(f.step)}</td>'
            f'<td class="num">{esc(fmt_number(f.value, f.unit))}</td></tr>' for f in r.findings]
    return [heading(2, "findings", "Findings"),
            Html(f'<p>{esc(summary)} — from the run\'s status and every analysis, most severe first.</p>',
                 keep_with_next=True),
            Table(head, rows, "findings")]


def config_blocks(r: Report) -> list[Block]:
    env = r.environment
    env_rows = [_pair_row(label, fmt_number(env[key]) if isinstance(env[key], (int, float)) else env[key])
                for key, label in ENVIRONMENT_KEYS if env.get(key) not in (None, "")]
    conf_rows = [_pair_row(key, fmt_setting(value)) for key, value in flatten(r.config)]
    head = '<tr><th width="35%">{}</th><th width="65%">value</th></tr>'
    return [heading(2, "configuration", "Configuration and environment"),
            heading(3, "environment", "Environment"), Table(head.format("item"), env_rows, "pairs"),
            heading(3, "config", "Configuration"), Table(head.format("key"), conf_rows, "pairs")]


def _pair_row(key, value) -> str:
    return f'<tr><td>{esc(key)}</td><td><code>{esc(value)}</code></td></tr>'


def smoothing_sentence(weight: float) -> str:
    if weight <= 0:
        return "Curves are drawn unsmoothed."
    return (f"Curves are smoothed with TensorBoard's debiased exponential moving average, weight "
            f"{weight:g}; the raw values are drawn faintly beneath.")


def section_blocks(s: Section, anchor: str, plot_note: str) -> list[Block]:
    out: list[Block] = [heading(2, anchor, s.title)]
    intro = f"<p>{esc(s.description)}</p>" if s.description else ""
    if s.findings:
        intro += "<ul>" + "".join(f"<li>{badge(f.severity)} {esc(f.message)}</li>" for f in s.findings) + "</ul>"
    if s.text:
        intro += "".join(f'<p class="plugin-text">{esc(p).replace(chr(10), "<br>")}</p>'
                         for p in s.text.split("\n\n") if p.strip())
    if intro:
        out.append(Html(intro))
    if s.numbers:
        out += [Html(f'<h3 id="{esc(anchor)}-numbers">Key numbers</h3>', keep_with_next=True),
                numbers_table(s.numbers)]
    out.append(Html(f'<h3 id="{esc(anchor)}-plots">Plots</h3><p class="note">{esc(plot_note)} '
                    f'Views that show one recorded row show the latest one.</p>', keep_with_next=True))
    for p in s.plots:
        out += table_view_blocks(p) if p.view["kind"] == "table" else [Figure(p, caption(p))]
    return out


def numbers_table(numbers: list[Number]) -> Table:
    head = ('<tr><th width="34%">series</th><th width="22%" class="num">latest (step)</th>'
            '<th width="22%" class="num">lowest (step)</th><th width="22%" class="num">highest (step)</th></tr>')
    rows = []
    for n in numbers:
        desc = f'<br><span class="desc">{esc(n.description)}</span>' if n.description else ""
        cells = "".join(f'<td class="num">{esc(fmt_number(v, n.unit, n.infinite))} ({s})</td>' if s >= 0
                        else '<td class="num">—</td>'
                        for v, s in ((n.last, n.last_step), (n.min, n.min_step), (n.max, n.max_step)))
        rows.append(f"<tr><td><code>{esc(n.series)}</code>{desc}</td>{cells}</tr>")
    return Table(head, rows, "numbers")


def caption(p: Plot) -> str:
    view = p.view
    text = esc(view.get("help", ""))
    series = ", ".join(f"<code>{esc(n)}</code>" for n in view["series"])
    return f'<b>{esc(view["title"])}.</b> {text} <span class="desc">Series: {series}.</span>'


def table_view_blocks(p: Plot) -> list[Block]:
    """A table view as a real table (selectable, searchable) rather than a picture of one."""
    t = p.table
    if t is None or not t["columns"]:
        return [Html(f'<p class="caption">{caption(p)} No rows recorded.</p>')]
    if not t["rows"]:  # as the window says it
        return [Html(f'<p class="caption">{caption(p)} Latest row, step {t["step"]}: '
                     f'{esc(NONE_FOUND)}.</p>')]
    out: list[Block] = [Html(f'<p class="caption">{caption(p)} Latest row, step {t["step"]}.</p>',
                             keep_with_next=True)]
    width = 100 // len(t["columns"])
    head = "<tr>" + "".join(f'<th width="{width}%">{esc(c)}</th>' for c in t["columns"]) + "</tr>"
    rows = ["<tr>" + "".join(f"<td>{esc(fmt_number(v) if isinstance(v, float) else v)}</td>"
                             for v in row[:len(t["columns"])]) + "</tr>" for row in t["rows"]]
    out.append(Table(head, rows, "view-table"))
    if t["omitted"]:
        out.append(Html(f'<p class="note">{t["omitted"]} more rows are left out here; the run file has '
                        f'them all.</p>'))
    return out


def spikes_blocks(r: Report) -> list[Block]:
    """Each loss spike explained: its summary sentence and its evidence, as the Explain panel shows
    them (items that stand out in bold), each item with its number and the step it was measured at."""
    spikes = r.spikes
    if not spikes.total:
        return [heading(2, "spikes", "Spikes"), Html(f"<p>{esc(spikes.none)}</p>")]
    many = "spike" if spikes.total == 1 else "spikes"
    intro = (f"The training loss had {spikes.total} {many}. Each is explained by what every analysis of the run "
             f"measured at or near its step, strongest first, as <code>traindx explain</code> and the window's "
             f"Explain panel give it.")
    if spikes.left_out:
        steps = ", ".join(f"{s:,}" for s in spikes.left_out)
        intro += (f" The {len(spikes.explained)} largest are shown, in step order; {len(spikes.left_out)} smaller "
                  f"ones are left out here (steps {steps}).")
    out: list[Block] = [heading(2, "spikes", "Spikes"), Html(f"<p>{intro}</p>")]
    titles = {s.plugin: s.title for s in r.sections}
    for spike in spikes.explained:
        out += spike_blocks(spike, titles)
    return out


def spike_blocks(spike: Spike, titles: dict[str, str]) -> list[Block]:
    head = ('<tr><th width="18%">analysis</th><th width="56%">what</th><th width="14%" class="num">value</th>'
            '<th width="12%" class="num">measured at step</th></tr>')
    rows = []
    for e in spike.evidence:
        text = f"<b>{esc(e.text)}</b>" if e.weight >= STANDS_OUT else esc(e.text)
        rows.append(f'<tr><td>{esc(titles.get(e.plugin, e.plugin))}</td><td>{text}</td>'
                    f'<td class="num">{esc(fmt_number(e.value, e.unit))}</td><td class="num">{e.step:,}</td></tr>')
    return [heading(3, f"spike-{spike.step}", f"Step {spike.step:,} (×{spike.ratio:.1f})"),
            Html(f"<p>{esc(spike.summary)}</p>", keep_with_next=True), Table(head, rows, "evidence")]


def events_blocks(r: Report) -> list[Block]:
    head = ('<tr><th width="9%" class="num">step</th><th width="20%">time (UTC)</th><th width="13%">kind</th>'
            '<th width="58%">message</th></tr>')
    rows = [f'<tr><td class="num">{e["step"]}</td><td>{esc(_clock(e["time"]))}</td><td>{esc(e["kind"])}</td>'
            f'<td>{esc(e["message"])}</td></tr>' for e in r.events]
    note = (f'<p class="note">{r.events_omitted} events in the middle of the log are left out here; '
            f'the run file has them all.</p>' if r.events_omitted else "")
    return [heading(2, "events", "Events"), Html(f"<p>{len(r.events) + r.events_omitted} events.</p>{note}",
                                                 keep_with_next=True), Table(head, rows, "events")]


def _clock(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


# ---------------------------------------------------------------------------------------------
# One page
# ---------------------------------------------------------------------------------------------
def table_html(t: Table) -> str:
    return (f'<table class="{esc(t.css_class)}" width="100%" cellspacing="0" cellpadding="3"><thead>{t.head}</thead>'
            f'<tbody>{"".join(t.rows)}</tbody></table>')


def figure_html(f: Figure, src: str) -> str:
    alt = esc(f.plot.view["title"])
    return f'<figure><img src="{src}" alt="{alt}"><figcaption>{f.caption}</figcaption></figure>'


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def page(report: Report, parts: list[Block], image_for: Callable[[Figure], bytes]) -> str:
    """One self-contained HTML document: inline CSS, PNG plots as data URIs, no external resource."""
    css = (ASSETS / "report.css").read_text(encoding="utf-8")
    body = []
    for b in parts:
        if isinstance(b, Html):
            body.append(b.html)
        elif isinstance(b, Table):
            body.append(table_html(b))
        else:
            body.append(figure_html(b, data_uri(image_for(b))))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"generator\" content=\"{esc(report.generator)}\">"
            f"<title>TrainDx report: {esc(report.name)}</title><style>{css}</style></head>"
            f"<body><main>{''.join(body)}</main></body></html>\n")
