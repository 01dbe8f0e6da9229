"""The Explain panel: what every analysis of a run knows about one step (``engine.explain``, the same
content as ``traindx explain`` and the report's Spikes section), each item a link that moves the
step cursor to where it was measured and scrolls to its plot.

The explanation reads the run file, so it is computed by a task; a live run's explanation is
computed again whenever the window refreshes the run's findings (new measurements may have come).
"""
from __future__ import annotations

import html
from pathlib import Path

from PySide6 import QtCore, QtWidgets

from ..report_model import CORE_TITLE

HINT = ("Click a spike marker (▼) on the Loss plot, right-click a step in any plot, double-click a finding "
        "or an event, or press Ctrl+I to explain the cursor step.")
SPIKES = "train/loss_spike"  # a spike link shows the plot that marks the spikes


def explain_task(state, path: str, step: int | None) -> dict:
    """The explanation of ``step`` in the run file (a task): ``Explanation.to_dict()`` with the
    analyses' titles."""
    from engine.explain import explain
    from engine.store import open_run
    with open_run(path) as run:
        result = explain(run, step).to_dict()
        result["titles"] = run.plugin_titles()
    return result


class ExplainPanel(QtWidgets.QWidget):
    """One step of one run explained: the summary sentence, the ranked evidence, the run's spikes."""

    go_to = QtCore.Signal(int, str)  # step, series: pin the cursor there and show the series' plot
    explain = QtCore.Signal(str, int)  # run path, step: another step of the shown run asked for

    def __init__(self, parent=None):
        super().__init__(parent)
        self.path: str | None = None
        self.label = ""
        self.step: int | None = None  # the step asked for (None: the run's first spike)
        self.result: dict | None = None
        self.request = 0  # the latest explanation asked for: results of older requests are dropped
        self.shown_request = 0  # the request whose explanation is on show
        self.heading = QtWidgets.QLabel("<b>Explain a step</b>")
        self.heading.setTextFormat(QtCore.Qt.TextFormat.RichText)
        self.prev_button = QtWidgets.QToolButton(text="◀ spike")
        self.prev_button.setToolTip("Explain the loss spike before this step")
        self.prev_button.clicked.connect(lambda: self._neighbour_spike(-1))
        self.next_button = QtWidgets.QToolButton(text="spike ▶")
        self.next_button.setToolTip("Explain the loss spike after this step")
        self.next_button.clicked.connect(lambda: self._neighbour_spike(+1))
        head = QtWidgets.QHBoxLayout()
        head.setContentsMargins(2, 2, 2, 2)
        head.addWidget(self.heading, 1)
        head.addWidget(self.prev_button)
        head.addWidget(self.next_button)
        self.body = QtWidgets.QTextBrowser()
        self.body.setOpenLinks(False)
        self.body.anchorClicked.connect(self._on_link)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(head)
        lay.addWidget(self.body, 1)
        self._show_text(HINT)
        self._update_buttons()

    # -- what is shown --------------------------------------------------------------------------
    def begin(self, path: str | Path, label: str, step: int | None, quiet: bool = False) -> int:
        """A new explanation is being computed for ``step`` of the run at ``path`` (``quiet``: the
        shown one again, with what the run measured since); returns the request's number."""
        self.request += 1
        self.path, self.label, self.step = str(path), label, step
        if not quiet:
            self.heading.setText(f"<b>{_esc(label)}</b> — explaining " + (f"step {step:,}…" if step is not None
                                                                           else "its first loss spike…"))
            if self.result is None or self.result.get("path") != self.path:
                self._show_text("Reading the run file…")
        return self.request

    def show_result(self, request: int, result: dict) -> None:
        """Show an explanation, unless a newer one was asked for meanwhile."""
        if request != self.request:
            return
        result["path"] = self.path
        self.result, self.shown_request = result, request
        spike = result["spike"]
        what = f"loss spike at step {result['step']:,} (×{spike['ratio']:.2f})" if spike else f"step {result['step']:,}"
        self.heading.setText(f"<b>{_esc(self.label)}</b> — {what}")
        self.body.setHtml(explanation_html(result))
        self._update_buttons()

    def show_error(self, request: int, exc: Exception) -> None:
        if request == self.request:
            self.result = None
            self._show_text(f"The step could not be explained: {exc}")
            self._update_buttons()

    def forget(self, path: str) -> None:
        """The run was closed: nothing of it stays on show."""
        if path == self.path:
            self.path, self.result, self.step = None, None, None
            self.heading.setText("<b>Explain a step</b>")
            self._show_text(HINT)
            self._update_buttons()

    def _show_text(self, text: str) -> None:
        self.body.setHtml(f"<p style='color: gray'>{_esc(text)}</p>")

    # -- links ----------------------------------------------------------------------------------
    def _on_link(self, url: QtCore.QUrl) -> None:
        kind, _, rest = url.toString().partition(":")
        if kind == "item" and self.result is not None:
            item = self.result["evidence"][int(rest)]
            self.go_to.emit(int(item["step"]), item["series"])
        elif kind == "spike" and self.path is not None:
            self._explain_spike(int(rest))

    def _explain_spike(self, step: int) -> None:
        self.go_to.emit(step, SPIKES)
        self.explain.emit(self.path, step)

    def _spikes_beside(self, direction: int) -> list[int]:
        """The run's spike steps before (-1) or after (+1) the step on show; none when nothing is."""
        if self.result is None:
            return []
        here = self.result["step"]
        return [s["step"] for s in self.result["spikes"] if (s["step"] - here) * direction > 0]

    def _neighbour_spike(self, direction: int) -> None:
        around = self._spikes_beside(direction)
        if around:
            self._explain_spike(min(around, key=lambda s: abs(s - self.result["step"])))

    def _update_buttons(self) -> None:
        self.prev_button.setEnabled(bool(self._spikes_beside(-1)))
        self.next_button.setEnabled(bool(self._spikes_beside(+1)))


def explanation_html(result: dict) -> str:
    """The panel's body: the summary, then each item (standing out: bold) with a link to its step,
    then the run's spikes as links."""
    from engine.explain import STANDS_OUT
    titles = result.get("titles", {})
    items = []
    for i, e in enumerate(result["evidence"]):
        value = "" if e["value"] is None else f" <span style='color: gray'>[{e['value']:.4g}" \
                                               f"{' ' + _esc(e['unit']) if e['unit'] else ''}]</span>"
        text = f"<b>{_esc(e['text'])}</b>" if e["weight"] >= STANDS_OUT else _esc(e["text"])
        title = CORE_TITLE if e["plugin"] == "core" else titles.get(e["plugin"], e["plugin"])
        items.append(f"<p style='margin: 8px 0 0 0'><a href='item:{i}'>{_esc(title)} · step {e['step']:,}</a><br>"
                     f"{text}{value}</p>")
    spikes = result["spikes"]
    if spikes:
        links = ", ".join(f"<a href='spike:{s['step']}'>{s['step']:,}</a> (×{s['ratio']:.2f})" for s in spikes)
        tail = f"<p>Loss spikes in this run ({len(spikes)}): {links}.</p>"
    else:
        tail = "<p>The run has no loss spikes.</p>"
    return (f"<p style='font-size: 10.5pt'>{_esc(result['summary'])}</p>"
            f"{''.join(items)}{tail}"
            "<p style='color: gray'>Each link moves the step cursor to where the item was "
            "measured and scrolls to its plot.</p>")


def _esc(text) -> str:
    return html.escape(str(text), quote=True)
