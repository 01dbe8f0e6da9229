"""traindx.lightning: a Lightning fit writes a TrainDx run file, under both import names."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from conftest import ROOT
from engine import open_run
from engine.data import load_data

pytest.importorskip("lightning")
import lightning.pytorch as L  # noqa: E402
import pytorch_lightning as PL  # noqa: E402

from traindx.lightning import TrainDxCallback  # noqa: E402

PLUGINS = {"calibration": {}, "sharpness": {"every": 20, "batch_every": 0, "probe_size": 128, "budget": 0.0}}


def make_module(base):
    class Digits(base):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                           torch.nn.Linear(32, 10))
            self.losses = []

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self(x), y)
            self.losses.append(float(loss.detach()))
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
    return Digits()


def digits_loaders():
    data = load_data("digits", 0.2, 0, ROOT)
    train = TensorDataset(data.train.x, data.train.y)
    val = TensorDataset(data.val.x, data.val.y)
    return DataLoader(train, batch_size=64, shuffle=True), DataLoader(val, batch_size=256)


@pytest.mark.parametrize("pl", [L, PL], ids=["lightning.pytorch", "pytorch_lightning"])
def test_a_lightning_fit_writes_the_run_file(tmp_path, pl):
    torch.manual_seed(0)
    module = make_module(pl.LightningModule)
    train, val = digits_loaders()
    trainer = pl.Trainer(max_steps=60, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[TrainDxCallback(tmp_path / "l.h5", PLUGINS, eval_every=20)])
    trainer.fit(module, train, val)
    run = open_run(tmp_path / "l.h5")
    assert run.status == "finished"
    steps, loss = run.series("train/loss")
    assert list(steps) == list(range(1, 61))
    assert np.allclose(loss, module.losses, rtol=1e-6)  # the losses Lightning trained on, step by step
    assert list(run.series("val/accuracy")[0]) == [20, 40, 60]
    assert list(run.series("calibration/ece")[0]) == [20, 40, 60]
    assert list(run.series("sharpness/lambda_max")[0]) == [1, 20, 40, 60]
    assert list(run.series("train/accuracy")[0]) == []  # Lightning gives no outputs to the callback
    assert run.config["optimizer"]["momentum"] == 0.9 and run.meta["total_steps"] == 60
