"""What TrainDx adds around an optimizer step, whoever runs the loop: the run file, the plugins and
the evaluations.

The engine's ``Trainer`` and a user's own loop (``traindx.watch``) each drive one ``RunSession``, so
a run file means the same however it was trained: the same core series, the same plugin hooks with
the same contexts, the same evaluation (logits, per-sample losses and embeddings computed once for
every plugin).
"""
from __future__ import annotations

import contextlib
import json
import math
import platform
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import __version__
from .data import Split
from .distributed import NullWriter
from .models import EmbeddingTap
from .plugin import EvalContext, Plugin, PluginHost, RunContext, StepContext, View
from .spikes import SpikeDetector, SpikeRule
from .store import RunWriter

EVAL_CHUNK = 1024
PREVIEW_SAMPLES = 256

CORE_SERIES = (("train/loss", "", "mean training loss of the step's batch"),
               ("train/accuracy", "", "accuracy on the step's batch"),
               ("lr", "", "learning rate used at the step"),
               ("grad_norm", "", "L2 norm of the full gradient at the step"),
               ("wall_time", "s", "seconds since the run started (excluding pauses before resume)"),
               ("train/loss_spike", "× median", "a training-loss spike's size: its loss over the median of "
                "the steps before it (a row at each spike, written once the spike is over)"),
               ("val/loss", "", "mean loss on the validation split"),
               ("val/accuracy", "", "accuracy on the validation split"))

CORE_VIEWS = (
    View("line", "Loss", ("train/loss", "val/loss"), "Training loss per batch and validation loss at each evaluation; "
         "markers at loss spikes (click one to explain it).", {"spikes": "train/loss_spike"}),
    View("line", "Accuracy", ("train/accuracy", "val/accuracy"), "Share of correctly classified samples."),
    View("line", "Learning rate", ("lr",), "The learning rate the optimizer used at each step."),
    View("line", "Gradient norm", ("grad_norm",),
         "Size of the full gradient: spikes warn of instability before the loss shows it.", {"log_y": True}),
)


