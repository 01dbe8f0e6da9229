"""TrainDx in a user's own training loop: ``traindx.watch(model, optimizer, out=...)``.

The loop calls ``dx.step(loss)`` once per optimizer step, after ``loss.backward()`` and before
``optimizer.step()``. That is where the engine calls its plugins too (gradients present, weights
not yet updated), so the run file is the same as one ``traindx run`` writes: core series, plugin
series, events, evaluations of ``val_data`` every ``eval_every`` steps, probe sets drawn from
``train_data``. A step's evaluation needs the weights *after* its update, so it runs when the next
``dx.step`` comes (or at ``close``), before anything else touches the model.
"""
from __future__ import annotations

import atexit
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .config import RunConfig
from .data import Split, stack_samples
from .errors import ConfigError
from .models import head_of
from .plugin import Plugin, Probe, RunContext, Unavailable, instantiate
from .session import RunSession, all_finite, environment, static_arrays, step_metrics
from .trainer import per_sample_loss_fn

OPTIMIZER_NAMES = {torch.optim.SGD: "sgd", torch.optim.Adam: "adam", torch.optim.AdamW: "adamw"}
LOSS_NAMES = ("cross_entropy", "mse")


class Diverged(RuntimeError):
    """The loss or the gradient norm of a step was not finite: the run file is closed as diverged,
    with everything before the step kept; the loop should stop."""


def watch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, out: str | Path, *,
          train_data=None, val_data=None, plugins: dict[str, dict] | None = None, steps: int | None = None,
          eval_every: int = 50, log_every: int = 10, loss: str | Callable = "cross_entropy",
          batch_size: int | None = None, class_names: list[str] | None = None,
          val_metadata: dict[str, Any] | None = None, name: str | None = None, seed: int = 0,
          overwrite: bool = False) -> "Watch":
    """Diagnostics for a loop you wrote; use as a context manager (or call ``close()``).

    ``train_data`` / ``val_data``: map-style datasets of ``(x, y)`` (or ``(x, y)`` tensor pairs);
    probes come from the first, evaluations from the second (held in memory, moved to the model's
    device a chunk at a time). ``plugins``: ``{name: settings}`` as in a config's ``[plugins.NAME]``.
    ``steps`` and ``batch_size``: the optimizer steps you plan and the samples in a batch, so plugins
    can plan (e.g. measure the last step, keep to a share of the training's work).
    ``loss``: "cross_entropy", "mse" or a function ``(outputs, targets) -> per-sample losses``.
    ``overwrite``: replace a run file already at ``out`` (and its checkpoints); refused otherwise.
    """
    return Watch(model, optimizer, out, train_data=train_data, val_data=val_data, plugins=plugins or {},
                 steps=steps, eval_every=eval_every, log_every=log_every, loss=loss, batch_size=batch_size,
                 class_names=class_names,
                 val_metadata=val_metadata or {}, name=name, seed=seed, overwrite=overwrite)


