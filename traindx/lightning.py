"""TrainDx's analyses in a PyTorch Lightning run: ``Trainer(callbacks=[TrainDxCallback(out=...)])``.

The callback drives a ``traindx.watch`` session from Lightning's hooks: the loss from
``on_before_backward`` (summed over accumulated micro-batches, which Lightning has already divided
by their number), the step from ``on_before_optimizer_step`` (gradients present, weights not yet
updated: where the engine calls its plugins too). One class serves both import names,
``lightning.pytorch`` and ``pytorch_lightning``: it derives from the Callback of each installed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.watch import Watch, watch

_BASES = []
try:
    from lightning.pytorch.callbacks import Callback as _LightningCallback
    _BASES.append(_LightningCallback)
except ImportError:  # pragma: no cover - depends on what is installed
    pass
try:
    from pytorch_lightning.callbacks import Callback as _PLCallback
    if _PLCallback not in _BASES:
        _BASES.append(_PLCallback)
except ImportError:  # pragma: no cover - depends on what is installed
    pass
if not _BASES:  # pragma: no cover
    raise ImportError("traindx.lightning needs PyTorch Lightning: pip install 'traindx[lightning]'")


class TrainDxCallback(*_BASES):
    """Writes a TrainDx run file for a Lightning fit. ``train_data`` / ``val_data`` default to the
    datasets of the trainer's train and validation dataloaders; ``steps`` to the fit's
    ``estimated_stepping_batches``. Other options as ``traindx.watch``."""

    def __init__(self, out: str | Path, plugins: dict[str, dict] | None = None, *, train_data=None, val_data=None,
                 steps: int | None = None, **watch_options: Any):
        super().__init__()
        self.out, self.plugins, self.steps = Path(out), plugins or {}, steps
        self.train_data, self.val_data, self.options = train_data, val_data, watch_options
        self.dx: Watch | None = None
        self._loss = None
        self._batch = None

    def on_train_start(self, trainer, pl_module) -> None:
        steps = self.steps or int(trainer.estimated_stepping_batches)
        batch = getattr(trainer.train_dataloader, "batch_size", None)
        self.options.setdefault("batch_size", batch * trainer.accumulate_grad_batches if batch else None)
        self.dx = watch(pl_module, trainer.optimizers[0], self.out, plugins=self.plugins, steps=steps,
                        train_data=self.train_data or _dataset_of(trainer.train_dataloader),
                        val_data=self.val_data or _dataset_of(trainer.val_dataloaders), **self.options)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch = batch

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self._loss = loss.detach() if self._loss is None else self._loss + loss.detach()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.dx is None or self._loss is None:
            return
        inputs, targets = _inputs_targets(self._batch)
        loss, self._loss = self._loss, None
        self.dx.step(loss, inputs=inputs, targets=targets)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.dx is not None:
            self.dx.close("stopped" if trainer.interrupted else "finished")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.dx is not None:
            stopped = isinstance(exception, KeyboardInterrupt)
            self.dx.close("stopped" if stopped else "failed",
                          None if stopped else f"{type(exception).__name__}: {exception}")


def _dataset_of(loaders):
    """The dataset behind a dataloader (the first, where Lightning holds a list of them)."""
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[0] if loaders else None
    return getattr(loaders, "dataset", None)


def _inputs_targets(batch):
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return batch[0], batch[1]
    return None, None
