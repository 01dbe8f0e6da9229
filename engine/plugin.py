"""The plugin contract: what an analysis declares, what it receives, and the host that calls it.

A plugin is a class registered under the ``traindx.plugins`` entry-point group. The engine makes one
instance per run with its validated settings, asks it for its series (declared before the run file
switches to SWMR, so readers can follow it live) and its views (stored in the run file, so the GUI
and the report draw them without importing the plugin), then calls its hooks at the cadence the
config gives. Everything a hook receives was computed once by the engine for all plugins.
"""
from __future__ import annotations

import json
import sys
import traceback
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

from .config import Field
from .errors import ConfigError, suggest

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

ENTRY_POINT_GROUP = "traindx.plugins"
SEVERITIES = ("ok", "info", "warning", "problem")
VIEW_KINDS = {
    "line": "each series over steps; a k-column series draws k lines (options: labels, log_y, y_label)",
    "band": "a (low, middle, high) row over steps: the middle as a line, low-high as a band",
    "heatmap": "a (K,) row over steps as an image, steps on x (options: y_labels)",
    "histogram": "the row at the cursor step (default: latest) as bars (options: edges)",
    "curve": "the row at the cursor step as y against options['x'] (options: x_label)",
    "reliability": "reliability-bin rows (lower, upper, confidence, accuracy, count, ci_low, ci_high)",
    "scatter": "the (N, 2) or (N, 3) row at the cursor step; a third column colours the points",
    "table": "the JSON row at the cursor step: {'columns': [...], 'rows': [[...], ...]}",
    "image_grid": "the (H, W) or (N, H, W) row at the cursor step as images (options: captions)",
}
RESERVED_KEYS = ("enabled", "every", "on")


class Setting(Field):
    """One plugin setting: a config field with a name; its type is the type of its default."""

    def __init__(self, name: str, default: Any, help: str, min: float | None = None,
                 max: float | None = None, choices: tuple | None = None):
        item_kind = type(default[0]) if isinstance(default, list) and default else None
        super().__init__(default, type(default), help, min, max, choices, item_kind=item_kind)
        object.__setattr__(self, "name", name)


@dataclass(frozen=True)
class Series:
    """A step-indexed series a plugin writes; ``name`` is relative to the plugin."""

    name: str
    shape: tuple = ()
    dtype: str = "float64"  # numpy dtype name, or "json" for one JSON document per row
    unit: str = ""
    description: str = ""
    columns: tuple[str, ...] = ()  # names of a (K,) row's entries (e.g. layers), kept in /data/columns


@dataclass(frozen=True)
class View:
    """A plot declared as data; ``series`` holds full names such as ``"sharpness/lambda_max"``."""

    kind: str
    title: str
    series: tuple[str, ...]
    help: str = ""
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in VIEW_KINDS:
            raise ValueError(f"view kind {self.kind!r} is not one of {sorted(VIEW_KINDS)}")

    def to_dict(self) -> dict:
        return {**asdict(self), "series": list(self.series)}

    @classmethod
    def from_dict(cls, d: dict) -> "View":
        return cls(d["kind"], d["title"], tuple(d["series"]), d.get("help", ""), d.get("options", {}))


@dataclass(frozen=True)
class Finding:
    """One sentence a plugin says about a run, with the number behind it."""

    plugin: str
    severity: str
    message: str
    step: int | None = None
    value: float | None = None
    unit: str = ""

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} is not one of {SEVERITIES}")


@dataclass(frozen=True)
class Evidence:
    """One thing a run knows about a step, for "explain this step": a sentence with its number,
    the step it was measured at (the nearest measurement, not always the step asked about), and how
    much it stands out (``weight``: 0 is context, 1 is decisive), which ranks it in the summary."""

    plugin: str
    text: str
    step: int
    value: float | None = None
    unit: str = ""
    weight: float = 0.0
    phrase: str = ""  # a short clause for the one-sentence summary, where it stands out
    series: str = ""  # the series it comes from: the GUI scrolls to its plot

    def __post_init__(self):
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"evidence weight {self.weight} is not in [0, 1]")