class Watch:
    """One run file for one training loop. ``step()`` per optimizer step; ``close()`` at the end."""

    def __init__(self, model, optimizer, out, *, train_data, val_data, plugins, steps, eval_every, log_every,
                 loss, batch_size, class_names, val_metadata, name, seed, overwrite=False):
        self.model = getattr(model, "module", model)  # a DDP wrapper's module: HVPs need the plain one
        self.optimizer = optimizer
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.device = self.params[0].device
        n_classes = len(class_names) if class_names else head_of(self.model).out_features
        self.class_names = [str(c) for c in class_names] if class_names else [str(i) for i in range(n_classes)]
        self.loss_fn = _loss_function(loss, n_classes)
        self.config = loop_config(name or Path(out).stem, seed, steps, batch_size, eval_every, log_every,
                                  self.device, optimizer, loss, plugins, type(self.model).__name__)
        self.eval_every, self.log_every = eval_every, log_every
        self.train_data = _dataset(train_data, "train_data")
        self.val = _split(_dataset(val_data, "val_data"), val_metadata)
        sample = self.val.x[:1] if self.val is not None else None
        if sample is None and self.train_data is not None:
            sample = stack_samples(self.train_data, [0])[0]
        input_shape = tuple(sample.shape[1:]) if sample is not None else ()
        train_size = len(self.train_data) if self.train_data is not None else 0
        val_size = len(self.val) if self.val is not None else 0
        self._probe_perm = np.random.default_rng(seed + 1).permutation(train_size)
        self._probes: dict[int, Probe] = {}
        ctx = RunContext(self.config, self.model, optimizer, self.device, n_classes, input_shape,
                         self.class_names, steps, self.loss_fn, self._probe, train_size, val_size,
                         self.val.metadata if self.val is not None else {},
                         self.val.x if self.val is not None else None)
        self.plugins: list[Plugin] = [instantiate(n, t) for n, t in self.config.plugins.items() if t["enabled"]]
        env = environment(self.device, torch.get_num_threads(), "own loop", train_size, val_size, n_classes,
                          input_shape, sum(p.numel() for p in self.params), steps)
        static = static_arrays(self.class_names, {"val": self.val}, self.val.x if self.val is not None else None)
        self.session = RunSession(self.config, out, ctx, self.plugins, self.val, env, static, main=_is_main(),
                                  overwrite=overwrite)
        self.session.begin(0, False, "training in the user's own loop"
                           + (f" for {steps} steps" if steps else ""))
        if self.val is None:
            for p in self.plugins:
                if p.on == "eval":
                    self.session.event(0, "plugin_skipped", f"plugin {p.name} is off: it runs at evaluations, "
                                       "and this loop gives no validation data (watch(..., val_data=...))")
        self.step_no = self._evaluated = 0
        self.closed = False
        self._updates_due = False
        self._after_step = optimizer.register_step_post_hook(self._plugins_update)
        self.t0 = time.monotonic()
        atexit.register(self._flush_at_exit)

    # -- the loop's calls -------------------------------------------------------------------------
    def step(self, loss: torch.Tensor, *, per_sample: torch.Tensor | None = None, ids=None, inputs=None,
             targets=None, outputs=None) -> None:
        """Call after ``loss.backward()`` and before ``optimizer.step()``. Optional: the batch's
        per-sample losses, sample ids (positions in ``train_data``), inputs, targets and outputs, for
        plugins that read them (accuracy is logged when outputs and targets are given)."""
        if self.closed:
            raise RuntimeError("traindx: step() after close(): this run file is closed")
        self._evaluate_previous()
        step = self.step_no = self.step_no + 1
        s = self.session
        lr = float(self.optimizer.param_groups[0]["lr"])
        if step % self.log_every:
            loss_v, accuracy, grad_norm = loss.detach().item(), None, None
        else:
            loss_v, accuracy, grad_norm = step_metrics(loss, self.params, outputs, targets)
        if not all_finite(loss_v, grad_norm):
            what = s.diverged(step, loss_v, grad_norm)
            self.close("diverged")
            raise Diverged(f"{what} not finite at step {step}; the run file keeps every step before it")
        if s.wants_step(step):
            if per_sample is None and outputs is not None and targets is not None:
                with torch.no_grad():
                    per_sample = self.loss_fn(outputs.detach(), targets)
            was_training = self.model.training
            grads = tuple(p.grad for p in self.params)
            s.plugin_step(step, lr, inputs, targets, None if ids is None else np.asarray(ids, dtype=np.int64),
                          outputs, None if per_sample is None else per_sample.detach(), loss, grads)
            self.model.train(was_training)
            self._updates_due = True
        s.log_step(step, loss_v, lr, time.monotonic() - self.t0, accuracy, grad_norm)
        s.maybe_flush()

    def close(self, status: str = "finished", message: str | None = None) -> None:
        """End the run: the last step's evaluation (finished or stopped runs), the plugins' ``on_end``,
        a final event and the status."""
        if self.closed:
            return
        self.closed = True
        self._after_step.remove()
        atexit.unregister(self._flush_at_exit)
        s, last = self.session, self.step_no
        if status in ("finished", "stopped") and last and self._evaluated != last:
            s.evaluate(last)
        if status != "diverged":
            s.end(last)
            s.event(last, status, message or (f"finished {last} steps" if status == "finished"
                                              else f"{status} after step {last}"))
        s.close(status)

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close("finished")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close("stopped", f"stopped by Ctrl-C after step {self.step_no}")
        elif not issubclass(exc_type, Diverged):
            self.close("failed", f"{exc_type.__name__}: {exc}")
        return False

    # -- inside ---------------------------------------------------------------------------------
    def _evaluate_previous(self) -> None:
        """The previous step's evaluation, if one was due: its update is done by now."""
        last = self.step_no
        if last and last % self.eval_every == 0 and self._evaluated != last:
            self._evaluated = last
            self.session.evaluate(last)

    def _plugins_update(self, optimizer, args, kwargs) -> None:
        """After the loop's ``optimizer.step()`` that followed a ``dx.step`` whose plugins ran: their
        ``on_update`` hooks, as in the engine (e.g. oscillation freezing holds its weights there)."""
        if self._updates_due:
            self._updates_due = False
            self.session.plugin_update(self.step_no)

    def _probe(self, n: int) -> Probe:
        """The first n samples of a fixed permutation of ``train_data``, as in the engine."""
        if self.train_data is None:
            raise Unavailable("train_data", "training samples for a probe set", "watch(..., train_data=...)")
        n = min(n, len(self.train_data))
        if n not in self._probes:
            positions = np.sort(self._probe_perm[:n])
            x, y = stack_samples(self.train_data, positions)
            self._probes[n] = Probe(x.to(self.device), y.to(self.device), positions.astype(np.int64))
        return self._probes[n]

    def _flush_at_exit(self) -> None:
        """A script that dies without closing keeps every row it logged; its file reads as crashed."""
        if not self.closed:
            self.session.flush()


