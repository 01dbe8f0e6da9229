"""RunConfig: the typed, validated description of a run, read from TOML and written into the run file.

Every field is declared once (name, default, expected type, range or choices); the same declaration
validates TOML files, ``--set`` overrides and the GUI's form, so all three give the same messages.
"""
from __future__ import annotations

import copy
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import sources
from .errors import ConfigError, describe_expected, suggest
from .spikes import SpikeRule


@dataclass(frozen=True)
class Field:
    """One config key: its default, its type, and what values it accepts."""

    default: Any
    kind: type
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None
    optional: bool = False  # None allowed (e.g. steps when epochs is given)
    item_kind: type | None = None  # for lists

    def validate(self, key: str, value: Any) -> Any:
        if value is None and self.optional:
            return None
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not self.kind:
            raise ConfigError(key, value, self.expected())
        if not _finite(value):  # NaN passes every comparison with a bound, inf most
            raise ConfigError(key, value, self.expected() + ", not NaN or infinite")
        if self.kind is list:
            for item in value:
                ok = type(item) is self.item_kind or (self.item_kind is float and type(item) is int)
                if not ok or (self.min is not None and item < self.min):
                    raise ConfigError(key, value, self.expected())
            return [self.item_kind(v) for v in value]
        if self.choices is not None and value not in self.choices:
            if not (self.kind is str and _open_choice(value, self.choices)):
                raise ConfigError(key, value, self.expected() + suggest(value, self.choices))
        if self.kind in (int, float):
            if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
                raise ConfigError(key, value, self.expected())
        return value

    def expected(self) -> str:
        if self.kind is list:
            word = {int: "integers", float: "numbers", str: "strings"}[self.item_kind]
            bound = f" ≥ {self.min}" if self.min is not None else ""
            return f"a list of {word}{bound}"
        choices = _show_choices(self.choices) if self.choices else None
        text = describe_expected(self.kind, self.min, self.max, choices)
        return text + (" (or leave it out)" if self.optional else "")


def _finite(value: Any) -> bool:
    items = value if isinstance(value, list) else [value]
    return all(math.isfinite(v) for v in items if type(v) is float)


_PLACEHOLDERS = {"npz:": "npz:PATH", "python:": "python:FILE.py:NAME", "cuda:": "cuda:N"}


def _show_choices(choices: tuple) -> tuple:
    return tuple(_PLACEHOLDERS.get(c, c) for c in choices)


def _open_choice(value: str, choices: tuple) -> bool:
    """Choices ending in ':' are prefixes, e.g. 'npz:' admits 'npz:data/x.npz'."""
    return any(c.endswith(":") and value.startswith(c) and len(value) > len(c) for c in choices)


ACTIVATIONS = ("relu", "tanh", "gelu", "silu")

