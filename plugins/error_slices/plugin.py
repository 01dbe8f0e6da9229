"""Error slices at every evaluation: where, coherently, the model fails on the validation split, in
words, from the logits, embeddings and metadata the engine already computed (no forward pass of
its own). The search runs in a child process (``worker``) while training goes on; its results are
logged at their evaluation's step, in order. Slices keep their identity across evaluations (by
member overlap), so their error can be followed over training; findings read the run file, so any
run can be judged again."""
from __future__ import annotations

import math
import string

import numpy as np
import torch

from engine.plugin import EvalContext, Evidence, Finding, Plugin, RunContext, Series, Setting, View

from . import analysis, attributes
from .analysis import percent, stated_percent
from .tracking import ErrorChange, SliceTracker, error_change
from .worker import SearchWorker

PREFIX = "error_slices/"
SCATTER_POINTS = 300  # samples drawn in the embedding scatter: the PDF report draws each point as vectors
# (some 20 kB of PDF a point), so more would swell it
THUMB_SLICES, THUMB_MEMBERS = 5, 6  # thumbnails: the top 5 slices, 6 members each: one slice per row of the mosaic
SEARCH_SETTINGS = ("alpha", "min_support", "min_size", "max_predicates", "n_pca", "n_components",
                   "confusion_weight", "max_slices")
TABLE_COLUMNS = ["#", "slice", "samples", "error", "95 % CI", "rest", "lift", "p", "found in", "line"]
LIFT_PROBLEM = 3.0  # a slice failing this many times the overall rate, and at least half the time, is a problem