def loop_config(name: str, seed: int, steps: int | None, batch_size: int | None, eval_every: int, log_every: int,
                device: torch.device, optimizer: torch.optim.Optimizer, loss, plugins: dict,
                model_name: str) -> RunConfig:
    """The run file's config for a loop TrainDx did not build: what can be known of it, validated
    like any config (a misspelt plugin setting is named), with the data and the model marked as the
    user's own. Such a config is a record: ``traindx run`` cannot rebuild the run from it."""
    known_optimizer = type(optimizer) in OPTIMIZER_NAMES
    raw = {"run": {"name": name, "seed": seed, "eval_every": eval_every, "log_every": log_every},
           "optimizer": optimizer_section(optimizer) if known_optimizer else {},
           "loss": {"name": loss} if isinstance(loss, str) else {},
           "plugins": plugins}
    cfg = RunConfig.from_dict(raw, check_files=False)
    s = cfg.sections
    s["run"].update(steps=steps, device=str(device))
    s["data"] = {"source": "own loop", "batch_size": batch_size}
    s["model"] = {"name": model_name}
    if not known_optimizer:
        s["optimizer"] = {"name": type(optimizer).__name__, "lr": float(optimizer.defaults.get("lr", float("nan")))}
    if not isinstance(loss, str):
        s["loss"] = {"name": getattr(loss, "__name__", "custom")}
    return cfg


def optimizer_section(optimizer: torch.optim.Optimizer) -> dict:
    """The [optimizer] keys of an SGD, Adam or AdamW, from its defaults."""
    d = optimizer.defaults
    name = OPTIMIZER_NAMES[type(optimizer)]
    out = {"name": name, "lr": float(d["lr"]), "weight_decay": float(d.get("weight_decay", 0.0))}
    if name == "sgd":
        out.update(momentum=float(d.get("momentum", 0.0)), nesterov=bool(d.get("nesterov", False)))
    else:
        out.update(betas=[float(b) for b in d["betas"]], eps=float(d["eps"]))
    return out


def _loss_function(loss, n_classes: int) -> Callable:
    if callable(loss):
        return loss
    if loss not in LOSS_NAMES:
        raise ConfigError("loss", loss, f"one of {', '.join(map(repr, LOSS_NAMES))}, or a function "
                          "(outputs, targets) -> per-sample losses")
    return per_sample_loss_fn(loss, n_classes)


def _dataset(data, what: str):
    """A map-style dataset of (x, y) samples; a pair of tensors (x, y) is made one."""
    if data is None:
        return None
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        return torch.utils.data.TensorDataset(*data)
    if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise ConfigError(what, type(data).__name__, "a map-style dataset of (x, y) samples, or a pair of "
                          "tensors (x, y)")
    return data


def _split(dataset, metadata: dict[str, Any]) -> Split | None:
    if dataset is None:
        return None
    x, y = stack_samples(dataset, range(len(dataset)))
    meta = {k: np.asarray(v) for k, v in metadata.items()}
    for k, column in meta.items():
        if len(column) != len(y):
            raise ConfigError(f"val_metadata[{k!r}]", f"{len(column)} rows", f"{len(y)} rows, one per val sample")
    return Split(x, y, np.arange(len(y), dtype=np.int64), meta)


def _is_main() -> bool:
    """Rank 0 alone writes (and evaluates) under torch.distributed, as in the engine."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