SECTIONS: dict[str, dict[str, Field]] = {
    "run": {
        "name": Field("run", str, "a name shown in the GUI and the report"),
        "seed": Field(0, int, "seed for initialisation, data split and batch order", min=0, max=2 ** 63 - 1),
        "steps": Field(None, int, "optimizer steps to train (or give epochs)", min=1, optional=True),
        "epochs": Field(None, int, "passes over the training split (or give steps)", min=1, optional=True),
        "eval_every": Field(50, int, "evaluate the validation split every N steps", min=1),
        "log_every": Field(10, int, "log batch accuracy and gradient norm every N steps (the loss: every step)",
                           min=1),
        "checkpoint_every": Field(0, int, "save a checkpoint every N steps (0: only at the end)", min=0),
        "keep_checkpoints": Field(3, int, "how many of the latest checkpoints to keep (0: all)", min=0),
        "device": Field("auto", str, "where to train", choices=("auto", "cpu", "cuda", "cuda:")),
        "threads": Field(0, int, "CPU threads for torch (0: leave one core for the GUI)", min=0),
    },
    "data": {
        "source": Field("digits", str, "the dataset (a built-in synthetic source takes its own options "
                        "under [data])", choices=("digits", *sources.names(), "npz:", "python:")),
        "batch_size": Field(64, int, "samples per optimizer step", min=1),
        "val_fraction": Field(0.2, float, "share of the data held out for validation", min=0.0, max=0.9),
        "n_classes": Field(None, int, "number of classes (default: from class_names, else the largest label "
                           "+ 1, refused if far more than the labels present)", min=2, max=10 ** 6,
                           optional=True),
    },
    "model": {
        "name": Field("mlp", str, "the architecture", choices=("mlp", "cnn", "resnet", "python:")),
    },
    "optimizer": {
        "name": Field("sgd", str, "the optimizer", choices=("sgd", "adam", "adamw")),
        "lr": Field(0.1, float, "peak learning rate", min=0.0),
        "momentum": Field(0.0, float, "heavy-ball momentum (sgd)", min=0.0, max=0.999999),
        "nesterov": Field(False, bool, "Nesterov momentum (sgd)"),
        "weight_decay": Field(0.0, float, "L2 penalty (decoupled for adamw)", min=0.0),
        "betas": Field([0.9, 0.999], list, "Adam's moment decay rates", item_kind=float, min=0.0),
        "eps": Field(1e-8, float, "Adam's denominator guard", min=0.0),
        "schedule": Field("constant", str, "learning-rate schedule", choices=("constant", "cosine", "step")),
        "warmup_steps": Field(0, int, "linear warm-up steps", min=0),
        "step_size": Field(1000, int, "steps between decays (schedule = step)", min=1),
        "gamma": Field(0.1, float, "decay factor (schedule = step)", min=0.0, max=1.0),
    },
    "loss": {
        "name": Field("cross_entropy", str, "training loss (mse: on one-hot targets)",
                      choices=("cross_entropy", "mse")),
    },
    "spikes": {  # engine/spikes.py: a step's loss against the running median of the steps before it
        "enabled": Field(True, bool, "watch the training loss for spikes (a loss_spike event and a finding each)"),
        "window": Field(SpikeRule.window, int, "steps before a step whose median its loss is compared with",
                        min=3),
        "threshold": Field(SpikeRule.threshold, float, "robust standard deviations of the window's log-loss "
                           "(1.4826·MAD) above its median that make a spike", min=0.1),
        "min_ratio": Field(SpikeRule.min_ratio, float, "and at least this many times the median", min=1.0),
        "min_gap": Field(SpikeRule.min_gap, int, "spiking steps closer than this are one spike", min=1),
    },
}

QUANTIZE_OPTIONS: dict[str, Field] = {
    "bits": Field(4, int, "bits of the quantised weights", min=2, max=8),
    "granularity": Field("channel", str, "one scale per output channel or per tensor",
                         choices=("channel", "tensor")),
    "scale": Field("lsq", str, "step size: learned (LSQ) or 2·mean|W| per row (OFQ's StatsQ)",
                   choices=("lsq", "stats")),
    "skip": Field(["first", "last"], list, "layers kept in full precision (module names, or first/last)",
                  item_kind=str),
}

MODEL_OPTIONS: dict[str, dict[str, Field]] = {
    "mlp": {
        "hidden": Field([64, 64], list, "hidden layer widths", item_kind=int, min=1),
        "activation": Field("relu", str, "nonlinearity", choices=ACTIVATIONS),
        "dropout": Field(0.0, float, "dropout before each hidden layer's output", min=0.0, max=0.95),
    },
    "cnn": {
        "channels": Field([16, 32], list, "channels of each conv block", item_kind=int, min=1),
        "hidden": Field(64, int, "width of the penultimate layer", min=1),
        "activation": Field("relu", str, "nonlinearity", choices=ACTIVATIONS),
    },
    "resnet": {
        "width": Field(16, int, "channels of the first stage (doubled per stage)", min=1),
        "blocks": Field([1, 1], list, "residual blocks per stage", item_kind=int, min=1),
    },
}