class Plugin:
    """Base class of every analysis. Subclasses set the class attributes and override hooks.

    Cadence: ``[plugins.NAME] every = N`` calls ``on_step`` every N optimizer steps; ``on = "eval"``
    calls ``on_eval`` at each evaluation. ``default_every`` / ``default_on`` give the default.
    ``on_step`` runs after the backward pass and before the optimizer step, so the model holds the
    weights the batch loss was computed at and ``ctx.grads`` are its gradients; ``on_update`` runs
    on the same steps right after the optimizer step, where the model holds the new weights.

    ``settings`` on the class declares the settings; on an instance it is the dict of their values.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str] = ""
    settings: ClassVar[tuple[Setting, ...]] = ()
    default_every: ClassVar[int | None] = None
    default_on: ClassVar[str | None] = None

    def __init__(self, settings: dict[str, Any], every: int | None, on: str | None):
        self.settings = settings
        self.every = every
        self.on = on

    # -- declarations -------------------------------------------------------------------------
    def series(self, run: "RunContext") -> list[Series]:
        return []

    def views(self) -> list[View]:
        return []

    # -- hooks ----------------------------------------------------------------------------------
    def setup(self, run: "RunContext") -> None:
        """Called once before the first step (probe sets are fixed here)."""

    def wants_step(self, step: int) -> bool:
        return self.every is not None and step % self.every == 0

    def wants_graph(self, step: int) -> bool:
        """True where ``on_step`` needs gradients that carry their graph (Hessian-vector products)."""
        return False

    def on_step(self, ctx: "StepContext") -> None:
        pass

    def on_update(self, ctx: "StepContext") -> None:
        """After the optimizer step of a step ``on_step`` ran at: what must hold for the next step
        (a frozen weight put back, whatever the optimizer's momentum did) is set here."""

    def on_eval(self, ctx: "EvalContext") -> None:
        pass

    def on_end(self, ctx: "EndContext") -> None:
        """Called once when training ends (finished or stopped), after the last step's hooks."""

    def close(self) -> None:
        """Called once when the run is over, however it ended (finished, stopped, diverged, failed),
        before the run file closes: what is still to log is logged, what ``setup`` started ends."""

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What the plugin carries from step to step, saved with each checkpoint so that a resumed
        run goes on as if it had never stopped. Tensors, numbers, strings and lists or dicts of
        them only: checkpoints load with ``weights_only=True``."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back ``state_dict()``'s result when a run resumes (after ``setup``)."""

    # -- reading back ---------------------------------------------------------------------------
    @classmethod
    def findings(cls, run) -> list[Finding]:
        """Findings from a run file (``engine.open_run``), so any run can be judged again."""
        return []

    @classmethod
    def explain(cls, run, step: int) -> list[Evidence]:
        """What this plugin's series say about ``step`` of a run file (its nearest measurements and
        how they changed), for ``traindx explain`` and the GUI's "Explain this step"."""
        return []


# ---------------------------------------------------------------------------------------------
# What hooks receive
# ---------------------------------------------------------------------------------------------
@dataclass
class Probe:
    """A fixed subset of the training data, the same at every call for the whole run."""

    inputs: "torch.Tensor"
    targets: "torch.Tensor"
    ids: np.ndarray

    def batches(self, batch_size: int) -> list[tuple["torch.Tensor", "torch.Tensor"]]:
        n = len(self.ids)
        return [(self.inputs[i:i + batch_size], self.targets[i:i + batch_size])
                for i in range(0, n, batch_size)]


@dataclass
class RunContext:
    """What stays fixed for the run: the model, the optimizer, the data's shape and the loss."""

    config: Any
    model: "torch.nn.Module"
    optimizer: "torch.optim.Optimizer"
    device: "torch.device"
    n_classes: int
    input_shape: tuple
    class_names: list[str]
    total_steps: int | None  # None: a user's own loop that did not say how long it trains
    per_sample_loss: Callable  # (outputs, targets) -> (B,) losses
    probe: Callable[[int], Probe]  # probe(n): the first n of a fixed random permutation of train
    train_size: int
    val_size: int
    val_metadata: dict[str, np.ndarray]
    val_inputs: "torch.Tensor | None" = None  # the validation inputs, in the order of EvalContext.ids

    def mean_loss(self, outputs, targets):
        return self.per_sample_loss(outputs, targets).mean()

    @property
    def params(self) -> list["torch.Tensor"]:
        return [p for p in self.model.parameters() if p.requires_grad]


class Unavailable(LookupError):
    """A hook asked for something its training loop does not give (a user's own loop may pass only
    the loss): the host says so once and skips that hook, instead of disabling the plugin for good
    (a set-up that cannot run does disable it)."""

    def __init__(self, name: str, what: str, hint: str):
        self.name, self.what, self.hint = name, what, hint
        super().__init__(f"{what} ({name}) not given by this training loop")


STEP_INPUTS = {"inputs": "the batch's inputs", "targets": "the batch's targets", "ids": "the batch's sample ids",
               "outputs": "the batch's outputs", "per_sample_loss": "the batch's per-sample losses"}


@dataclass
class StepContext:
    """One optimizer step, after backward and before the update. The batch fields are None where the
    loop did not give them; reading one then raises ``Unavailable`` (``has(name)`` asks first)."""

    run: RunContext
    step: int
    lr: float
    inputs: "torch.Tensor"
    targets: "torch.Tensor"
    ids: np.ndarray
    outputs: "torch.Tensor"
    per_sample_loss: "torch.Tensor"  # detached, shape (B,)
    loss: "torch.Tensor"  # the mean loss; carries its graph on steps where a plugin wants_graph
    grads: tuple["torch.Tensor", ...]  # one per run.params; with graph where wanted
    log: Callable[[str, Any], None]
    event: Callable[[str, str], None]

    def __getattribute__(self, name: str):
        value = object.__getattribute__(self, name)
        if value is None and name in STEP_INPUTS:
            raise Unavailable(name, STEP_INPUTS[name], f"pass dx.step(loss, {name}=...)")
        return value

    def has(self, name: str) -> bool:
        return object.__getattribute__(self, name) is not None

    @property
    def model(self):
        return self.run.model

    @property
    def optimizer(self):
        return self.run.optimizer


@dataclass
class EvalContext:
    """One evaluation of the validation split, computed once for all plugins (CPU tensors)."""

    run: RunContext
    step: int
    logits: "torch.Tensor"  # (N, C)
    labels: "torch.Tensor"  # (N,)
    per_sample_loss: "torch.Tensor"  # (N,)
    embeddings: "torch.Tensor"  # (N, D) penultimate-layer features
    ids: np.ndarray
    metadata: dict[str, np.ndarray]
    log: Callable[[str, Any], None]
    event: Callable[[str, str], None]

    @property
    def class_names(self) -> list[str]:
        return self.run.class_names


@dataclass
class EndContext:
    """The end of training: the last step reached, and where to log a closing measurement."""

    run: RunContext
    step: int
    log: Callable[[str, Any], None]
    event: Callable[[str, str], None]


# ---------------------------------------------------------------------------------------------
# Discovery and settings
# ---------------------------------------------------------------------------------------------
def discover() -> dict[str, Any]:
    """Installed plugins by name, as entry points (not yet imported)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_plugin_class(name: str) -> type[Plugin]:
    eps = discover()
    if name not in eps:
        raise ConfigError(f"plugins.{name}", name,
                          f"an installed plugin ({', '.join(sorted(eps)) or 'none installed'})"
                          + suggest(name, eps))
    cls = eps[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise TypeError(f"entry point {name!r} does not name a traindx Plugin subclass")
    return cls


def validate_plugin_table(name: str, table: dict) -> dict:
    """Check a ``[plugins.NAME]`` table against the plugin's declarations; returns it completed."""
    cls = load_plugin_class(name)
    known = {s.name: s for s in cls.settings}
    out = {"enabled": True, "every": None, "on": None}
    for key, value in table.items():
        full = f"plugins.{name}.{key}"
        if key in ("every", "on") and value is None:  # unset, as a validated table written to JSON says
            continue
        if key == "enabled":
            if not isinstance(value, bool):
                raise ConfigError(full, value, "true or false")
            out[key] = value
        elif key == "every":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(full, value, "an integer ≥ 1 (steps)")
            out[key] = value
        elif key == "on":
            if value != "eval":
                raise ConfigError(full, value, '"eval"')
            out[key] = value
        elif key in known:
            out[key] = known[key].validate(full, value)
        else:
            raise ConfigError(full, value, "one of " + ", ".join([*RESERVED_KEYS, *known])
                              + suggest(key, [*RESERVED_KEYS, *known]), unknown_key=True)
    if out["every"] is None and out["on"] is None:
        out["every"], out["on"] = cls.default_every, cls.default_on
    for s in cls.settings:
        out.setdefault(s.name, s.default)
    return out


def instantiate(name: str, table: dict) -> Plugin:
    cls = load_plugin_class(name)
    settings = {k: v for k, v in table.items() if k not in RESERVED_KEYS}
    return cls(settings, table.get("every"), table.get("on"))


# ---------------------------------------------------------------------------------------------
# The host
# ---------------------------------------------------------------------------------------------
class PluginHost:
    """Calls plugins at their hooks; a plugin that raises is disabled with an event, training goes on."""

    def __init__(self, plugins: list[Plugin], writer):
        self.plugins = plugins
        self.writer = writer
        self.declared: dict[str, Series] = {}
        self._skipped: set[tuple[str, str]] = set()

    def declare(self, run: RunContext) -> None:
        for p in list(self.plugins):
            self._guard(p, 0, lambda: self._declare_one(p, run))

    def _declare_one(self, p: Plugin, run: RunContext) -> None:
        specs = p.series(run)
        views = p.views()
        for s in specs:
            full = f"{p.name}/{s.name}"
            self.writer.declare_series(full, s.shape, s.dtype, s.unit, s.description)
            if s.columns:
                self.writer.write_array(f"columns/{full}", list(s.columns))
            self.declared[full] = s
        self.writer.write_plugin_info(p.name, p.title, p.description, type(p).settings,
                                      [v.to_dict() for v in views])

    def setup(self, run: RunContext) -> None:
        for p in list(self.plugins):
            self._guard(p, 0, lambda: p.setup(run), setup=True)

    def state_dicts(self, step: int) -> dict[str, dict[str, Any]]:
        """Every plugin's state for a checkpoint at ``step``; a plugin failing to give it is disabled."""
        states: dict[str, dict[str, Any]] = {}
        for p in list(self.plugins):
            self._guard(p, step, lambda: states.__setitem__(p.name, p.state_dict()))
        return states

    def close(self, step: int) -> None:
        for p in list(self.plugins):
            self._guard(p, step, p.close)

    def load_state_dicts(self, states: dict[str, dict[str, Any]], step: int) -> None:
        for p in list(self.plugins):
            if p.name in states:
                self._guard(p, step, lambda: p.load_state_dict(states[p.name]))

    def wants_graph(self, step: int) -> bool:
        return bool(self.plugins) and any(p.wants_step(step) and p.wants_graph(step) for p in self.plugins)

    def wants_step(self, step: int) -> bool:
        return bool(self.plugins) and any(p.wants_step(step) for p in self.plugins)

    @property
    def wants_eval(self) -> bool:
        return any(p.on == "eval" for p in self.plugins)

    def step(self, step: int, make_ctx: Callable[[Plugin], StepContext]) -> None:
        for p in list(self.plugins):
            if p.wants_step(step):
                self._guard(p, step, lambda: p.on_step(make_ctx(p)))

    def update(self, step: int, make_ctx: Callable[[Plugin], StepContext]) -> None:
        for p in list(self.plugins):
            if p.wants_step(step):
                self._guard(p, step, lambda: p.on_update(make_ctx(p)))

    def _skip(self, p: Plugin, step: int, missing: Unavailable, setup: bool) -> None:
        """Said once per plugin and missing input."""
        if (p.name, missing.name) in self._skipped:
            return
        self._skipped.add((p.name, missing.name))
        what = "is off" if setup else f"skips what needs it from step {step} on"
        self.writer.event(step, "plugin_skipped", f"plugin {p.name} {what}: it needs {missing.what}, which "
                          f"this training loop does not give ({missing.hint})")

    def evaluate(self, step: int, make_ctx: Callable[[Plugin], EvalContext]) -> None:
        for p in list(self.plugins):
            if p.on == "eval":
                self._guard(p, step, lambda: p.on_eval(make_ctx(p)))

    def end(self, run: RunContext, step: int) -> None:
        for p in list(self.plugins):
            self._guard(p, step, lambda: p.on_end(EndContext(run, step, self.logger(p, step),
                                                             lambda k, m: self.writer.event(step, k, m))))

    def logger(self, plugin: Plugin, step: int) -> Callable[[str, Any], None]:
        def log(name: str, value: Any) -> None:
            full = f"{plugin.name}/{name}"
            spec = self.declared.get(full)
            if spec is None:
                raise KeyError(f"series {full!r} was not declared by plugin {plugin.name!r}")
            if spec.dtype == "json":
                value = json.dumps(value)
            self.writer.append(full, step, value)
        return log

    def _guard(self, p: Plugin, step: int, fn: Callable[[], None], setup: bool = False) -> bool:
        try:
            fn()
            return True
        except Unavailable as missing:
            self._skip(p, step, missing, setup)
            if setup:
                self.plugins.remove(p)
            return False
        except Exception as exc:  # a plugin must never stop training
            traceback.print_exc(file=sys.stderr)
            self.plugins.remove(p)
            self.writer.event(step, "plugin_error",
                              f"plugin {p.name} disabled at step {step}: {type(exc).__name__}: {exc}")
            return False