class ErrorSlicesPlugin(Plugin):
    """Where, coherently, does the model fail, and how would one describe that subset?"""

    name = "error_slices"
    title = "Error slices"
    description = ("Coherent subsets of the validation split where the model fails: regions of the "
                   "embedding (an error-aware mixture, tested on held-out samples) and conjunctions of "
                   "metadata values, each significant after Holm's correction over every candidate.")
    settings = (
        Setting("alpha", 0.01, "chance of reporting any slice where there is none (Holm's correction over "
                "every candidate examined)", min=1e-9, max=0.5),
        Setting("min_support", 0.005, "smallest slice, as a share of the validation split", min=0.0, max=0.5),
        Setting("min_size", 10, "smallest slice, in samples", min=2),
        Setting("max_predicates", 3, "metadata predicates a slice combines at most", min=1, max=3),
        Setting("n_pca", 16, "principal components of the embeddings the mixture is fitted on", min=2, max=512),
        Setting("n_components", 24, "mixture components at most", min=1, max=256),
        Setting("confusion_weight", 1.0, "weight of labels and predictions against the embedding in the mixture",
                min=0.0),
        Setting("max_slices", 10, "slices reported per evaluation at most", min=1, max=100),
        Setting("lines", 4, "slices followed over training as lines", min=1, max=len(string.ascii_uppercase)),
    )
    default_on = "eval"

    def __init__(self, settings, every, on):
        super().__init__(settings, every, on)
        self.tracker = SliceTracker(self.settings["lines"])
        self.image_shape: tuple[int, int] | None = None
        self.metadata_columns: list[str] = []
        self.encoded: tuple[dict, attributes.Predicates, attributes.Predicates | None] | None = None

    # -- declarations -------------------------------------------------------------------------
    def series(self, run: RunContext) -> list[Series]:
        lines = self.settings["lines"]
        self.n_points = min(run.val_size, SCATTER_POINTS)
        self.image_shape = _image_shape(run.input_shape)
        self.metadata_columns = list(run.val_metadata)
        out = [
            Series("slices", dtype="json", description="the significant slices, best first: {slices: [{ids, "
                   "description, error_rate, size, p_value, track, ...}], tracked: [{track, error_rate, size}], "
                   "examined, error_rate}; ids are validation sample ids"),
            Series("table", dtype="json", description="the slices as a table"),
            Series("accuracy", (lines + 1,), unit="", description="accuracy on the members of each followed "
                   "slice (lines A, B, ...; NaN until a slice holds the line) and on the rest of the split (last)"),
            Series("n_slices", description="significant slices at the evaluation"),
            Series("worst_error", unit="", description="error rate of the top slice (NaN when there is none)"),
            Series("worst_lift", unit="×", description="the top slice's error rate over the overall error rate"),
            Series("scatter", (self.n_points, 3), "float32", description="first two principal axes of the "
                   "embedding and each sample's slice (0: none; higher: a better-ranked slice), for slice "
                   "members (up to half the points) and a fixed random subset of the rest"),
        ]
        if self.metadata_columns:
            out.append(Series("metadata", dtype="json", description="error rate by metadata value"))
        if self.image_shape:
            out.append(Series("thumbnails", (THUMB_SLICES * THUMB_MEMBERS, *self.image_shape), "float32",
                              description="the most representative members of the top slices, one slice per row"))
        return out

    def views(self) -> list[View]:
        letters = string.ascii_uppercase[:self.settings["lines"]]
        out = [
            View("table", "Error slices", _full("table"),
                 help="Subsets of the validation split where the model fails more than elsewhere, worst first; "
                      "each significant after correcting for every candidate examined."),
            View("line", "Slice vs rest accuracy", _full("accuracy"),
                 help="Accuracy on each followed slice's members over training, against the rest of the split: "
                      "a slice the model never learns stays low while the rest rises.",
                 options={"labels": [f"slice {c}" for c in letters] + ["rest"], "y_label": "accuracy"}),
            View("scatter", "Embedding by slice", _full("scatter"),
                 help="Validation samples on the embedding's first two principal axes, coloured by slice "
                      "(the darkest: in no slice; the brightest: the worst slice)."),
        ]
        if self.metadata_columns:
            out.append(View("table", "Error by metadata value", _full("metadata"),
                            help="The error rate for each value of each metadata column, worst first."))
        if self.image_shape:
            out.append(View("image_grid", "Slice members", _full("thumbnails"),
                            help="One row per slice, best first: the members nearest the centre of its errors.",
                            options={"captions": [f"#{i // THUMB_MEMBERS + 1}" if i % THUMB_MEMBERS == 0 else ""
                                                  for i in range(THUMB_SLICES * THUMB_MEMBERS)]}))
        return out

    # -- hooks ----------------------------------------------------------------------------------
    def setup(self, run: RunContext) -> None:
        self.seed = int(run.config.sections["run"]["seed"])
        self.order = np.random.default_rng(self.seed).permutation(run.val_size)  # background points
        self.images = _grey_images(run.val_inputs) if self.image_shape and run.val_inputs is not None else None
        self.worker = SearchWorker()

    def on_eval(self, ctx: EvalContext) -> None:
        """Hands the search to the worker and records what it has found since: training goes on
        while it searches, and each evaluation's rows are logged, in order, at that evaluation's step."""
        if not np.isfinite(ctx.logits.numpy()).all():  # CPU tensors: a view, checked at numpy's cost
            ctx.event("error_slices_skipped", f"step {ctx.step}: non-finite validation logits")
            return
        probs = torch.softmax(ctx.logits.double(), dim=1).numpy()
        labels = ctx.labels.numpy()
        errors = probs.argmax(axis=1) != labels
        predicates, values = self._encode(ctx.metadata, len(labels))
        self.worker.collect()
        settings = {k: self.settings[k] for k in SEARCH_SETTINGS}
        self.worker.submit(lambda found: self._record(ctx.step, ctx.ids, ctx.log, errors, values, found),
                           ctx.embeddings.numpy(), labels, probs, predicates, ids=ctx.ids,
                           class_names=ctx.class_names, seed=self.seed, **settings)

    def close(self) -> None:
        """Record the searches still running, then end the worker."""
        try:
            self.worker.collect(wait=True)
        finally:
            self.worker.close()

    def _record(self, step: int, ids: np.ndarray, log, errors: np.ndarray, values,
                found: analysis.SliceSearch) -> None:
        """One evaluation's slices, followed and logged at its step."""
        numbers = self.tracker.update(step, [s.ids for s in found.slices], [s.description for s in found.slices])
        lines = [self._line(n) for n in numbers]
        rows = self.tracker.rows(ids)
        tracked = self.tracker.errors(ids, errors, rows)
        log("slices", {
            "slices": [{**s.to_dict(), "track": n, "line": line} for s, n, line in zip(found.slices, numbers, lines)],
            "tracked": [{"track": t.number, "description": t.description, "error_rate": _or_none(tracked[t.number][0]),
                         "size": tracked[t.number][1]} for t in self.tracker.tracks],
            "examined": found.examined, "error_rate": float(errors.mean())})
        log("table", {"columns": TABLE_COLUMNS,
                      "rows": [_table_row(i + 1, s, line) for i, (s, line) in enumerate(zip(found.slices, lines))]})
        log("accuracy", self._accuracy(rows, errors))
        top = found.slices[0] if found.slices else None
        log("n_slices", len(found.slices))
        log("worst_error", top.error_rate if top else math.nan)
        log("worst_lift", top.lift if top else math.nan)
        log("scatter", _scatter(found, self.order, self.n_points))
        if self.metadata_columns:
            log("metadata", {"columns": ["value", "samples", "error", "lift"],
                             "rows": [[v, n, percent(e), _times(e, errors.mean())]
                                      for v, n, e in analysis.errors_by_value(values, errors)]})
        if self.images is not None:
            log("thumbnails", self._thumbnails(found.slices))

    def _encode(self, metadata: dict, n: int) -> tuple[attributes.Predicates, attributes.Predicates | None]:
        """The validation metadata encoded for the search and for the table of every value: once for
        the run, as the engine gives the same columns at every evaluation."""
        if self.encoded is None or self.encoded[0] is not metadata:
            min_count = analysis.smallest_slice(n, self.settings["min_size"], self.settings["min_support"])
            self.encoded = (metadata, attributes.encode(metadata, n, min_count),
                            attributes.encode(metadata, n, 1) if metadata else None)
        return self.encoded[1:]

    def _line(self, number: int) -> str | None:
        return string.ascii_uppercase[self.tracker.slots.index(number)] if number in self.tracker.slots else None

    def _accuracy(self, rows: dict[int, np.ndarray], errors: np.ndarray) -> np.ndarray:
        """Accuracy on each line's slice (its members' ``rows``) and on the rest."""
        out = np.full(len(self.tracker.slots) + 1, np.nan)
        in_slot = np.zeros(len(errors), bool)
        for k, number in enumerate(self.tracker.slots):
            if number in rows and len(rows[number]):
                in_slot[rows[number]] = True
                out[k] = 1 - errors[rows[number]].mean()
        out[-1] = 1 - errors[~in_slot].mean() if (~in_slot).any() else np.nan
        return out

    def _thumbnails(self, slices: list[analysis.Slice]) -> np.ndarray:
        out = np.full((THUMB_SLICES * THUMB_MEMBERS, *self.image_shape), np.nan, np.float32)
        for k, s in enumerate(slices[:THUMB_SLICES]):
            row_of = dict(zip(s.ids.tolist(), s.rows.tolist()))
            rows = [row_of[i] for i in s.representatives[:THUMB_MEMBERS].tolist()]
            out[k * THUMB_MEMBERS:k * THUMB_MEMBERS + len(rows)] = self.images[rows]
        return out

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The tracked slices (numbers, members, line slots): a resumed run keeps their identities.
        The searches still running are recorded first, so the state is that of every evaluation so far."""
        self.worker.collect(wait=True)
        return self.tracker.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.tracker.load_state_dict(state)

    # -- reading back ---------------------------------------------------------------------------
    @classmethod
    def findings(cls, run) -> list[Finding]:
        if PREFIX + "slices" not in run.names() or not run.length(PREFIX + "slices"):
            return []
        steps, rows = run.series(PREFIX + "slices")
        step, last = int(steps[-1]), rows[-1]
        out = [_worst_finding(step, last)]
        change = _change_finding(steps, rows)
        if change is not None:
            out.append(change)
        return out

    @classmethod
    def explain(cls, run, step: int) -> list[Evidence]:
        from .explain import evidence_at  # reads this module's helpers
        return evidence_at(run, step)


def _full(*names: str) -> tuple[str, ...]:
    return tuple(PREFIX + n for n in names)


def _or_none(x: float) -> float | None:
    """JSON has no NaN."""
    return None if not math.isfinite(x) else x


def _times(rate: float, overall: float) -> str:
    return f"{rate / overall:.1f}×" if overall > 0 else "—"


def _image_shape(input_shape: tuple) -> tuple[int, int] | None:
    """(H, W) where inputs are images (channels × H × W with at most 4 channels, or H × W)."""
    shape = tuple(input_shape)
    if len(shape) == 3 and shape[0] <= 4 and min(shape[1:]) >= 4:
        return shape[1], shape[2]
    if len(shape) == 2 and min(shape) >= 4:
        return shape
    return None


def _grey_images(inputs: torch.Tensor) -> np.ndarray:
    """The validation inputs as grey (N, H, W) images (channels averaged), once per run."""
    x = inputs.detach().float().cpu().numpy()
    return x.mean(axis=1) if x.ndim == 4 else x


def _scatter(found: analysis.SliceSearch, order: np.ndarray, n_points: int) -> np.ndarray:
    """(x, y, colour) of ``n_points`` samples: slice members first (up to half the points, best
    slices first), the rest in the fixed random ``order``; members drawn last, so on top."""
    colour = np.zeros(len(found.coords))
    shown = order[:n_points]
    if found.slices:
        for rank, s in reversed(list(enumerate(found.slices))):  # the best-ranked slice colours last
            colour[s.rows] = len(found.slices) - rank
        members = np.concatenate([s.rows for s in found.slices])
        members = members[np.sort(np.unique(members, return_index=True)[1])][:n_points // 2]
        shown_already = np.zeros(len(colour), bool)
        shown_already[members] = True
        rest = order[~shown_already[order]][:n_points - len(members)]
        shown = np.concatenate([members, rest])
        shown = shown[np.argsort(colour[shown], kind="stable")]
    out = np.empty((len(shown), 3), np.float32)
    out[:, :2], out[:, 2] = found.coords[shown], colour[shown]
    return out


def _p_text(p: float) -> str:
    return "< 1e-300" if p == 0 else f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def _table_row(rank: int, s: analysis.Slice, line: str | None) -> list:
    return [rank, s.description, s.size, percent(s.error_rate), f"{percent(s.ci[0])} – {percent(s.ci[1])}",
            percent(s.rest_error_rate), f"{s.lift:.1f}×", _p_text(s.p_value), s.source, line or ""]


def _worst_finding(step: int, row: dict) -> Finding:
    """The worst slice at the latest evaluation, in words; or that there is none."""
    if not row["slices"]:
        return Finding("error_slices", "ok", f"No error slice is significant at step {step} (0 slices among "
                       f"{row['examined']} candidates, Holm-corrected): the model fails no coherent subset of the "
                       "validation split more than the rest.", step=step, value=0, unit="slices")
    s = row["slices"][0]
    bad = s["error_rate"] >= 0.5 and s["lift"] >= LIFT_PROBLEM
    more = len(row["slices"]) - 1
    others = f" {more} more slice{'s' if more > 1 else ''} also fail{'' if more > 1 else 's'}." if more else ""
    message = (f"At step {step} the worst error slice is “{s['description']}”: {percent(s['error_rate'])} "
               f"error on {s['size']} validation samples, against {percent(s['rest_error_rate'])} on the rest "
               f"and {percent(s['overall_error_rate'])} overall (p {_p_text(s['p_value'])}).{others}")
    return Finding("error_slices", "problem" if bad else "warning", message, step=step,
                   value=stated_percent(s["error_rate"]), unit="%")


def tracked_errors(row: dict) -> dict[int, float]:
    """Track number → error rate of every slice followed at one evaluation (a row of ``slices``)."""
    return {t["track"]: t["error_rate"] for t in row["tracked"] if t["error_rate"] is not None}


def changes_at(run, step: int) -> tuple[int, list[ErrorChange]]:
    """(the evaluation nearest ``step``, how each tracked slice's error changed there since the
    evaluation before it, largest change first): which slices a step changed most."""
    steps, rows = run.series(PREFIX + "slices")
    if not len(steps):
        return step, []
    i = int(np.argmin(np.abs(np.asarray(steps) - step)))
    return int(steps[i]), error_change(tracked_errors(rows[i - 1]), tracked_errors(rows[i])) if i else []


def _change_finding(steps, rows) -> Finding | None:
    """The followed slice whose error changed most since it was first found."""
    first: dict[int, tuple[int, float]] = {}
    for step, row in zip(steps, rows):
        for track, rate in tracked_errors(row).items():
            first.setdefault(track, (int(step), rate))
    latest = tracked_errors(rows[-1])
    changes = error_change({k: v[1] for k, v in first.items()}, latest)
    changes = [c for c in changes if first[c.track][0] < int(steps[-1])]
    if not changes:
        return None
    c = changes[0]
    name = next(t["description"] for t in rows[-1]["tracked"] if t["track"] == c.track)
    went = "rose" if c.change > 0 else "fell" if c.change < 0 else "stayed"
    points = round(100 * c.change)
    message = (f"The error of slice “{name}” {went} from {percent(c.before)} at step {first[c.track][0]} "
               f"to {percent(c.after)} at step {int(steps[-1])} ({points:+d} points), on the same "
               "validation samples.")
    return Finding("error_slices", "info", message, step=first[c.track][0], value=points, unit="points")