@dataclass
class RunConfig:
    """A validated run description. ``sections`` maps section → key → value; ``base_dir`` resolves
    relative paths (the directory of the TOML file it came from)."""

    sections: dict[str, dict[str, Any]]
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)
    base_dir: Path = field(default_factory=Path.cwd)

    def __getattr__(self, name: str):
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return _Section(sections[name])
        raise AttributeError(name)

    # -- constructors -----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict, base_dir: Path | str | None = None, check_files: bool = True) -> "RunConfig":
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        raw = copy.deepcopy(raw)
        known = [*SECTIONS, "plugins"]
        for name in raw:
            if name not in known:
                raise ConfigError(name, raw[name], "one of the sections " + ", ".join(known)
                                  + suggest(name, known), unknown_key=True)
        special = {"data": _validate_data, "model": _validate_model}  # tables with per-choice options
        sections = {name: special[name](raw.get(name, {})) if name in special
                    else _validate_section(name, raw.get(name, {}), fields)
                    for name, fields in SECTIONS.items()}
        run = sections["run"]
        if run["steps"] is not None and run["epochs"] is not None:
            raise ConfigError("run.epochs", run["epochs"], "either run.steps or run.epochs, not both")
        if run["steps"] is None and run["epochs"] is None:
            run["steps"] = 500
        if len(sections["optimizer"]["betas"]) != 2 or max(sections["optimizer"]["betas"]) >= 1:
            raise ConfigError("optimizer.betas", sections["optimizer"]["betas"],
                              "two numbers in [0, 1), e.g. [0.9, 0.999]")
        _check_combinations(sections)
        plugins_raw = raw.get("plugins", {})
        if not isinstance(plugins_raw, dict):
            raise ConfigError("plugins", plugins_raw, "a table of [plugins.NAME] tables")
        from .plugin import validate_plugin_table
        plugins = {}
        for name, table in plugins_raw.items():
            if not isinstance(table, dict):
                raise ConfigError(f"plugins.{name}", table, "a table, e.g. [plugins.NAME] enabled = true")
            plugins[name] = validate_plugin_table(name, table)
        cfg = cls(sections, plugins, base)
        if check_files:
            cfg.check_files()
        return cfg

    @classmethod
    def from_toml(cls, path: str | Path, overrides: list[str] = ()) -> "RunConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError("config", str(path), "an existing TOML file")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("config", str(path), f"valid TOML ({exc})") from None
        for item in overrides:
            apply_override(raw, item)
        return cls.from_dict(raw, base_dir=path.parent.resolve())

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        d = json.loads(text)
        return cls.from_dict(d["config"], base_dir=d.get("base_dir"), check_files=False)

    # -- output ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = copy.deepcopy(self.sections)
        if self.plugins:
            d["plugins"] = copy.deepcopy(self.plugins)
        return d

    def to_json(self) -> str:
        return json.dumps({"config": self.to_dict(), "base_dir": str(self.base_dir)})

    def to_toml(self) -> str:
        return dumps_toml(_drop_none(self.to_dict()))

    def resolve(self, relative: str) -> Path:
        p = Path(relative).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def check_files(self) -> None:
        """Referenced files must exist: the data file, the model's Python file."""
        for key, value in (("data.source", self.sections["data"]["source"]),
                           ("model.name", self.sections["model"]["name"])):
            kind, _, rest = value.partition(":")
            if kind in ("npz", "python"):
                file = rest.split(":")[0] if kind == "python" else rest
                if kind == "python" and rest.count(":") != 1:
                    raise ConfigError(key, value, '"python:FILE.py:NAME"')
                if not self.resolve(file).is_file():
                    raise ConfigError(key, value, f"an existing file ({self.resolve(file)} not found)")


