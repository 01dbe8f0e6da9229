"""The training loop: one place that trains, evaluates, calls plugins and writes the run file.

What plugins need (per-sample losses, gradients, logits, embeddings) is computed here once per step
or evaluation and handed to every plugin, so diagnostics never repeat a forward pass.
"""
from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoints import check_resume_length, load_checkpoint, save_checkpoint
from .config import RunConfig
from .data import BatchOrder, DataBundle, load_data
from .distributed import World
from .errors import ConfigError
from .models import build_model, check_output
from .plugin import Plugin, Probe, RunContext, instantiate
from .session import RunSession, all_finite, environment, static_arrays, step_metrics
from .store import check_target

PROGRESS_SECONDS = 0.25


class Control:
    """Requests to the loop (pause, resume, stop, checkpoint now), set from any thread or a signal
    handler and read once per step: plain attribute reads cost nothing on the hot path."""

    def __init__(self):
        self.stop_requested = False
        self.checkpoint_requested = False
        self._running = threading.Event()
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self.stop_requested = True
        self._running.set()

    def checkpoint(self) -> None:
        self.checkpoint_requested = True

    def wait_while_paused(self, seconds: float) -> None:
        self._running.wait(seconds)


def select_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device", spec, '"cpu" or "auto" (no CUDA device is available here)')
    return device


def configure_threads(requested: int) -> int:
    """Leave a core for the GUI: on 2 busy cores, 2 torch threads ran 4–5× slower than 1."""
    n = requested or max(1, (os.cpu_count() or 2) - 1)
    torch.set_num_threads(n)
    return n


def per_sample_loss_fn(name: str, n_classes: int) -> Callable:
    if name == "cross_entropy":
        return lambda out, y: F.cross_entropy(out, y, reduction="none")

    def mse(out, y):  # ½‖f(x) − onehot(y)‖², the square loss of edge-of-stability studies
        return 0.5 * (out - F.one_hot(y, n_classes).to(out.dtype)).pow(2).sum(dim=1)
    return mse


def mean_loss_fn(name: str, n_classes: int) -> Callable:
    """The batch's mean loss in one fused op where torch has one (cross-entropy)."""
    if name == "cross_entropy":
        return F.cross_entropy
    per_sample = per_sample_loss_fn(name, n_classes)
    return lambda out, y: per_sample(out, y).mean()