def step_metrics(loss: torch.Tensor, params: list[torch.Tensor], outputs=None, targets=None, share: float = 1.0,
                 mean: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[float, float | None, float]:
    """(loss, batch accuracy, gradient norm) fetched in one host transfer, and averaged over ranks in
    one collective (``mean``); the accuracy is None without outputs and targets. Each extra tensor op
    costs a few µs, which on small models is several percent of a step."""
    norms = torch._foreach_norm([p.grad for p in params if p.grad is not None])
    parts = [loss.detach()]
    if outputs is not None and targets is not None:
        parts.append((outputs.detach().argmax(1) == targets).sum().to(loss.dtype) * (share / len(targets)))
    stacked = torch.stack([*parts, *norms])
    values = (mean(stacked) if mean else stacked).tolist()
    k = len(parts)
    return values[0], values[1] if k == 2 else None, math.sqrt(sum(n * n for n in values[k:]))


def all_finite(*values: float | None) -> bool:
    return math.isfinite(sum(v for v in values if v is not None))


class RunSession:
    """One run file and the plugins writing to it, for a loop that trains ``ctx.model``.

    ``static`` holds the arrays stored once under /data (labels, ids, metadata, input previews); on a
    resume they are already in the file. Ranks other than 0 get a session that writes nothing.
    """

    def __init__(self, config, out: str | Path, ctx: RunContext, plugins: list[Plugin], val: Split | None,
                 environment: str, static: dict[str, Any], resume_step: int | None = None,
                 main: bool = True, overwrite: bool = False):
        self.ctx, self.val = ctx, val
        self.spikes: SpikeDetector | None = None
        self.last_step = resume_step or 0  # the latest step logged: where a closing plugin's event goes
        if not main:
            self.writer = NullWriter()
            self.host = PluginHost([], self.writer)
            return
        w = RunWriter(out, config.to_json(), resume_step=resume_step, overwrite=overwrite)
        try:
            w.set_attr("environment", environment)
            for name, unit, description in CORE_SERIES:
                w.declare_series(name, (), "float64", unit, description)
            w.write_plugin_info("core", "Training", "core training curves", (), [v.to_dict() for v in CORE_VIEWS])
            if resume_step is None:
                for path, values in static.items():
                    w.write_array(path, values)
            self.writer = w
            self.host = PluginHost(plugins, w)
            self.host.declare(ctx)
            w.start_swmr()
        except BaseException:  # a run that never started leaves no file
            w.abandon()
            raise
        spikes = config.sections["spikes"]
        if spikes["enabled"]:
            self.spikes = SpikeDetector(SpikeRule.from_config(spikes))
            if resume_step is not None:  # the steps before the resume are the first steps' baseline
                self.spikes.seed(w.tail("train/loss", spikes["window"]))
            self._recent: tuple[list[int], list[float]] = ([], [])

    def begin(self, step: int, resumed: bool, message: str, plugin_states: dict | None = None) -> None:
        """The first event, then the plugins' set-up (and, on a resume, their saved state)."""
        self.writer.event(step, "resumed" if resumed else "started", message)
        self.host.setup(self.ctx)
        if plugin_states:
            self.host.load_state_dicts(plugin_states, step)

    def event(self, step: int, kind: str, message: str) -> None:
        self.writer.event(step, kind, message)

    # -- a training step ------------------------------------------------------------------------
    def wants_step(self, step: int) -> bool:
        return self.host.wants_step(step)

    def wants_graph(self, step: int) -> bool:
        return self.host.wants_graph(step)

    def plugin_step(self, step: int, lr: float, inputs, targets, ids, outputs, per_sample_loss, loss,
                    grads) -> None:
        """The plugins' ``on_step`` hooks, after backward and before the optimizer step. Inputs a loop
        could not give (None) make a hook that reads them skip, with one event."""
        event = lambda kind, message: self.writer.event(step, kind, message)  # noqa: E731
        self._step_context = lambda p: StepContext(self.ctx, step, lr, inputs, targets, ids, outputs,  # noqa: E731
                                                   per_sample_loss, loss, grads, self.host.logger(p, step), event)
        with self._own_rng():
            self.host.step(step, self._step_context)

    def plugin_update(self, step: int) -> None:
        """The plugins' ``on_update`` hooks, right after the optimizer step of a step ``plugin_step``
        ran at (the engine's loop; a user's own loop steps its optimizer itself and has none)."""
        with self._own_rng():
            self.host.update(step, self._step_context)

    def _own_rng(self):
        """Plugins draw random numbers without moving the training's generators: turning an analysis on
        does not change the batches, dropout masks or anything else the run trains on."""
        cuda = [self.ctx.device] if self.ctx.device.type == "cuda" else []
        return torch.random.fork_rng(devices=cuda)

    def log_step(self, step: int, loss: float, lr: float, wall_time: float,
                 accuracy: float | None = None, grad_norm: float | None = None) -> None:
        w = self.writer
        self.last_step = step
        w.append("train/loss", step, loss)
        if self.spikes is not None:
            self._recent[0].append(step)
            self._recent[1].append(loss)
        w.append("lr", step, lr)
        w.append("wall_time", step, wall_time)
        if accuracy is not None:
            w.append("train/accuracy", step, accuracy)
        if grad_norm is not None:
            w.append("grad_norm", step, grad_norm)

    def diverged(self, step: int, loss: float, grad_norm: float | None) -> str:
        """The event for a step whose loss or gradient norm is not finite; returns which one."""
        what, value = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", grad_norm)
        self.writer.event(step, "diverged", f"{what} became {value} at step {step}; training stopped, "
                          "everything before it kept")
        return what

    # -- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, step: int) -> None:
        """Validation loss and accuracy, and the plugins' ``on_eval`` with the logits, per-sample
        losses and penultimate embeddings of one pass (in chunks, on the model's device)."""
        val = self.val
        if val is None or len(val) == 0 or isinstance(self.writer, NullWriter):
            return
        model, ctx = self.ctx.model, self.ctx
        was_training = model.training
        model.eval()
        want_plugins = self.host.wants_eval
        logits = []
        tap = EmbeddingTap(model) if want_plugins else None
        with tap or contextlib.nullcontext():
            for i in range(0, len(val), EVAL_CHUNK):
                logits.append(model(val.x[i:i + EVAL_CHUNK].to(ctx.device, non_blocking=True)))
        logits = torch.cat(logits)
        labels = val.y.to(logits.device)
        losses = ctx.per_sample_loss(logits, labels)
        val_loss, val_acc = torch.stack([losses.mean(), (logits.argmax(1) == labels).float().mean()]).tolist()
        self.writer.append("val/loss", step, val_loss)
        self.writer.append("val/accuracy", step, val_acc)
        if want_plugins:
            cpu = dict(logits=logits.float().cpu(), labels=labels.cpu(), losses=losses.float().cpu(),
                       emb=torch.cat(tap.captured).float().cpu())
            with self._own_rng():
                self.host.evaluate(step, lambda p: EvalContext(
                    ctx, step, cpu["logits"], cpu["labels"], cpu["losses"], cpu["emb"], val.ids, val.metadata,
                    self.host.logger(p, step), lambda k, m: self.writer.event(step, k, m)))
        model.train(was_training)

    # -- the end --------------------------------------------------------------------------------
    def end(self, step: int) -> None:
        """The end of training: a loss spike still going on is reported, then the plugins' ``on_end``."""
        self._find_spikes(last=True)
        self.host.end(self.ctx, step)

    def flush(self) -> None:
        self._find_spikes()
        self.writer.flush()

    def maybe_flush(self) -> None:
        if self.writer.flush_due():
            self.flush()

    def close(self, status: str) -> None:
        """The plugins' ``close`` (what they still have to log), then the run file, with ``status``."""
        self.host.close(self.last_step)
        self._find_spikes(last=True)
        self.writer.close(status)

    def _find_spikes(self, last: bool = False) -> None:
        """The loss spikes that ended since the last flush (one vectorised pass over their steps), each
        a row of train/loss_spike and a ``loss_spike`` event at its step; at the end, one still going."""
        if self.spikes is None:
            return
        steps, losses = self._recent
        self._recent = ([], [])
        found = self.spikes.update_many(steps, losses)
        if last and (ongoing := self.spikes.finish()) is not None:
            found.append(ongoing)
        for s in found:
            self.writer.append("train/loss_spike", s.step, s.ratio)
            self.writer.event(s.step, "loss_spike", f"training loss spiked at step {s.step}: {s.loss:.4g}, "
                              f"{s.ratio:.2f}× the median {s.median:.4g} of the {self.spikes.rule.window} "
                              "steps before")

    def plugin_states(self, step: int) -> dict[str, dict[str, Any]]:
        return self.host.state_dicts(step)


def environment(device: torch.device, threads: int, source: str, train_size: int, val_size: int,
                n_classes: int, input_shape, parameters: int, total_steps: int | None) -> str:
    """The run file's ``environment`` attribute (JSON): versions, machine and the data's shape."""
    return json.dumps({"traindx": __version__, "torch": torch.__version__, "python": platform.python_version(),
                       "platform": platform.platform(), "device": str(device), "threads": threads,
                       "data_source": source, "train_size": train_size, "val_size": val_size,
                       "n_classes": n_classes, "input_shape": list(input_shape), "parameters": parameters,
                       "total_steps": total_steps})


def static_arrays(class_names: list[str], splits: dict[str, Split | None],
                  preview: torch.Tensor | None) -> dict[str, Any]:
    """What a run file keeps under /data: class names, each split's ids, labels and metadata, and
    a small float16 preview of the validation inputs (thumbnails in views)."""
    out: dict[str, Any] = {"class_names": np.asarray(class_names)}
    for name, split in splits.items():
        if split is None:
            continue
        out[f"{name}/ids"] = split.ids
        out[f"{name}/labels"] = split.y.cpu().numpy()
        for key, column in split.metadata.items():
            out[f"{name}/meta/{key}"] = column
    if preview is not None:
        out["val/x_preview"] = preview[:PREVIEW_SAMPLES].cpu().numpy().astype(np.float16)
    return out