def _check_combinations(sections: dict) -> None:
    """What one key alone cannot tell, refused here rather than by torch at run time."""
    opt = sections["optimizer"]
    if opt["name"] == "sgd" and opt["nesterov"] and opt["momentum"] == 0:
        raise ConfigError("optimizer.nesterov", True, "false, or optimizer.momentum > 0 (Nesterov momentum "
                          "needs momentum)")
    device = sections["run"]["device"]
    if device.startswith("cuda:") and not re.fullmatch(r"cuda:\d+", device):
        raise ConfigError("run.device", device, '"auto", "cpu", "cuda" or "cuda:N" with N a device number')


class _Section:
    """Attribute access to a section: ``cfg.optimizer.lr``."""

    def __init__(self, d: dict):
        self.__dict__.update(d)

    def __getitem__(self, key):
        return self.__dict__[key]


def _validate_section(name: str, table: Any, fields: dict[str, Field]) -> dict:
    if not isinstance(table, dict):
        raise ConfigError(name, table, f"a [{name}] table")
    for key in table:
        if key not in fields:
            raise ConfigError(f"{name}.{key}", table[key], "one of " + ", ".join(fields)
                              + suggest(key, fields), unknown_key=True)
    return {key: f.validate(f"{name}.{key}", table[key]) if key in table else copy.deepcopy(f.default)
            for key, f in fields.items()}


def _validate_data(table: Any) -> dict:
    """The fixed [data] keys, plus the options of a built-in source that declares some."""
    if not isinstance(table, dict):
        raise ConfigError("data", table, "a [data] table")
    fields = SECTIONS["data"]
    source = fields["source"].validate("data.source", table.get("source", fields["source"].default))
    extra = sources.options(source) if source in sources.names() else {}
    return _validate_section("data", table, {**fields, **extra})


def _validate_model(table: Any) -> dict:
    if not isinstance(table, dict):
        raise ConfigError("model", table, "a [model] table")
    out = _validate_section("model", {"name": table.get("name", "mlp")}, SECTIONS["model"])
    options = {k: v for k, v in table.items() if k not in ("name", "quantize")}
    name = out["name"]
    if name.startswith("python:"):
        out.update(options)  # a user's model takes its own keyword arguments
    else:
        out.update(_validate_section("model", options, MODEL_OPTIONS[name]))
    if "quantize" in table:  # [model.quantize]: quantisation-aware training of the weights
        out["quantize"] = _validate_section("model.quantize", table["quantize"], QUANTIZE_OPTIONS)
    return out


def parse_value(text: str) -> Any:
    """A value typed by a person, read as TOML ('0.05', 'true', '[8, 8]'); anything else stays a
    string, so validation can name what was expected instead of failing on syntax."""
    text = text.strip()
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_override(item: str) -> tuple[list[str], Any]:
    """'optimizer.lr=0.05' → (['optimizer', 'lr'], 0.05)."""
    if "=" not in item:
        raise ConfigError("--set", item, "KEY=VALUE, e.g. optimizer.lr=0.05")
    key, _, text = item.partition("=")
    return key.strip().split("."), parse_value(text)


def apply_override(raw: dict, item: str) -> None:
    path, value = parse_override(item)
    node = raw
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(".".join(path), value, "a key inside a table")
    node[path[-1]] = value


def _drop_none(d: dict) -> dict:
    return {k: _drop_none(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}


def dumps_toml(d: dict, prefix: str = "") -> str:
    """TOML for nested dicts of scalars and lists (all a RunConfig holds)."""
    lines, tables = [], []
    for key, value in d.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    out = "\n".join(lines)
    for key, value in tables:
        name = f"{prefix}{key}"
        scalars = any(not isinstance(v, dict) for v in value.values())
        body = dumps_toml(value, prefix=f"{name}.")
        head = f"[{name}]\n" if scalars or not value else ""
        out += ("\n\n" if out else "") + head + body
    return out


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")