def lr_at(step: int, opt: dict, total: int) -> float:
    """Learning rate for 1-based ``step``: linear warm-up, then the schedule."""
    lr, warm = opt["lr"], opt["warmup_steps"]
    if warm and step <= warm:
        return lr * step / warm
    t = step - warm
    if opt["schedule"] == "cosine":
        return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t / max(1, total - warm))))
    if opt["schedule"] == "step":
        return lr * opt["gamma"] ** (t // opt["step_size"])
    return lr


def make_optimizer(params, opt: dict) -> torch.optim.Optimizer:
    if opt["name"] == "sgd":
        return torch.optim.SGD(params, lr=opt["lr"], momentum=opt["momentum"], nesterov=opt["nesterov"],
                               weight_decay=opt["weight_decay"])
    cls = torch.optim.Adam if opt["name"] == "adam" else torch.optim.AdamW
    return cls(params, lr=opt["lr"], betas=tuple(opt["betas"]), eps=opt["eps"],
               weight_decay=opt["weight_decay"])


class Trainer:
    """Trains one RunConfig into one run file."""

    def __init__(self, config: RunConfig, out_path: str | Path, control: Control | None = None,
                 on_status: Callable[[dict], None] | None = None, resume: bool = False,
                 overwrite: bool = False):
        self.cfg = config
        self.out = Path(out_path)
        self.control = control or Control()
        self.world = World()
        self.on_status = on_status if on_status and self.world.main else (lambda msg: None)
        self.resume = resume
        self.overwrite = overwrite

    # -- set-up ---------------------------------------------------------------------------------
    def _build(self) -> None:
        cfg = self.cfg
        run = cfg.sections["run"]
        self.threads = configure_threads(run["threads"])
        self.device = self.world.device(select_device(run["device"]))
        batch_size = cfg.sections["data"]["batch_size"]
        if batch_size % self.world.size:
            raise ConfigError("data.batch_size", batch_size, f"a multiple of the {self.world.size} processes "
                              "training together (each takes an equal share of every batch)")
        self.world.start(self.device)
        torch.manual_seed(run["seed"])
        data = cfg.sections["data"]
        self.data: DataBundle = load_data(data["source"], data["val_fraction"], run["seed"], cfg.base_dir, data)
        self.train = self.data.train.to(self.device)
        self.val = self.data.val.to(self.device)
        self.order = BatchOrder(len(self.train), batch_size, run["seed"])
        self.total = run["steps"] or run["epochs"] * self.order.per_epoch
        self.model = build_model(cfg.sections["model"], self.data.input_shape, self.data.n_classes,
                                 cfg.base_dir).to(self.device)
        check_output(self.model, self.train.x[:2], self.data.n_classes)  # before step 1, not at it
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # DDP syncs gradients in training steps; evaluation, plugins and checkpoints use the module
        self.net = torch.nn.parallel.DistributedDataParallel(self.model) if self.world.active else self.model
        self.optimizer = make_optimizer(self.params, cfg.sections["optimizer"])
        self.loss_fn = per_sample_loss_fn(cfg.sections["loss"]["name"], self.data.n_classes)
        self.mean_loss_fn = mean_loss_fn(cfg.sections["loss"]["name"], self.data.n_classes)
        self.log_every = run["log_every"]
        self.plugins: list[Plugin] = [instantiate(name, table) for name, table in cfg.plugins.items()
                                      if table.get("enabled", True) and self.world.main]
        self._probe_perm = np.random.default_rng(run["seed"] + 1).permutation(len(self.train))
        self._probes: dict[int, Probe] = {}
        self.ctx = RunContext(cfg, self.model, self.optimizer, self.device, self.data.n_classes,
                              self.data.input_shape, self.data.class_names, self.total, self.loss_fn,
                              self._probe, len(self.train), len(self.val), self.data.val.metadata, self.val.x)

    def _probe(self, n: int) -> Probe:
        """The first n samples of a fixed permutation of the training split: the same for the run."""
        n = min(n, len(self.train))
        if n not in self._probes:
            idx = torch.from_numpy(np.sort(self._probe_perm[:n])).to(self.device)
            self._probes[n] = Probe(self.train.x[idx], self.train.y[idx], self.train.ids[idx.cpu().numpy()])
        return self._probes[n]

    def _open_session(self, resume_step: int | None) -> RunSession:
        d = self.data
        static = static_arrays(d.class_names, {"train": d.train, "val": d.val}, d.val.x)
        env = environment(self.device, self.threads, d.source, len(self.train), len(self.val), d.n_classes,
                          d.input_shape, sum(p.numel() for p in self.params), self.total)
        return RunSession(self.cfg, self.out, self.ctx, self.plugins, self.val, env, static, resume_step,
                          main=self.world.main, overwrite=self.overwrite)

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> str:
        if self.world.main:  # refused at once, not after the set-up
            check_target(self.out, self.resume, self.overwrite)
        self._build()
        start = self._load_checkpoint() if self.resume else 0
        if self.resume:
            check_resume_length(self.out, start, self.total, self.cfg.sections["run"])
        self.session = w = self._open_session(start if self.resume else None)
        w.begin(start, self.resume, f"resumed at step {start}" if self.resume else f"training for {self.total} steps",
                self._plugin_states if self.resume else None)
        self._status("state", state="running")
        try:
            status = self._loop(start)
        except BaseException as exc:  # a second Ctrl-C arrives as KeyboardInterrupt: stopped, not failed
            status, message = (("stopped", "aborted by a second interrupt (resume from the last checkpoint)")
                               if isinstance(exc, KeyboardInterrupt) else ("failed", f"{type(exc).__name__}: {exc}"))
            w.event(getattr(self, "step", start), status, message)
            w.close(status)
            self._status("state", state=status, message=message)
            raise  # under torchrun the launcher then stops the other ranks
        self.world.stop()
        w.close(status)
        self._status("state", state=status)
        return status

    def _loop(self, start: int) -> str:
        w, control, run = self.session, self.control, self.cfg.sections["run"]
        eval_every, ckpt_every = run["eval_every"], run["checkpoint_every"]
        self.t0 = time.monotonic() - (w.writer.last_value("wall_time") or 0.0)  # a resumed run's clock goes on
        last_progress, last_step_t, done_in_window = 0.0, self.t0, 0
        step, loss_value = start, float("nan")
        self.model.train()
        for step in range(start + 1, self.total + 1):
            self.step = step
            if control.paused:
                self._pause(step - 1)
            if self.world.any(control.stop_requested, self.device):  # all ranks stop at the same step
                w.event(step - 1, "stopped", f"stopped by request after step {step - 1}")
                self._final_eval_and_checkpoint(step - 1, eval_every)
                w.end(step - 1)
                return "stopped"
            self._checkpoint_if_requested(step - 1)
            loss_value = self._train_step(step)
            if loss_value is None:
                return "diverged"
            if step % eval_every == 0 or step == self.total:
                w.evaluate(step)
            if ckpt_every and step % ckpt_every == 0 and step < self.total:  # the last step's comes below
                self._save_checkpoint(step)
            w.maybe_flush()
            now = time.monotonic()
            done_in_window += 1
            if now - last_progress >= PROGRESS_SECONDS:
                self._progress(step, loss_value, done_in_window / max(now - last_step_t, 1e-9))
                last_progress, last_step_t, done_in_window = now, now, 0
        self._progress(step, loss_value, (step - start) / max(time.monotonic() - self.t0, 1e-9))
        w.end(step)
        self._save_checkpoint(step)
        w.event(step, "finished", f"finished {step} steps")
        return "finished"

    def _train_step(self, step: int) -> float | None:
        batch = self.order.indices(step)
        idx = self.world.shard(batch)
        x, y = self.train.x[idx], self.train.y[idx]
        lr = lr_at(step, self.cfg.sections["optimizer"], self.total)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        w = self.session
        plugin_step = w.wants_step(step)
        out = self.net(x)  # in training mode: set before the loop, restored after evaluations and plugins
        # The fused mean is what is trained on, whether plugins run or not, so the trajectory of a run
        # does not depend on its analyses; per-sample losses only where a plugin reads them.
        loss = self.mean_loss_fn(out, y)
        # DDP averages the ranks' gradients: weighting each rank's mean by its share of the batch makes
        # that the batch mean where the shares differ (an epoch's short last batch); 1 in one process
        weight = len(idx) * self.world.size / len(batch)
        objective = loss if weight == 1 else loss * weight
        if w.wants_graph(step) and not self.world.active:  # DDP has no double backward
            grads = torch.autograd.grad(objective, self.params, create_graph=True)
            for p, g in zip(self.params, grads):
                p.grad = g.detach()
        else:
            self.optimizer.zero_grad(set_to_none=True)
            objective.backward()
            grads = None
        metrics = self._batch_metrics(step, objective, out, y, weight)
        loss_v = metrics[0]
        if not all_finite(*metrics):
            return self._diverged(step, metrics)
        if plugin_step:
            if grads is None:  # plain backward: the gradients are in .grad
                grads = tuple(p.grad for p in self.params)
            with torch.no_grad():
                losses = self.loss_fn(out.detach(), y)
            w.plugin_step(step, lr, x, y, self.train.ids[idx.numpy()], out, losses, loss, grads)
            if not self.model.training:  # train() walks every module: only if a plugin left eval mode
                self.model.train()
        self.optimizer.step()
        if plugin_step:
            w.plugin_update(step)
        w.log_step(step, loss_v, lr, time.monotonic() - self.t0, *metrics[1:])
        return loss_v

    def _batch_metrics(self, step: int, loss, out, y, weight: float) -> tuple[float, ...]:
        """(loss,) every step; (loss, accuracy, gradient norm) every ``log_every`` steps."""
        if step % self.log_every:
            return (self.world.mean(loss.detach()).item(),)
        return step_metrics(loss, self.params, out, y, weight, self.world.mean)

    def _diverged(self, step: int, metrics: tuple[float, ...]) -> None:
        what = self.session.diverged(step, metrics[0], metrics[-1] if len(metrics) > 1 else None)
        self._status("error", message=f"diverged at step {step} ({what} not finite)")
        return None

    def _pause(self, step: int) -> None:
        self.session.event(step, "paused", f"paused after step {step}")
        self.session.flush()
        self._status("state", state="paused")
        paused_at = time.monotonic()
        while self.control.paused:
            self.control.wait_while_paused(0.2)
            self._checkpoint_if_requested(step)
            self.session.flush()  # keep the heartbeat fresh so readers know the engine lives
        self.t0 += time.monotonic() - paused_at
        self.session.event(step, "resumed", f"resumed after step {step}")
        self._status("state", state="running")

    def _checkpoint_if_requested(self, step: int) -> None:
        if self.control.checkpoint_requested and step > 0:
            self.control.checkpoint_requested = False
            self._save_checkpoint(step)

    def _final_eval_and_checkpoint(self, step: int, eval_every: int) -> None:
        if step > 0 and step % eval_every != 0:
            self.session.evaluate(step)
        if step > 0:
            self._save_checkpoint(step)

    # -- checkpoints ----------------------------------------------------------------------------
    def _save_checkpoint(self, step: int) -> None:
        if not self.world.main:
            return
        self.session.flush()  # rows up to the checkpoint are on disk first: a resume leaves no gap
        state = {"step": step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "torch_rng": torch.get_rng_state(), "config": self.cfg.to_json(),
                 "plugins": self.session.plugin_states(step), "run_id": self.session.writer.run_id}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        path = save_checkpoint(self.out, step, state, self.cfg.sections["run"]["keep_checkpoints"])
        self.session.event(step, "checkpoint", str(path))

    def _load_checkpoint(self) -> int:
        state = load_checkpoint(self.out, self.device)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self._plugin_states = state.get("plugins", {})  # handed over once the plugins are set up
        return int(state["step"])

    def _progress(self, step: int, loss: float, rate: float) -> None:
        self._status("progress", step=step, total=self.total, loss=loss, steps_per_s=rate,
                     eta_s=(self.total - step) / rate if rate > 0 else None)

    def _status(self, kind: str, **fields) -> None:
        self.on_status({"kind": kind, **fields})


def run_training(config, out_path: str | Path, *, resume: bool = False, control: Control | None = None,
                 on_status: Callable[[dict], None] | None = None, overwrite: bool = False) -> str:
    """Train ``config`` (a RunConfig, a dict like a parsed TOML file, or a TOML path) into ``out_path``;
    returns the final status. An existing file at ``out_path`` is replaced only with ``overwrite``."""
    if isinstance(config, (str, Path)):
        config = RunConfig.from_toml(config)
    elif isinstance(config, dict):
        config = RunConfig.from_dict(config)
    return Trainer(config, out_path, control, on_status, resume, overwrite).run()

