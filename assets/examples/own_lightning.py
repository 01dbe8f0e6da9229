"""TrainDx in a PyTorch Lightning fit: one callback (pip install 'traindx[lightning]').

    .venv/bin/python assets/examples/own_lightning.py       # writes runs/own-lightning.h5
"""
import lightning.pytorch as L
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from traindx.lightning import TrainDxCallback


class Digits(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


torch.manual_seed(0)
digits = load_digits()
x = torch.tensor(digits.images / 16.0, dtype=torch.float32).flatten(1)
y = torch.tensor(digits.target)
train = DataLoader(TensorDataset(x[:1400], y[:1400]), batch_size=64, shuffle=True)
val = DataLoader(TensorDataset(x[1400:], y[1400:]), batch_size=256)

callback = TrainDxCallback(out="runs/own-lightning.h5", plugins={"sharpness": {"every": 50}, "calibration": {}},
                           overwrite=True)
trainer = L.Trainer(max_epochs=30, callbacks=[callback], accelerator="cpu", logger=False,
                    enable_checkpointing=False, enable_progress_bar=False)
trainer.fit(Digits(), train, val)
print("wrote runs/own-lightning.h5")
